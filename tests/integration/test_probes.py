"""Endpoint probes against a real TLS broker on loopback: timings, address changes, and each failure named."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from nwp500d.cli import main
from nwp500d.netdiag.probes import EndpointProber
from nwp500d.sim.broker import MosquittoBroker, find_mosquitto, pick_free_ports

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - the TLS endpoint is a real mosquitto
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(60)


async def test_probe_times_dns_tcp_and_tls() -> None:
    async with MosquittoBroker() as broker:
        prober = EndpointProber("localhost", broker.tls_port, ca_file=str(broker.ca_file), timeout=5)
        first = await prober.probe()
        assert first.ok, first.errors
        assert first.addresses
        assert first.addresses_changed is None  # nothing to compare with yet
        assert first.dns_seconds is not None and first.tcp_seconds is not None and first.tls_seconds is not None
        second = await prober.probe()
        assert second.addresses_changed is False
        data = second.to_dict()
        assert data["addresses_hash"] and data["ok"] is True
        assert "tls" in second.line() and "FAILED" not in second.line()


async def test_an_address_that_refuses_is_skipped_for_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A standard Debian /etc/hosts resolves "localhost" to ::1 first, where a broker listening on 127.0.0.1 refuses
    (or, without IPv6, cannot be reached at all); a client tries the next address, and so must the probe."""
    async with MosquittoBroker() as broker:
        loop = asyncio.get_running_loop()

        async def ipv6_first(host: str, port: int, **_kwargs: object) -> list[tuple[Any, ...]]:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

        monkeypatch.setattr(loop, "getaddrinfo", ipv6_first)
        result = await EndpointProber("localhost", broker.tls_port, ca_file=str(broker.ca_file), timeout=5).probe()
    assert result.ok, result.errors
    assert result.addresses == ["127.0.0.1", "::1"]
    assert result.address == "127.0.0.1"
    assert result.tcp_seconds is not None and result.tls_seconds is not None


async def test_every_address_refusing_is_one_tcp_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    (free,) = pick_free_ports(1)
    loop = asyncio.get_running_loop()

    async def two_addresses(host: str, port: int, **_kwargs: object) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
    result = await EndpointProber("refusing.test", free, timeout=3).probe()
    assert set(result.errors) == {"tcp"}
    assert result.errors["tcp"].endswith("(tried 2 addresses)")


async def test_refused_and_wrong_certificate_are_named() -> None:
    (free,) = pick_free_ports(1)
    refused = await EndpointProber("127.0.0.1", free, timeout=3).probe()
    assert not refused.ok
    assert set(refused.errors) == {"tcp"}
    async with MosquittoBroker() as broker:
        untrusted = await EndpointProber("127.0.0.1", broker.tls_port, timeout=5).probe()  # system CAs only
        assert set(untrusted.errors) == {"tls"}
        assert untrusted.tcp_seconds is not None


async def test_unresolvable_name() -> None:
    result = await EndpointProber("no-such-host.invalid", 443, timeout=3).probe()
    assert set(result.errors) == {"dns"}
    assert result.tcp_seconds is None


def test_probe_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def with_broker() -> tuple[int, int, str]:
        async with MosquittoBroker() as broker:
            config = tmp_path / "c.yaml"
            config.write_text(f"mqtt:\n  endpoint: 127.0.0.1\n  transport: tls\n  port: {broker.tls_port}\n"
                              f"  ca_file: {broker.ca_file}\n")
            ok = await asyncio.to_thread(main, ["probe", "--config", str(config), "--count", "2", "--interval", "0",
                                                "--format", "json"])
            out = capsys.readouterr().out
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
            sock.close()
            failed = await asyncio.to_thread(main, ["probe", "--config", str(config), "--endpoint",
                                                    f"127.0.0.1:{closed_port}"])
            return ok, failed, out

    ok, failed, out = asyncio.run(with_broker())
    assert ok == 0
    data = json.loads(out)
    assert len(data["probes"]) == 2
    assert all(p["ok"] for p in data["probes"])
    assert "RetransSegs" in data["netstat_delta"]
    assert failed == 69
    text = capsys.readouterr().out
    assert "FAILED tcp:" in text
    assert "0 of 1 probes succeeded" in text
