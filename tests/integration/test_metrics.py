"""The Prometheus exporter over real HTTP on loopback, read back with the Prometheus client's own parser.

Parsing with ``text_string_to_metric_families`` rather than matching lines means a test passes only if what is
served is valid exposition text, which is what a real Prometheus needs.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nwp500d.errors import ErrorInfo
from nwp500d.metrics import (
    DaemonMetrics,
    MetricsListenError,
    MetricsServer,
    aws_credentials_expiry,
    parse_listen,
    serve_metrics,
)
from nwp500d.model import ConnectionDropEvent
from nwp500d.mqtt.session import SessionEvent, SessionEventKind
from nwp500d.navilink.tokens import Tokens
from tests.fakes import FakeClock

BOUND = 10.0  # ceiling for anything that takes milliseconds on loopback; a hang fails instead of blocking the run
HANGUP = "AWS_ERROR_MQTT_UNEXPECTED_HANGUP"
EXPIRY = 1_900_000_000.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def event(kind: SessionEventKind, at: float, error: str | None = None) -> SessionEvent:
    return SessionEvent(kind, at, error=ErrorInfo(error, None, "test") if error else None)


def drop(drop_id: str | None, error: str | None = HANGUP, cause: str | None = None) -> ConnectionDropEvent:
    return ConnectionDropEvent(timestamp="2026-11-21T12:00:00.000Z", error_name=error, drop_id=drop_id,
                               cause=cause, correlation="pending")


def url(server: MetricsServer, path: str = "/metrics") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def scrape(http: aiohttp.ClientSession, server: MetricsServer) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and each family's type by name."""
    async with asyncio.timeout(BOUND), http.get(url(server)) as response:
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def has(samples: Samples, name: str) -> bool:
    return any(key[0] == name for key in samples)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> DaemonMetrics:
    return DaemonMetrics(credentials_expiry=lambda: EXPIRY, clock=clock)


@pytest.fixture
async def server(metrics: DaemonMetrics) -> AsyncIterator[MetricsServer]:
    running = await serve_metrics(metrics, "127.0.0.1:0")
    try:
        yield running
    finally:
        async with asyncio.timeout(BOUND):
            await running()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_fresh_daemon_exposes_zeroes_not_gaps(server: MetricsServer, http: aiohttp.ClientSession) -> None:
    samples, types = await scrape(http, server)
    assert value(samples, "nwp500d_connected") == 0
    assert value(samples, "nwp500d_session_uptime_seconds") == 0
    assert value(samples, "nwp500d_reconnect_attempts_total") == 0
    for kind in ("connected", "rebuilt", "deep_reconnected"):
        assert value(samples, "nwp500d_sessions_total", kind=kind) == 0
    for result in ("done", "unavailable", "disabled"):
        assert value(samples, "nwp500d_journal_correlation_total", result=result) == 0
    assert value(samples, "nwp500d_status_round_trip_seconds_count") == 0
    assert value(samples, "nwp500d_credentials_expiry_timestamp_seconds") == EXPIRY
    assert not has(samples, "nwp500d_drops_total")  # labelled by what happened, so nothing until something did
    assert not has(samples, "nwp500d_last_verdict_info")  # no verdict yet: absent, never a made-up one
    assert types["nwp500d_drops"] == "counter"
    assert types["nwp500d_status_round_trip_seconds"] == "histogram"
    assert types["nwp500d_credentials_expiry_timestamp_seconds"] == "gauge"


