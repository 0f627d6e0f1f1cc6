"""One-shot probes of the endpoint: DNS resolution, TCP connect and TLS handshake times (the guide's Phase 3
``ping``/``nc`` loop, done properly). Every step is bounded and runs on the event loop without blocking it.

A drop's probe answers "could we reach the endpoint right then, and how fast": a DNS failure, an address change,
a refused or silent TCP connect, a TLS handshake that stalls, each points somewhere different.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProbeResult:
    host: str
    port: int
    dns_seconds: float | None = None
    addresses: list[str] = field(default_factory=list)
    addresses_changed: bool | None = None
    tcp_seconds: float | None = None
    tls_seconds: float | None = None
    address: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "ok": self.ok,
            "dns_seconds": _round(self.dns_seconds), "addresses": self.addresses,
            "addresses_hash": _hash(self.addresses), "addresses_changed": self.addresses_changed,
            "tcp_seconds": _round(self.tcp_seconds), "tls_seconds": _round(self.tls_seconds),
            "address": self.address, "errors": dict(self.errors),
        }

    def line(self) -> str:
        parts = [f"{self.host}:{self.port}"]
        parts.append(f"dns {_ms(self.dns_seconds)}" + (f" → {', '.join(self.addresses[:3])}" if self.addresses else ""))
        parts.append(f"tcp {_ms(self.tcp_seconds)}")
        parts.append(f"tls {_ms(self.tls_seconds)}")
        if self.errors:
            parts.append("FAILED " + "; ".join(f"{step}: {text}" for step, text in self.errors.items()))
        return "  ".join(parts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _hash(addresses: list[str]) -> str | None:
    """A stable short id of the address set (blackbox_exporter's probe_ip_addr_hash idea): cloud IP churn shows."""
    if not addresses:
        return None
    return hashlib.sha256(",".join(sorted(addresses)).encode()).hexdigest()[:12]


class EndpointProber:
    """Remembers the last address set, so a probe can say the endpoint's addresses changed."""

    def __init__(self, host: str, port: int, *, ca_file: str | None = None, tls: bool = True,
                 timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._tls = tls
        self._ca_file = ca_file
        self._previous: list[str] | None = None
        self.last: ProbeResult | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca_file)
        if self.port == 443:
            context.set_alpn_protocols(["http/1.1"])
        return context

    async def probe(self) -> ProbeResult:
        result = ProbeResult(self.host, self.port)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            result.errors["dns"] = _describe(exc)
            self.last = result
            return result
        result.dns_seconds = time.perf_counter() - started
        result.addresses = sorted({str(info[4][0]) for info in infos})
        if self._previous is not None:
            result.addresses_changed = result.addresses != self._previous
        self._previous = result.addresses
        # The first address of each family, in the resolver's order, like a client would: "localhost" is often ::1
        # first, and an endpoint with a broken IPv6 route still works over IPv4. Each gets an equal share of the
        # budget, so a family that swallows SYNs (the usual way IPv6 is broken) cannot use it all, while the many
        # addresses of one family (a cloud endpoint has eight) do not slice it thin; the time is that of the connect
        # that worked.
        first_of_family: dict[int, str] = {}
        for info in infos:
            first_of_family.setdefault(int(info[0]), str(info[4][0]))
        candidates = list(first_of_family.values())
        share = self.timeout / len(candidates)
        result.address = candidates[0]
        failure: BaseException = TimeoutError()
        writer = None
        tried = 0
        for candidate in candidates:
            tried += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(share):
                    _reader, writer = await asyncio.open_connection(candidate, self.port)
            except (OSError, TimeoutError) as exc:
                failure = exc
                continue
            result.address = candidate
            break
        if writer is None:
            result.errors["tcp"] = _describe(failure) + (f" (tried {tried} addresses)" if tried > 1 else "")
            self.last = result
            return result
        result.tcp_seconds = time.perf_counter() - started
        address = result.address
        await _close(writer)
        if self._tls:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    _reader, writer = await asyncio.open_connection(
                        address, self.port, ssl=self._context(), server_hostname=self.host,
                        ssl_handshake_timeout=self.timeout,
                    )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                result.errors["tls"] = _describe(exc)
                self.last = result
                return result
            # The TLS figure is the handshake alone: the whole connect minus a plain TCP connect's time.
            result.tls_seconds = max(0.0, time.perf_counter() - started - (result.tcp_seconds or 0.0))
            await _close(writer)
        self.last = result
        return result


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        async with asyncio.timeout(2):
            await writer.wait_closed()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"resolution failed: {exc.strerror or exc}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:200]
