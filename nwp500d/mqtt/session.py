"""SessionSupervisor: owns the one MQTT session, every reconnect, and what gets recorded about each.

One loop, one live connection at a time. On every interruption the connection is closed before anything else (two
connections with one client id knock each other off forever), the supervisor waits a jittered backoff, makes sure
the credentials are fresh (a full sign-in after ``deep_reconnect_threshold`` failures in a row, since only a
sign-in renews the AWS credentials), and builds a brand-new connection under a deadline. Each path — first connect,
rebuild, deep rebuild, failed attempt, drop, clean stop — is recorded in the collector and announced as a
SessionEvent with monotonic timings, attempt numbers and the credentials' age.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from nwp500d import logfields
from nwp500d.clock import Clock, SystemClock, suspend_offset
from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.errors import ErrorInfo
from nwp500d.mqtt.backoff import Backoff
from nwp500d.mqtt.topics import topic_matches
from nwp500d.mqtt.transport import ConnectResult, TransportError, TransportEvent
from nwp500d.navilink.errors import CredentialsRejected, NaviLinkUnavailable
from nwp500d.status import likely_cause

_log = logging.getLogger("nwp500d.session")

SessionEventKind = Literal["connected", "rebuilt", "deep_reconnected", "interrupted", "failed", "stopped"]
MessageHandler = Callable[[str, bytes], Awaitable[None] | None]

DEVICE_DEAF = "NWP500D_DEVICE_DEAF"
STOP_DISCONNECT_TIMEOUT = 5.0


class Connection(Protocol):
    connection_id: int

    async def connect(self, timeout: float) -> ConnectResult: ...
    async def subscribe(self, topic: str, timeout: float) -> None: ...
    async def publish(self, topic: str, payload: bytes, timeout: float) -> None: ...
    async def disconnect(self, timeout: float) -> bool: ...
    def close_now(self) -> None: ...


class ConnectionFactory(Protocol):
    @property
    def keep_alive_secs(self) -> int: ...

    def new_connection(
        self, loop: asyncio.AbstractEventLoop, on_event: Callable[[TransportEvent], None]
    ) -> Connection: ...


class Credentials(Protocol):
    async def ensure_valid(self) -> object: ...
    async def sign_in(self) -> object: ...
    def credentials_age_seconds(self) -> float | None: ...


@dataclass(frozen=True)
class SessionEvent:
    kind: SessionEventKind
    monotonic: float
    attempt: int = 0
    error: ErrorInfo | None = None
    session_present: bool = False
    return_code: int | None = None
    reconnect_seconds: float | None = None
    session_seconds: float | None = None
    credentials_age_seconds: float | None = None


_RECONFIGURE = ErrorInfo("NWP500D_RECONFIGURE", None, "new settings")


class SessionGaveUp(Exception):
    """``max_reconnect_attempts`` failed attempts in a row (only when the user limited them)."""


class SessionDropped(Exception):
    """Carries a normalised error into the collector, which reads ``name``/``code``/``message``."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message or info.name or "connection lost")
        self.name = info.name
        self.code = info.code
        self.message = info.message


class NotConnected(Exception):
    """A publish while offline with the command queue disabled."""


@dataclass
class _Queued:
    queued_at: float
    topic: str
    payload: bytes


