"""NaviLinkClient against FakeNaviLink over real loopback HTTP: renewal, caching, faults and what reaches the logs.

Time is a FakeClock shared by the client and the server, so expiry is exercised by advancing it, never by sleeping.
Every network wait is bounded by the client's request timeout (short here) and the module timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.navilink.errors import CredentialsRejected, NaviLinkUnavailable
from nwp500d.sim.rest import FakeNaviLink
from tests.fakes import FakeClock

pytestmark = pytest.mark.timeout(30)

REQUEST_TIMEOUT = 5.0
SHORT_TIMEOUT = 1.5  # only where the "timeout" fault is tested: the held request gives up; the recovery call on the
# same client (which cannot change its timeout) keeps 1.5 s of margin against a scheduling stall


def timeout_for(mode: str) -> float:
    """The client's request timeout for a fault case: short only when the fault is the server not answering, so a
    scheduling stall cannot turn an HTTP 503 or a successful recovery into a timeout. (In the "timeout" case the
    same client's recovery then runs under the short timeout too: it must, to prove that client recovers.)"""
    return SHORT_TIMEOUT if mode == "timeout" else REQUEST_TIMEOUT


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[FakeNaviLink]:
    async with FakeNaviLink(clock=clock, hold_secs=10.0) as server:
        yield server


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "navilink-tokens.json"


def make_client(sim: FakeNaviLink, clock: FakeClock, cache_path: Path | None, **options: Any) -> NaviLinkClient:
    options.setdefault("request_timeout_secs", REQUEST_TIMEOUT)
    options.setdefault("refresh_margin_secs", 60.0)
    email = options.pop("email", sim.email)
    password = options.pop("password", sim.password)
    return NaviLinkClient(sim.base_url, email, password, cache_path=cache_path, clock=clock, **options)


# Small synchronous file helpers: the checks are instant, and keeping them out of the async tests keeps the
# "no blocking IO in a coroutine" lint meaningful for the code under test.


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_text(path: Path) -> str:
    return path.read_text()


def exists(path: Path) -> bool:
    return path.exists()


def directory_listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def damage_cache(path: Path, damage: str) -> None:
    document = json.loads(path.read_text())
    if damage == "garbage":
        path.write_bytes(b"{\x00 not json")
    elif damage == "not_an_object":
        path.write_text("[1, 2, 3]")
    elif damage == "bad_token_field":
        document["tokens"]["issued_at"] = "last tuesday"
        path.write_text(json.dumps(document))
    else:
        document["format"] = 999
        path.write_text(json.dumps(document))


@pytest.fixture
async def client(sim: FakeNaviLink, clock: FakeClock, cache_path: Path) -> AsyncIterator[NaviLinkClient]:
    async with make_client(sim, clock, cache_path) as navilink:
        yield navilink


async def test_sign_in_then_list_devices(sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock) -> None:
    assert (client.tokens, client.aws_credentials(), client.credentials_age_seconds()) == (None, None, None)
    tokens = await client.ensure_valid()
    assert (sim.sign_ins, sim.refreshes) == (1, 0)
    assert tokens.user_seq == sim.user_seq
    assert client.tokens is tokens
    credentials = client.aws_credentials()
    assert credentials is not None
    assert credentials.access_key_id.startswith("ASIA") and len(credentials.access_key_id) == 20
    # The MQTT signer reads from a CRT thread: the same immutable object, without touching the loop.
    assert await asyncio.to_thread(client.aws_credentials) is credentials
    clock.advance(90)
    assert client.credentials_age_seconds() == 90.0
    devices = await client.list_devices()  # the sim accepts only the raw token in "authorization"
    assert [d.mac_address for d in devices] == ["02005e0f5001"]
    assert (devices[0].device_type, devices[0].online) == (52, True)
    assert (sim.sign_ins, sim.refreshes, sim.device_lists) == (1, 0, 1)


async def test_jwt_refreshed_before_expiry_keeps_aws_credentials(
    sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock
) -> None:
    sim.jwt_lifetime_secs = 600
    first = await client.ensure_valid()
    credentials = client.aws_credentials()
    clock.advance(539)  # margin 60 s: still good
    assert await client.ensure_valid() is first
    clock.advance(1)
    second = await client.ensure_valid()
    assert (sim.sign_ins, sim.refreshes) == (1, 1)
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token  # rotated
    assert client.aws_credentials() is credentials
    assert second.aws_issued_at == first.aws_issued_at
    assert client.credentials_age_seconds() == 540.0
    clock.advance(540)
    await client.ensure_valid()  # the sim only accepts the newest refresh token: this proves it was kept
    assert (sim.sign_ins, sim.refreshes) == (1, 2)
    assert await client.list_devices()


async def test_refresh_answer_without_refresh_token(
    sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock
) -> None:
    sim.jwt_lifetime_secs = 600
    sim.rotate_refresh_tokens = False
    first = await client.ensure_valid()
    for _ in range(2):
        clock.advance(550)
        latest = await client.ensure_valid()
        assert (latest.refresh_token, latest.id_token) == (first.refresh_token, first.id_token)
        assert latest.access_token != first.access_token
    assert (sim.sign_ins, sim.refreshes) == (1, 2)


async def test_rejected_refresh_falls_back_to_sign_in(
    sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock
) -> None:
    sim.jwt_lifetime_secs = 600
    first = await client.ensure_valid()
    sim.revoke_refresh_token()
    clock.advance(550)
    second = await client.ensure_valid()
    assert (sim.sign_ins, sim.refreshes) == (2, 1)
    assert second.access_key_id != first.access_key_id
    assert client.credentials_age_seconds() == 0.0


async def test_aws_expiry_forces_full_sign_in(sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock) -> None:
    sim.aws_lifetime_secs = 600
    first = await client.ensure_valid()
    old_credentials = client.aws_credentials()
    clock.advance(539)
    assert await client.ensure_valid() is first
    clock.advance(1)
    await client.ensure_valid()
    assert (sim.sign_ins, sim.refreshes) == (2, 0)
    new_credentials = client.aws_credentials()
    assert old_credentials is not None and new_credentials is not None
    assert new_credentials.access_key_id != old_credentials.access_key_id
    assert client.credentials_age_seconds() == 0.0


async def test_aws_credentials_without_lifetime_never_force_sign_in(
    sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock
) -> None:
    sim.aws_lifetime_secs = None
    await client.ensure_valid()
    clock.advance(3550)
    await client.ensure_valid()
    assert (sim.sign_ins, sim.refreshes) == (1, 1)
    credentials = client.aws_credentials()
    assert credentials is not None and credentials.expires_at is None


async def test_concurrent_callers_share_one_renewal(
    sim: FakeNaviLink, client: NaviLinkClient, clock: FakeClock
) -> None:
    sim.jwt_lifetime_secs = 600
    results = await asyncio.gather(*(client.ensure_valid() for _ in range(10)))
    assert sim.sign_ins == 1
    assert all(result is results[0] for result in results)

    clock.advance(550)
    results = await asyncio.gather(*(client.ensure_valid() for _ in range(10)))
    assert (sim.sign_ins, sim.refreshes) == (1, 1)
    assert all(result is results[0] for result in results)

    sim.revoke_access_tokens()  # ten device lists hit a 401 together: still one refresh
    lists = await asyncio.gather(*(client.list_devices() for _ in range(10)))
    assert all(len(devices) == 1 for devices in lists)
    assert (sim.sign_ins, sim.refreshes) == (1, 2)

    results = await asyncio.gather(*(client.sign_in() for _ in range(10)))
    assert sim.sign_ins == 2
    assert all(result is results[0] for result in results)


async def test_callers_queued_behind_a_failing_attempt_share_its_error(
    sim: FakeNaviLink, client: NaviLinkClient
) -> None:
    sim.mode = "http_503"
    outcomes = await asyncio.gather(*(client.ensure_valid() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(o, NaviLinkUnavailable) and o.reason == "http_503" for o in outcomes)
    assert sim.sign_ins == 1
    sim.mode = "ok"
    await client.ensure_valid()  # the next call, once the supervisor retries, makes its own attempt
    assert sim.sign_ins == 2
    sim.reject_password(True)
    outcomes = await asyncio.gather(*(client.sign_in() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, CredentialsRejected) for o in outcomes)
    assert sim.sign_ins == 3


async def test_cache_reused_by_a_new_instance(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_client(sim, clock, cache_path) as first:
        tokens = await first.ensure_valid()
    assert file_mode(cache_path) == 0o600
    text = read_text(cache_path)
    assert sim.email not in text and sim.password not in text
    assert directory_listing(cache_path.parent) == [cache_path.name]  # no temporary files left

    clock.advance(600)
    async with make_client(sim, clock, cache_path) as second:
        assert second.tokens == tokens  # loaded at construction, before any network call
        assert await second.ensure_valid() == tokens
        assert await second.list_devices()
        assert second.credentials_age_seconds() == 600.0
    assert (sim.sign_ins, sim.refreshes, sim.device_lists) == (1, 0, 1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_cache_of_another_account_is_ignored(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_client(sim, clock, cache_path) as first:
        await first.ensure_valid()
    caplog.set_level(logging.DEBUG)
    other = make_client(sim, clock, cache_path, email="someone.else@example.org")
    try:
        assert other.tokens is None
    finally:
        await other.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "another account" in warnings[0].getMessage()
    assert "someone.else" not in caplog.text and sim.email not in caplog.text


@pytest.mark.parametrize("damage", ["garbage", "not_an_object", "bad_token_field", "wrong_format"])
async def test_corrupt_cache_is_ignored_once_and_replaced(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    async with make_client(sim, clock, cache_path) as first:
        await first.ensure_valid()
    damage_cache(cache_path, damage)
    caplog.clear()
    async with make_client(sim, clock, cache_path) as second:
        assert second.tokens is None
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "ignoring the token cache" in warnings[0].getMessage()
        await second.ensure_valid()
    assert sim.sign_ins == 2
    assert json.loads(read_text(cache_path))["tokens"]["access_token"]
    assert file_mode(cache_path) == 0o600


async def test_unwritable_cache_does_not_stop_sign_in(
    sim: FakeNaviLink, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    async with make_client(sim, clock, blocker / "tokens.json") as navilink:
        await navilink.ensure_valid()
    assert any("cannot write the token cache" in r.getMessage() for r in caplog.records)


async def test_without_cache_path(sim: FakeNaviLink, clock: FakeClock) -> None:
    async with make_client(sim, clock, None) as navilink:
        await navilink.ensure_valid()
    assert sim.sign_ins == 1


FAULTS = [
    ("http_500", "http_500"),
    ("http_503", "http_503"),
    ("malformed_json", "malformed_json"),
    ("malformed_envelope", "malformed_response"),
    ("timeout", "timeout"),
]


@pytest.mark.parametrize(("mode", "reason"), FAULTS)
async def test_fault_at_sign_in_then_recovery(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, mode: str, reason: str
) -> None:
    async with make_client(sim, clock, cache_path, request_timeout_secs=timeout_for(mode)) as navilink:
        sim.mode = mode
        with pytest.raises(NaviLinkUnavailable) as caught:
            await navilink.ensure_valid()
        assert caught.value.reason == reason
        assert caught.value.retriable
        assert navilink.tokens is None
        assert not exists(cache_path)
        sim.mode = "ok"
        await navilink.ensure_valid()
        assert navilink.tokens is not None


@pytest.mark.parametrize(("mode", "reason"), FAULTS)
async def test_fault_at_refresh_and_device_list_then_recovery(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, mode: str, reason: str
) -> None:
    async with make_client(sim, clock, cache_path, request_timeout_secs=timeout_for(mode)) as navilink:
        sim.jwt_lifetime_secs = 600
        tokens = await navilink.ensure_valid()
        sim.mode = mode
        with pytest.raises(NaviLinkUnavailable) as caught:
            await navilink.list_devices()
        assert caught.value.reason == reason
        clock.advance(550)
        with pytest.raises(NaviLinkUnavailable) as caught:
            await navilink.ensure_valid()  # a failed refresh is not a rejected one: no sign-in attempt
        assert caught.value.reason == reason
        assert navilink.tokens is tokens  # what we had is kept for the retry
        sign_ins = sim.sign_ins
        sim.mode = "ok"
        assert await navilink.list_devices()
        assert (sim.sign_ins, sim.refreshes) == (sign_ins, 2)


async def test_connection_refused(clock: FakeClock, cache_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/api/v2.1"
    async with NaviLinkClient(base_url, "a@example.com", "pw", cache_path=cache_path, clock=clock) as navilink:
        with pytest.raises(NaviLinkUnavailable) as caught:
            await navilink.sign_in()
    assert caught.value.reason == "connection_error"


async def test_unresolvable_host(clock: FakeClock) -> None:
    base_url = "http://navilink.nwp500d-test.invalid/api/v2.1"  # .invalid never resolves (RFC 6761)
    async with NaviLinkClient(base_url, "a@example.com", "pw", cache_path=None, clock=clock,
                              request_timeout_secs=REQUEST_TIMEOUT) as navilink:
        with pytest.raises(NaviLinkUnavailable) as caught:
            await navilink.sign_in()
    if caught.value.reason == "timeout":
        pytest.skip("the host's resolver did not answer in time, so the DNS failure could not be observed")
    assert caught.value.reason == "dns_error"


async def test_rejected_password_is_fatal_and_says_so_safely(
    sim: FakeNaviLink, client: NaviLinkClient, cache_path: Path
) -> None:
    sim.reject_password(True)
    with pytest.raises(CredentialsRejected) as caught:
        await client.ensure_valid()
    message = str(caught.value)
    assert "<email redacted>" in message
    assert sim.password not in message and sim.email not in message and "owner" not in message
    assert "\n" not in message
    assert not caught.value.retriable
    assert not exists(cache_path)
    sim.reject_password(False)
    await client.ensure_valid()


async def test_wrong_password_and_reject_mode(sim: FakeNaviLink, clock: FakeClock, cache_path: Path) -> None:
    async with make_client(sim, clock, cache_path, password="not-the-password") as navilink:
        with pytest.raises(CredentialsRejected) as caught:
            await navilink.sign_in()
        assert "not-the-password" not in str(caught.value)
    sim.mode = "reject"  # HTTP 401 with a 401 envelope: an account the cloud refuses outright
    async with make_client(sim, clock, cache_path) as navilink:
        with pytest.raises(CredentialsRejected):
            await navilink.ensure_valid()


async def test_device_list_401_refreshes_once_and_retries(sim: FakeNaviLink, client: NaviLinkClient) -> None:
    await client.ensure_valid()
    sim.revoke_access_tokens()
    devices = await client.list_devices()
    assert len(devices) == 1
    assert (sim.sign_ins, sim.refreshes, sim.device_lists) == (1, 1, 2)


async def test_device_list_401_after_refresh_gives_up_then_signs_in(
    sim: FakeNaviLink, client: NaviLinkClient
) -> None:
    await client.ensure_valid()
    sim.refuse_access_tokens = True
    with pytest.raises(NaviLinkUnavailable) as caught:
        await client.list_devices()
    assert caught.value.reason == "unauthorized"
    assert (sim.sign_ins, sim.refreshes, sim.device_lists) == (1, 1, 2)
    sim.refuse_access_tokens = False
    assert await client.list_devices()
    assert (sim.sign_ins, sim.refreshes, sim.device_lists) == (2, 1, 3)


async def test_injected_session_is_used_and_left_open(sim: FakeNaviLink, clock: FakeClock) -> None:
    async with aiohttp.ClientSession() as session:
        async with make_client(sim, clock, None, session=session) as navilink:
            await navilink.ensure_valid()
        assert not session.closed


async def test_no_secrets_in_logs_or_errors(
    sim: FakeNaviLink, clock: FakeClock, cache_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    sim.jwt_lifetime_secs = 600
    # One client with the normal timeout does everything but the "timeout" fault, which a second, impatient one meets.
    async with make_client(sim, clock, cache_path) as navilink, \
            make_client(sim, clock, cache_path, request_timeout_secs=SHORT_TIMEOUT) as impatient:
        await navilink.ensure_valid()
        clock.advance(550)
        await navilink.ensure_valid()
        sim.revoke_access_tokens()
        await navilink.list_devices()
        sim.revoke_refresh_token()
        clock.advance(550)
        await navilink.ensure_valid()
        for mode in ("http_503", "malformed_json", "timeout", "reject"):
            sim.mode = mode
            with pytest.raises((NaviLinkUnavailable, CredentialsRejected)) as caught:
                await (impatient if mode == "timeout" else navilink).sign_in()
            errors.append(f"{caught.value!s} {caught.value!r}")
        sim.mode = "ok"
        errors.append(repr(navilink) + repr(navilink.tokens) + repr(navilink.aws_credentials()))
    async with make_client(sim, clock, cache_path, email="other@example.net", password="other-password"):
        pass
    text = caplog.text + "\n".join(errors)
    assert "signed in to NaviLink" in caplog.text and "refreshed NaviLink tokens" in caplog.text
    assert "valid for" in caplog.text
    secrets = [*sim.issued_secrets, sim.password, sim.email, "other@example.net", "other-password"]
    assert len(secrets) > 10
    leaked = [secret[:12] for secret in secrets if secret in text]
    assert not leaked