async def test_events_show_up_with_their_labels(
    metrics: DaemonMetrics, clock: FakeClock, server: MetricsServer, http: aiohttp.ClientSession
) -> None:
    start = clock.monotonic()
    timeline: list[tuple[SessionEventKind, float, str | None]] = [
        ("failed", 0.0, "AWS_IO_DNS_QUERY_FAILED"),
        ("failed", 1.0, "AWS_IO_DNS_QUERY_FAILED"),
        ("connected", 5.0, None),
        ("interrupted", 50.0, HANGUP),
        ("failed", 52.0, "AWS_IO_SOCKET_TIMEOUT"),
        ("rebuilt", 60.0, None),
    ]
    for kind, offset, error in timeline:
        metrics.on_session_event(event(kind, start + offset, error))
    clock.advance(72.5)  # the rebuilt session came up at +60: 12.5 s of uptime at scrape time

    metrics.on_drop(drop("d1"))
    metrics.on_drop(drop("d2"))
    metrics.on_drop(drop("d2"))  # reported again (a restore, a second listener): still one drop
    metrics.on_drop(drop(None, error=None))
    metrics.on_drop(drop("d3", error="NWP500D_DEVICE_DEAF", cause="server_timeout"))
    metrics.on_drop_classified("d1", "network")
    metrics.on_drop_classified("d1", "network")
    metrics.on_drop_classified("from-last-run", None)
    for rtt in (2.1, 3.4, 12.0, -1.0, math.nan):  # the last two are not round trips and must not skew the histogram
        metrics.on_round_trip(rtt)
    for result in ("done", "done", "disabled"):
        metrics.on_correlation(result)
    metrics.set_verdict("server_timeout", None)
    metrics.set_verdict("network", "wifi_roam")

    samples, _ = await scrape(http, server)

    assert value(samples, "nwp500d_connected") == 1
    assert value(samples, "nwp500d_session_uptime_seconds") == pytest.approx(12.5)
    assert value(samples, "nwp500d_reconnect_attempts_total") == 3
    assert value(samples, "nwp500d_sessions_total", kind="connected") == 1
    assert value(samples, "nwp500d_sessions_total", kind="rebuilt") == 1
    assert value(samples, "nwp500d_sessions_total", kind="deep_reconnected") == 0

    assert value(samples, "nwp500d_drops_total", error=HANGUP, cause="pending") == 2
    assert value(samples, "nwp500d_drops_total", error="unknown", cause="pending") == 1
    assert value(samples, "nwp500d_drops_total", error="NWP500D_DEVICE_DEAF", cause="server_timeout") == 1
    assert value(samples, "nwp500d_drops_classified_total", error=HANGUP, cause="network") == 1
    assert value(samples, "nwp500d_drops_classified_total", error="unknown", cause="unknown") == 1

    assert value(samples, "nwp500d_status_round_trip_seconds_count") == 3
    assert value(samples, "nwp500d_status_round_trip_seconds_sum") == pytest.approx(17.5)
    assert value(samples, "nwp500d_status_round_trip_seconds_bucket", le="2.0") == 0
    assert value(samples, "nwp500d_status_round_trip_seconds_bucket", le="2.5") == 1
    assert value(samples, "nwp500d_status_round_trip_seconds_bucket", le="4.0") == 2
    assert value(samples, "nwp500d_status_round_trip_seconds_bucket", le="30.0") == 3
    assert value(samples, "nwp500d_status_round_trip_seconds_bucket", le="+Inf") == 3

    assert value(samples, "nwp500d_journal_correlation_total", result="done") == 2
    assert value(samples, "nwp500d_journal_correlation_total", result="disabled") == 1
    assert value(samples, "nwp500d_journal_correlation_total", result="unavailable") == 0

    verdicts = [key for key in samples if key[0] == "nwp500d_last_verdict_info"]
    assert verdicts == [("nwp500d_last_verdict_info", frozenset({("cause", "network"), ("subcause", "wifi_roam")}))]
    assert value(samples, "nwp500d_last_verdict_info", cause="network", subcause="wifi_roam") == 1


async def test_drop_and_stop_end_the_uptime(
    metrics: DaemonMetrics, clock: FakeClock, server: MetricsServer, http: aiohttp.ClientSession
) -> None:
    metrics.on_session_event(event("connected", clock.monotonic()))
    clock.advance(30)
    samples, _ = await scrape(http, server)
    assert value(samples, "nwp500d_session_uptime_seconds") == pytest.approx(30)
    clock.advance(5)  # computed when scraped, not when the last event came
    samples, _ = await scrape(http, server)
    assert value(samples, "nwp500d_session_uptime_seconds") == pytest.approx(35)

    metrics.on_session_event(event("interrupted", clock.monotonic(), HANGUP))
    samples, _ = await scrape(http, server)
    assert value(samples, "nwp500d_connected") == 0
    assert value(samples, "nwp500d_session_uptime_seconds") == 0

    metrics.on_session_event(event("deep_reconnected", clock.monotonic()))
    metrics.on_session_event(event("stopped", clock.monotonic()))
    samples, _ = await scrape(http, server)
    assert value(samples, "nwp500d_sessions_total", kind="deep_reconnected") == 1
    assert value(samples, "nwp500d_connected") == 0
    assert value(samples, "nwp500d_reconnect_attempts_total") == 0  # drops and stops are not attempts


def tokens(authorization_expires_in: int | None) -> Tokens:
    issued = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    return Tokens(id_token="i", access_token="a", refresh_token="r", authentication_expires_in=3600,
                  access_key_id="AKID", secret_key="s", session_token="t",
                  authorization_expires_in=authorization_expires_in, issued_at=issued, aws_issued_at=issued)


