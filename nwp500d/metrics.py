"""Optional Prometheus exposition of the daemon's state, served on the daemon's own event loop.

Why it is shaped this way:

* Everything lives in a private ``CollectorRegistry``. The library's global registry would make a second instance (a
  test, an embedded use) fail with duplicate names, and would expose whatever else in the process registered there.
* Values are pushed in by the daemon (``on_*`` methods) rather than pulled from its parts, so this module depends on
  nothing but plain events and stays testable without a session, a broker or NaviLink.
* Values that change with the passage of time alone (session uptime, credential expiry) are computed when Prometheus
  scrapes, so they are never stale between events.
* The HTTP server is aiohttp on the running loop: no thread, so every read of daemon state happens on the loop that
  writes it, and no locking is needed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from nwp500d.clock import Clock, SystemClock

if TYPE_CHECKING:
    from nwp500d.model import ConnectionDropEvent
    from nwp500d.mqtt.session import SessionEvent
    from nwp500d.navilink.tokens import Tokens

_log = logging.getLogger("nwp500d.metrics")

PREFIX: Final = "nwp500d_"
PENDING_CAUSE: Final = "pending"
UNKNOWN: Final = "unknown"
UP_KINDS: Final = ("connected", "rebuilt", "deep_reconnected")
CORRELATION_RESULTS: Final = ("done", "unavailable", "disabled")
# A NaviLink status round trip is normally 2-4 s; the fine steps there separate "normal" from "the cloud is slow",
# the coarse tail catches the replies that only just beat the reply timeout.
ROUND_TRIP_BUCKETS: Final = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
REMEMBERED_DROP_IDS: Final = 1024  # drops are rare; this only has to outlive the gap between a drop and its verdict
SHUTDOWN_TIMEOUT_SECS: Final = 2.0  # a scrape is milliseconds; a daemon stop must not wait on an idle keep-alive
INDEX_TEXT: Final = "nwp500d Prometheus exporter: metrics are at /metrics\n"

ExpirySource = Callable[[], float | None]
"""Unix time at which the AWS credentials expire; ``math.inf`` if they never do; None while there are none."""


class _TokenHolder(Protocol):
    """What :func:`aws_credentials_expiry` needs from the NaviLink client (its ``tokens`` property)."""

    @property
    def tokens(self) -> Tokens | None: ...


def aws_credentials_expiry(holder: _TokenHolder) -> ExpirySource:
    """An :data:`ExpirySource` reading the client's current tokens at each scrape, so a renewal shows at once."""

    def expiry() -> float | None:
        tokens = holder.tokens
        if tokens is None:
            return None
        expires = tokens.aws_expires_at
        return math.inf if expires is None else expires.timestamp()

    return expiry