@dataclass
class _Live:
    connection: Connection
    started: float
    suspend_offset: float
    session_present: bool = False
    up: bool = False  # set once CONNACK arrived and subscriptions are renewed
    down: asyncio.Future[ErrorInfo | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SessionSupervisor:
    def __init__(
        self,
        *,
        config: MqttConnectionConfig,
        factory: ConnectionFactory,
        credentials: Credentials,
        collector: MqttDiagnosticsCollector,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        network_evidence: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self._network_evidence = network_evidence
        self._factory = factory
        self._credentials = credentials
        self.collector = collector
        self._clock = clock or SystemClock()
        self._backoff = backoff or Backoff(
            initial=config.initial_reconnect_delay,
            cap=config.max_reconnect_delay,
            multiplier=config.reconnect_backoff_multiplier,
        )
        self._listeners: list[Callable[[SessionEvent], None]] = []
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._queue: deque[_Queued] = deque()
        self._live: _Live | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._failures = 0
        self._dropped_at: float | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._progress_at = self._clock.monotonic()
        self._replacement: tuple[MqttConnectionConfig, ConnectionFactory] | None = None

    # ---------------------------------------------------------------- public surface

    @property
    def is_connected(self) -> bool:
        live = self._live
        return live is not None and live.up and not live.down.done()

    @property
    def queued_commands_count(self) -> int:
        return len(self._queue)

    @property
    def active_subscriptions(self) -> int:
        return len(self._handlers)

    @property
    def subscribed_topics(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def stuck_seconds(self) -> float:
        """How long the supervisor has gone without a step while not connected (0 while a session is up).

        Every wait it makes is bounded (connect deadline, backoff cap), so a large value means it is wedged.
        """
        if self.is_connected:
            return 0.0
        return self._clock.monotonic() - self._progress_at

    def replace_settings(self, config: MqttConnectionConfig, factory: ConnectionFactory) -> None:
        """New settings (SIGHUP): end the live session cleanly and continue with them, without counting a drop."""
        self._replacement = (config, factory)
        live = self._live
        if live is not None and not live.down.done():
            live.down.set_result(_RECONFIGURE)
        self._wake.set()

    def on_event(self, listener: Callable[[SessionEvent], None]) -> None:
        self._listeners.append(listener)

    async def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Remember the subscription (it is renewed after every reconnect) and subscribe now if connected."""
        first = topic not in self._handlers
        self._handlers.setdefault(topic, []).append(handler)
        live = self._live
        if first and live is not None and self.is_connected:
            try:
                await live.connection.subscribe(topic, self.config.operation_timeout_secs)
            except TransportError as exc:
                _log.warning("subscribe to %s failed (%s); it is retried after the next reconnect", topic, exc)

    async def publish(self, topic: str, payload: bytes) -> bool:
        """QoS 1 publish. True once acknowledged; False when it was queued for after the reconnect."""
        live = self._live
        if live is not None and self.is_connected:
            try:
                await live.connection.publish(topic, payload, self.config.operation_timeout_secs)
            except TransportError as exc:
                if not self.config.enable_command_queue:
                    raise NotConnected(str(exc)) from None
            else:
                self.collector.record_publish()
                self.collector.record_activity()
                return True
        if not self.config.enable_command_queue:
            raise NotConnected("not connected and the command queue is disabled (mqtt.enable_command_queue)")
        if len(self._queue) >= self.config.max_queued_commands:
            self._queue.popleft()
        self._queue.append(_Queued(self._clock.monotonic(), topic, payload))
        self.collector.record_publish(queued=True)
        return False

    def force_rebuild(self, info: ErrorInfo) -> None:
        """End the live session as a drop (e.g. connected but deaf); the supervisor then rebuilds as usual."""
        live = self._live
        if live is not None and not live.down.done():
            live.down.set_result(info)

    def wake(self) -> None:
        """Cut the current backoff short (the network just came back); the one-CONNECT-per-second floor still holds."""
        self._wake.set()

    def stop(self) -> None:
        """Ask for a clean stop: MQTT DISCONNECT, a clean-disconnect record, and ``run`` returns."""
        self._stopping.set()
        live = self._live
        if live is not None and not live.down.done():
            live.down.set_result(None)

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Until ``stop()``. Raises CredentialsRejected (fatal) or SessionGaveUp (only with a limited attempt count)."""
        ever_connected = False
        while not self._stopping.is_set():
            self._apply_replacement()
            self._progress()
            # Cleared as an attempt starts, not when the backoff starts: a wake that arrives during the attempt (the
            # link came up, then the default route a moment later, while this attempt still failed on the old
            # state) must end the backoff that follows it.
            self._wake.clear()
            deep = self._failures > 0 and self._failures % self.config.deep_reconnect_threshold == 0
            try:
                if deep:
                    _log.info("%d failed attempts in a row: signing in again for fresh credentials", self._failures)
                    await self._credentials.sign_in()
                else:
                    await self._credentials.ensure_valid()
            except NaviLinkUnavailable as exc:
                await self._attempt_failed(ErrorInfo(f"NAVILINK_{exc.reason.upper()}", None, str(exc)))
                continue
            live = await self._connect()
            if live is None:
                continue
            kind: SessionEventKind = "connected" if not ever_connected else ("deep_reconnected" if deep else "rebuilt")
            ever_connected = True
            await self._came_up(live, kind)
            reason = await live.down
            self._progress()
            if reason is None:
                await self._stop_cleanly(live)
                break
            if reason is _RECONFIGURE:
                await self._stop_cleanly(live)
                continue
            await self._went_down(live, reason)
            if await self._pause(self._backoff.next_delay()):
                break
        self._emit(SessionEvent("stopped", self._clock.monotonic()))

    def _progress(self) -> None:
        self._progress_at = self._clock.monotonic()

    def _apply_replacement(self) -> None:
        if self._replacement is not None:
            self.config, self._factory = self._replacement
            self._replacement = None
            self._backoff.initial = self.config.initial_reconnect_delay
            self._backoff.cap = self.config.max_reconnect_delay
            self._backoff.multiplier = self.config.reconnect_backoff_multiplier
            self._backoff.reset()

    async def _connect(self) -> _Live | None:
        floor = self._backoff.floor_wait(self._clock.monotonic())
        if floor and await self._pause(floor, wakeable=False):
            return None
        self._backoff.connecting(self._clock.monotonic())
        loop = asyncio.get_running_loop()
        connection = self._factory.new_connection(loop, self._on_transport_event)
        live = _Live(connection, self._clock.monotonic(), suspend_offset())
        self._live = live
        try:
            result = await connection.connect(self.config.connect_timeout_secs)
            for topic in list(self._handlers):
                await connection.subscribe(topic, self.config.operation_timeout_secs)
        except TransportError as exc:
            connection.close_now()  # a stuck connection is abandoned, never reused
            self._live = None
            self._progress()
            await self._attempt_failed(exc.info)
            return None
        live.started = self._clock.monotonic()
        live.session_present = result.session_present
        live.up = True
        return live

    async def _came_up(self, live: _Live, kind: SessionEventKind) -> None:
        self._wake.clear()  # a wake meant for this attempt's backoff must not cut short the one after the next drop
        attempts = self._failures + 1
        reconnect = None if self._dropped_at is None else self._clock.monotonic() - self._dropped_at
        session_present = live.session_present
        age = self._credentials.credentials_age_seconds()
        await self.collector.record_connection_success(
            event_type=kind, session_present=session_present, return_code=0, attempt_number=attempts,
            credentials_age_seconds=age,
        )
        if reconnect is None:
            _log.info("MQTT session up (%s)", kind,
                      extra=logfields.event("session_up", NWP_SESSION_KIND=kind, NWP_ATTEMPT=attempts))
        else:
            _log.info("MQTT session back after %.1f s down (%s, attempt %d)", reconnect, kind, attempts,
                      extra=logfields.event("session_back", NWP_SESSION_KIND=kind, NWP_ATTEMPT=attempts,
                                            NWP_DOWNTIME_SECONDS=round(reconnect, 3)))
        self._failures = 0
        self._dropped_at = None
        self._emit(SessionEvent(kind, self._clock.monotonic(), attempts, None, session_present, 0, reconnect, None,
                                age))
        await self._flush_queue(live)

    async def _went_down(self, live: _Live, reason: ErrorInfo) -> None:
        live.connection.close_now()
        now = self._clock.monotonic()
        self._live = None
        self._dropped_at = now
        session_seconds = now - live.started
        if session_seconds >= self.config.stable_session_secs:
            self._backoff.reset()
        suspended = max(0.0, suspend_offset() - live.suspend_offset)
        age = self._credentials.credentials_age_seconds()
        network = None
        if self._network_evidence is not None:
            try:
                network = self._network_evidence()
            except Exception:  # noqa: BLE001 - evidence is a bonus; the drop must be recorded regardless
                _log.exception("collecting network evidence failed")
        await self.collector.record_connection_drop(
            error=SessionDropped(reason),
            reconnect_attempt=0,
            active_subscriptions=len(self._handlers),
            queued_commands=len(self._queue),
            credentials_age_seconds=age,
            suspended_seconds=round(suspended, 3),
            keep_alive_secs=self._factory.keep_alive_secs,
            network=network,
        )
        hint = likely_cause(reason.name)
        _log.warning(
            "MQTT session down after %.1f s: %s (%s)%s", session_seconds, reason.name, reason.message,
            f"; first guess: {hint}" if hint else "",
            extra=logfields.event("session_down", NWP_ERROR_NAME=reason.name, NWP_ERROR_CODE=reason.code,
                                  NWP_SESSION_SECONDS=round(session_seconds, 3), NWP_CAUSE=hint or ""),
        )
        self._emit(SessionEvent("interrupted", now, 0, reason, session_seconds=session_seconds,
                                credentials_age_seconds=age))

    async def _stop_cleanly(self, live: _Live) -> None:
        self._live = None
        clean = await live.connection.disconnect(STOP_DISCONNECT_TIMEOUT)
        self.collector.record_disconnect()
        _log.info("MQTT session closed %s", "with a clean DISCONNECT" if clean else "(DISCONNECT not acknowledged)")

    async def _attempt_failed(self, info: ErrorInfo) -> None:
        self._failures += 1
        age = self._credentials.credentials_age_seconds()
        self.collector.record_reconnect_attempt(self._failures, SessionDropped(info), credentials_age_seconds=age)
        self._emit(SessionEvent("failed", self._clock.monotonic(), self._failures, info, credentials_age_seconds=age))
        level = logging.INFO if self._failures == 1 else logging.DEBUG  # one line per outage, not per retry
        _log.log(level, "connect attempt %d failed: %s (%s)", self._failures, info.name, info.message)
        limit = self.config.max_reconnect_attempts
        if limit != -1 and self._failures >= limit:
            raise SessionGaveUp(f"{self._failures} connect attempts failed in a row; last: {info.name}")
        await self._pause(self._backoff.next_delay())

    async def _pause(self, seconds: float, *, wakeable: bool = True) -> bool:
        """Sleep ``seconds`` unless stopped (returns True) or woken; bounded by construction."""
        self._progress()
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._progress()
        return self._stopping.is_set()

    async def _flush_queue(self, live: _Live) -> None:
        max_age = self.config.max_queued_command_age_secs
        while self._queue and self._live is live and self.is_connected:
            item = self._queue[0]
            if self._clock.monotonic() - item.queued_at > max_age:
                self._queue.popleft()
                _log.info("dropped a queued command for %s: older than %g s", item.topic, max_age)
                continue
            try:
                await live.connection.publish(item.topic, item.payload, self.config.operation_timeout_secs)
            except TransportError as exc:
                _log.info("queued command not sent yet (%s); kept for the next session", exc.info.name)
                return
            self._queue.popleft()
            self.collector.record_publish()

    # ---------------------------------------------------------------- transport events (on the loop)

    def _on_transport_event(self, event: TransportEvent) -> None:
        live = self._live
        if live is None or event.connection_id != live.connection.connection_id:
            return  # a connection we already closed or abandoned is still winding down
        if event.kind == "interrupted":
            live.connection.close_now()  # before the CRT's own reconnect can make a second connection
            if not live.down.done():
                live.down.set_result(event.error or ErrorInfo("UNKNOWN", None, "interrupted"))
        elif event.kind == "resumed":
            _log.debug("ignoring a CRT resume: the supervisor rebuilds connections itself")
        elif event.kind == "message":
            self.collector.record_message_received()
            self._dispatch(event.topic, event.payload)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        for topic_filter, handlers in self._handlers.items():
            if not topic_matches(topic_filter, topic):
                continue
            for handler in handlers:
                try:
                    result = handler(topic, payload)
                except Exception:  # noqa: BLE001 - one handler's bug must not starve the others
                    _log.exception("message handler for %s failed", topic_filter)
                    continue
                if result is not None:
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("message handler failed: %r", task.exception())

    def _emit(self, event: SessionEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - listeners are observers; the session must go on
                _log.exception("session event listener failed")


__all__ = [
    "DEVICE_DEAF",
    "CredentialsRejected",
    "SessionDropped",
    "SessionEvent",
    "SessionGaveUp",
    "SessionSupervisor",
]