class Holder:
    def __init__(self, current: Tokens | None) -> None:
        self.tokens = current


async def test_credential_expiry_is_read_from_the_client_at_each_scrape(http: aiohttp.ClientSession) -> None:
    holder = Holder(None)
    metrics = DaemonMetrics(credentials_expiry=aws_credentials_expiry(holder))
    server = await serve_metrics(metrics, "127.0.0.1:0")
    try:
        samples, _ = await scrape(http, server)
        assert not has(samples, "nwp500d_credentials_expiry_timestamp_seconds")  # not signed in: absent, not 1970

        holder.tokens = tokens(3600)
        samples, _ = await scrape(http, server)
        expected = datetime(2026, 11, 21, 13, 0, 0, tzinfo=UTC).timestamp()
        assert value(samples, "nwp500d_credentials_expiry_timestamp_seconds") == expected

        holder.tokens = tokens(None)  # NaviLink gave no lifetime: they never expire
        samples, _ = await scrape(http, server)
        assert value(samples, "nwp500d_credentials_expiry_timestamp_seconds") == math.inf
    finally:
        await server()


async def test_a_failing_source_leaves_its_gauge_out_but_the_scrape_works(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> float | None:
        raise RuntimeError("token store gone")

    metrics = DaemonMetrics(credentials_expiry=broken)
    server = await serve_metrics(metrics, "127.0.0.1:0")
    try:
        samples, _ = await scrape(http, server)
    finally:
        await server()
    assert not has(samples, "nwp500d_credentials_expiry_timestamp_seconds")
    assert value(samples, "nwp500d_connected") == 0
    assert "credential expiry source failed" in caplog.text


async def test_content_type_index_and_unknown_paths(server: MetricsServer, http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(BOUND):
        async with http.get(url(server)) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        async with http.get(url(server, "/")) as response:
            assert response.status == 200
            assert "/metrics" in await response.text()
        for path in ("/metric", "/metrics/extra", "/favicon.ico"):
            async with http.get(url(server, path)) as response:
                assert response.status == 404, path
        async with http.post(url(server)) as response:
            assert response.status == 405


async def test_stop_releases_the_port_even_with_a_keep_alive_client(
    metrics: DaemonMetrics, http: aiohttp.ClientSession
) -> None:
    server = await serve_metrics(metrics, "127.0.0.1:0")
    port = server.port
    assert port > 0
    await scrape(http, server)  # leaves an idle keep-alive connection, as Prometheus does
    async with asyncio.timeout(BOUND):
        await server()
    async with asyncio.timeout(BOUND):
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"http://127.0.0.1:{port}/metrics"):
                pass
    again = await serve_metrics(metrics, f"127.0.0.1:{port}")  # what a daemon restart does
    try:
        assert again.port == port
        await scrape(http, again)
    finally:
        await again()


async def test_two_instances_do_not_collide(http: aiohttp.ClientSession) -> None:
    first, second = DaemonMetrics(), DaemonMetrics()
    first.on_round_trip(2.0)
    servers = [await serve_metrics(first, "127.0.0.1:0"), await serve_metrics(second, "127.0.0.1:0")]
    try:
        counts = [value((await scrape(http, s))[0], "nwp500d_status_round_trip_seconds_count") for s in servers]
    finally:
        for server in servers:
            await server()
    assert counts == [1, 0]


async def test_bind_failure_is_one_line_naming_the_address(metrics: DaemonMetrics) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(MetricsListenError) as caught:
            await serve_metrics(metrics, listen)
    message = str(caught.value)
    assert listen in message
    assert "\n" not in message


async def test_malformed_listen_is_refused_before_binding(metrics: DaemonMetrics) -> None:
    with pytest.raises(MetricsListenError, match="9500x"):
        await serve_metrics(metrics, "127.0.0.1:9500x")


async def test_ipv6_loopback(metrics: DaemonMetrics, http: aiohttp.ClientSession) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        server = await serve_metrics(metrics, "[::1]:0")
    except MetricsListenError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        async with asyncio.timeout(BOUND), http.get(f"http://[::1]:{server.port}/metrics") as response:
            assert response.status == 200
    finally:
        await server()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9500", ("127.0.0.1", 9500)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:9500", ("localhost", 9500)),
        ("[::1]:9500", ("::1", 9500)),
        ("[::]:9500", ("::", 9500)),
        ("::1:9500", ("::1", 9500)),  # unbracketed: the port is after the last colon, as config validation reads it
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9500", ":9500", "host:", "host:port", "host:65536", "[::1]9500", "[::1", "[]:1"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(MetricsListenError, match=r"metrics\.listen"):
        parse_listen(listen)