class _RecentIds:
    """Drop ids already counted, bounded: a restored or repeated drop must not be counted twice, nor memory grow."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._errors: OrderedDict[str, str] = OrderedDict()

    def add(self, drop_id: str, error: str) -> bool:
        if drop_id in self._errors:
            return False
        self._errors[drop_id] = error
        if len(self._errors) > self._limit:
            self._errors.popitem(last=False)
        return True

    def error_of(self, drop_id: str) -> str | None:
        return self._errors.get(drop_id)


class _ScrapeTimeCollector:
    """Gauges whose value is a function of now; a source that fails or knows nothing leaves its gauge absent.

    Absent rather than 0: a zero expiry reads as "expired in 1970" and would fire an expiry alert for a daemon that
    merely has not signed in yet.
    """

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry can reject a clash at registration without running the sources.
        return [_uptime_family(), _expiry_family()]

    def collect(self) -> Iterable[Metric]:
        uptime = _uptime_family()
        uptime.add_metric([], self._metrics.session_uptime_seconds())
        families = [uptime]
        source = self._metrics.credentials_expiry
        if source is not None:
            expiry = _expiry_family()
            try:
                value = source()
            except Exception:  # noqa: BLE001 - one broken source must not blank the whole scrape
                _log.exception("credential expiry source failed; the gauge is left out of this scrape")
                value = None
            if value is not None:
                expiry.add_metric([], value)
                families.append(expiry)
        return families


def _uptime_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        f"{PREFIX}session_uptime_seconds",
        "Seconds the current MQTT session has been up; 0 while disconnected. Its peaks before each fall are the "
        "session lengths: peaks of one recurring length point at a limit on the server's side.",
    )


def _expiry_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        f"{PREFIX}credentials_expiry_timestamp_seconds",
        "Unix time at which the AWS credentials signing the MQTT connection expire (+Inf if NaviLink gave no "
        "lifetime; absent before the first sign-in). Drops just past this time mean the renewal came too late.",
    )


class DaemonMetrics:
    """The daemon's Prometheus metrics in a registry of their own; the daemon calls the ``on_*`` methods."""

    def __init__(self, *, credentials_expiry: ExpirySource | None = None, clock: Clock | None = None) -> None:
        self.registry = CollectorRegistry()
        self.credentials_expiry = credentials_expiry
        # Must be the clock the supervisor stamps SessionEvent.monotonic with (both default to the system's).
        self._clock: Clock = clock or SystemClock()
        self._up_since: float | None = None
        self._counted = _RecentIds(REMEMBERED_DROP_IDS)
        self._classified = _RecentIds(REMEMBERED_DROP_IDS)
        registry = self.registry
        self.drops = Counter(
            f"{PREFIX}drops", "MQTT sessions lost, by error name and cause. The cause is the one known when the drop "
            f"was counted, which is '{PENDING_CAUSE}' until its journal window closes; see "
            f"{PREFIX}drops_classified_total for causes as they are settled.",
            ["error", "cause"], registry=registry,
        )
        self.drops_classified = Counter(
            f"{PREFIX}drops_classified", "MQTT sessions lost, counted again once their cause is settled (after the "
            "journal window closes), by error name and cause. Lags nwp500d_drops_total by the window length.",
            ["error", "cause"], registry=registry,
        )
        self.connected = Gauge(
            f"{PREFIX}connected", "1 while the MQTT session to NaviLink is up, 0 while it is down or being rebuilt.",
            registry=registry,
        )
        self.reconnect_attempts = Counter(
            f"{PREFIX}reconnect_attempts", "Connect attempts that failed and were retried after a backoff (the same "
            "count as total_reconnect_attempts in exports, but for this process only). A steady rise while "
            "nwp500d_connected is 0 is an outage; isolated ones are normal.",
            registry=registry,
        )
        self.round_trip = Histogram(
            f"{PREFIX}status_round_trip_seconds", "Time from a status request to the water heater's reply, over the "
            "live session. The end-to-end probe: a session can be up while this stops (no samples) or grows.",
            registry=registry, buckets=ROUND_TRIP_BUCKETS,
        )
        self.last_verdict = Gauge(
            f"{PREFIX}last_verdict_info", "The analysis's latest conclusion about why sessions drop, as labels (value "
            "always 1; absent until a verdict exists). Cause ids are stable and safe to alert on.",
            ["cause", "subcause"], registry=registry,
        )
        self.sessions = Counter(
            f"{PREFIX}sessions", "MQTT sessions that came up, by how: connected (first), rebuilt (after a drop), "
            "deep_reconnected (after a full sign-in for fresh AWS credentials, which only happens once ordinary "
            "reconnects kept failing).",
            ["kind"], registry=registry,
        )
        self.journal_correlation = Counter(
            f"{PREFIX}journal_correlation", "Drops whose journal window was examined, by result: done (host events "
            "attached), unavailable (the journal could not be read), disabled (journal.enabled is false).",
            ["result"], registry=registry,
        )
        self.connected.set(0)
        # Pre-created label sets read as 0 rather than absent, so rate() and alerts work before the first event.
        for kind in UP_KINDS:
            self.sessions.labels(kind=kind)
        for result in CORRELATION_RESULTS:
            self.journal_correlation.labels(result=result)
        registry.register(_ScrapeTimeCollector(self))

    # ---------------------------------------------------------------- what the daemon calls

    def on_session_event(self, event: SessionEvent) -> None:
        """The supervisor's event listener (``supervisor.on_event(metrics.on_session_event)``)."""
        if event.kind in UP_KINDS:
            self._up_since = event.monotonic
            self.connected.set(1)
            self.sessions.labels(kind=event.kind).inc()
            return
        self._up_since = None
        self.connected.set(0)
        if event.kind == "failed":
            self.reconnect_attempts.inc()

    def on_drop(self, drop: ConnectionDropEvent) -> None:
        """The collector's drop listener. Counted once per drop id, however often it is reported (restores too)."""
        error = drop.error_name or UNKNOWN
        if drop.drop_id is not None and not self._counted.add(drop.drop_id, error):
            return
        self.drops.labels(error=error, cause=drop.cause or PENDING_CAUSE).inc()

    def on_drop_classified(self, drop_id: str, cause: str | None) -> None:
        """A drop's cause became known. A counter cannot move a drop out of 'pending', so this counts it a second time
        in its own family instead; once per drop id."""
        error = self._counted.error_of(drop_id) or UNKNOWN  # unknown: a drop from before this process started
        if self._classified.add(drop_id, error):
            self.drops_classified.labels(error=error, cause=cause or UNKNOWN).inc()

    def on_round_trip(self, seconds: float) -> None:
        """A status reply arrived ``seconds`` after its request (``DeviceMonitor.poll``'s return value)."""
        if math.isfinite(seconds) and seconds >= 0:
            self.round_trip.observe(seconds)

    def on_correlation(self, result: str) -> None:
        """A drop's journal window was examined; ``result`` is the ``correlation`` of its completion record."""
        self.journal_correlation.labels(result=result).inc()

    def set_verdict(self, cause: str, subcause: str | None) -> None:
        """Replace the verdict: only the latest may be exposed, or a dashboard would show two causes at once."""
        self.last_verdict.clear()
        self.last_verdict.labels(cause=cause, subcause=subcause or "").set(1)

    # ---------------------------------------------------------------- read at scrape time

    def session_uptime_seconds(self) -> float:
        since = self._up_since
        return 0.0 if since is None else max(0.0, self._clock.monotonic() - since)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -------------------------------------------------------------------- HTTP


class MetricsListenError(Exception):
    """``metrics.listen`` cannot be served (malformed, or the address cannot be bound); the message names it."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare ``v6`` literal with a port after the last colon; port 0 = any free."""
    text = listen.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise MetricsListenError(f"metrics.listen {listen!r}: expected [ipv6]:port, e.g. [::1]:9500")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise MetricsListenError(f"metrics.listen {listen!r}: expected host:port, e.g. 127.0.0.1:9500")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsListenError(f"metrics.listen {listen!r}: expected host:port with a port of 0-65535")
    return host, int(port_text)


@dataclass(frozen=True)
class MetricsServer:
    """A running exporter. Awaiting the instance itself stops it, so it is the stop function the daemon keeps."""

    runner: web.AppRunner
    host: str
    addresses: tuple[Any, ...]

    @property
    def port(self) -> int:
        """The bound port, which is the one to scrape when ``listen`` asked for port 0."""
        return int(self.addresses[0][1])

    async def __call__(self) -> None:
        await self.runner.cleanup()


async def serve_metrics(metrics: DaemonMetrics, listen: str) -> MetricsServer:
    """Serve ``GET /metrics`` on the running loop; the returned server, awaited as ``await stop()``, stops it.

    Raises :class:`MetricsListenError` (one line, naming the address) when ``listen`` is malformed or cannot be bound.
    """
    host, port = parse_listen(listen)

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=INDEX_TEXT)

    async def exposition(_request: web.Request) -> web.Response:
        # generate_latest writes the classic text format, whose content type names version 0.0.4; the library's
        # CONTENT_TYPE_LATEST now names 1.0.0, which only its content-negotiating encoder produces.
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/metrics", exposition)
    # No access log: a scrape every 15 s would fill the journal with lines that say nothing about drops.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise MetricsListenError(f"cannot serve metrics on {listen}: {reason}") from None
    return MetricsServer(runner, host, tuple(runner.addresses))


__all__ = [
    "ROUND_TRIP_BUCKETS",
    "DaemonMetrics",
    "ExpirySource",
    "MetricsListenError",
    "MetricsServer",
    "aws_credentials_expiry",
    "parse_listen",
    "serve_metrics",
]
