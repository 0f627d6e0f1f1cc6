"""MqttDiagnosticsCollector: the seed guide's public API, with the upstream collector's defects fixed.

What differs from the nwp500-python collector this API comes from, and why:

* durations use a monotonic clock, so an NTP step or a DST change cannot make a session negative or hours long;
* a drop ends the session: a second drop without a success in between reports 0 s, not a growing duration;
* every success path can be recorded (``connected``, ``resumed``, ``rebuilt``, ``deep_reconnected``), so uptime and
  recovery figures stay right after the supervisor's own rebuilds;
* message counters count (published, queued, received, per session, and a 60-second publish rate), because the
  "after many messages" pattern cannot be seen without them;
* every record is also handed to ``on_record`` listeners (the daemon persists them) and history can be restored from
  those records, so metrics span restarts.

The collector does no IO of its own except ``print_summary`` (stdout, as its name promises).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from nwp500d.clock import Clock, SystemClock, iso_utc
from nwp500d.errors import describe_error
from nwp500d.export import format_export
from nwp500d.model import (
    SUCCESS_EVENT_TYPES,
    ConnectionDropEvent,
    ConnectionEvent,
    MqttMetrics,
    RecordError,
    attempt_bucket,
    validate_completion,
)
from nwp500d.redact import Redactor
from nwp500d.summary import format_summary

SCHEMA_VERSION = 1
EXPORT_RECENT_LIMIT = 100
SAMPLE_DURATIONS = 20
PUBLISH_RATE_WINDOW_SECS = 60

_log = logging.getLogger("nwp500d.diagnostics")

DropListener = Callable[[ConnectionDropEvent], Awaitable[None] | None]
RecordListener = Callable[[dict[str, Any]], object]


_ID_PREFIX = os.urandom(5).hex()
_ID_COUNTER = itertools.count(1)


def _new_id() -> str:
    """Unique across processes (random prefix) and cheap within one (a counter): ids are made on every record."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):06x}"


class MqttDiagnosticsCollector:
    def __init__(
        self,
        max_events_retained: int = 1000,
        enable_verbose_logging: bool = False,
        *,
        clock: Clock | None = None,
        redactor: Redactor | None = None,
        daemon_info: Mapping[str, Any] | None = None,
    ) -> None:
        if max_events_retained < 1:
            raise ValueError(f"max_events_retained must be at least 1, got {max_events_retained}")
        self.max_events_retained = max_events_retained
        self.enable_verbose_logging = enable_verbose_logging
        self.redactor = redactor or Redactor()
        self.daemon_info: dict[str, Any] | None = dict(daemon_info) if daemon_info else None
        self.verdict: dict[str, Any] | None = None
        self._clock = clock or SystemClock()
        self._monotonic = self._clock.monotonic
        self._drops: deque[ConnectionDropEvent] = deque(maxlen=max_events_retained)
        self._connections: deque[ConnectionEvent] = deque(maxlen=max_events_retained)
        self._metrics = MqttMetrics()
        self._error_counts: dict[str, int] = {}
        self._session_count = 0
        self._session_total_seconds = 0.0
        self._sample_durations: deque[float] = deque(maxlen=SAMPLE_DURATIONS)
        self._session_id: str | None = None
        self._session_started: float | None = None
        self._last_drop_at: float | None = None
        self._last_activity_at: float | None = None
        self._session_published = 0
        self._session_received = 0
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._drop_listeners: list[DropListener] = []
        self._record_listeners: list[RecordListener] = []

    # ---------------------------------------------------------------- listeners

    def on_connection_drop(self, callback: DropListener) -> None:
        """``callback(event)`` after each drop; it may be a coroutine function. Its errors are logged, not raised."""
        self._drop_listeners.append(callback)

    def on_record(self, callback: RecordListener) -> None:
        """``callback(record)`` for every record worth persisting (what :meth:`restore` takes back)."""
        self._record_listeners.append(callback)

    # ---------------------------------------------------------------- state

    @property
    def is_connected(self) -> bool:
        return self._session_started is not None

    @property
    def session_id(self) -> str | None:
        return self._session_id

    def seconds_since_last_activity(self) -> float | None:
        if self._last_activity_at is None:
            return None
        return self._monotonic() - self._last_activity_at

    # ---------------------------------------------------------------- recording

    async def record_connection_drop(
        self,
        error: BaseException | None = None,
        reconnect_attempt: int = 0,
        active_subscriptions: int = 0,
        queued_commands: int = 0,
        *,
        credentials_age_seconds: float | None = None,
        suspended_seconds: float | None = None,
        keep_alive_secs: int | None = None,
        network: dict[str, Any] | None = None,
    ) -> ConnectionDropEvent:
        now = self._monotonic()
        info = describe_error(error)
        session_id = self._session_id
        duration = 0.0 if self._session_started is None else max(0.0, now - self._session_started)
        idle = None if self._last_activity_at is None else max(0.0, now - self._last_activity_at)
        event = ConnectionDropEvent(
            timestamp=iso_utc(self._clock.wall()),
            error_name=info.name,
            error_message=self.redactor.text(info.message) if info.message else None,
            error_code=info.code,
            reconnect_attempt=reconnect_attempt,
            duration_connected_seconds=duration,
            active_subscriptions=active_subscriptions,
            queued_commands=queued_commands,
            drop_id=_new_id(),
            session_id=session_id,
            correlation="pending",
            messages_published_in_session=self._session_published,
            messages_received_in_session=self._session_received,
            publish_rate_60s=self._publish_rate(now),
            seconds_since_last_activity=idle,
            credentials_age_seconds=credentials_age_seconds,
            suspended_seconds=suspended_seconds,
            keep_alive_secs=keep_alive_secs,
            network=self.redactor.value(network) if network else None,
        )
        self._apply_drop(event)
        self._last_drop_at = now
        self._end_session()
        if self.enable_verbose_logging:
            _log.warning(
                "connection drop recorded: error=%s session=%.1fs attempt=%d subscriptions=%d queued=%d",
                event.error_name, duration, reconnect_attempt, active_subscriptions, queued_commands,
            )
        if self._record_listeners:
            self._emit({"kind": "drop", **event.to_dict()})
        for listener in list(self._drop_listeners):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others or the daemon
                _log.exception("drop listener %r failed", listener)
        return event

    async def record_connection_success(
        self,
        event_type: str = "connected",
        session_present: bool = False,
        return_code: int | None = None,
        attempt_number: int = 0,
        *,
        credentials_age_seconds: float | None = None,
    ) -> ConnectionEvent:
        if event_type == "initial":  # what Home Assistant's integration sends for its first connect
            event_type = "connected"
        if event_type not in SUCCESS_EVENT_TYPES:
            raise ValueError(f"event_type must be one of {', '.join(SUCCESS_EVENT_TYPES)}; got {event_type!r}")
        now = self._monotonic()
        if self._session_started is not None:
            # A success while a session is open means its end was never reported; close it without a duration
            # rather than let the old session swallow the new one.
            self._fold_session_messages()
            self._end_session()
        to_reconnect = None if self._last_drop_at is None else max(0.0, now - self._last_drop_at)
        self._session_id = _new_id()
        event = ConnectionEvent(
            timestamp=iso_utc(self._clock.wall()),
            event_type=event_type,
            session_present=bool(session_present),
            return_code=return_code,
            attempt_number=attempt_number,
            time_to_reconnect_seconds=to_reconnect,
            session_id=self._session_id,
            credentials_age_seconds=credentials_age_seconds,
        )
        self._apply_connection(event)
        self._last_drop_at = None
        self._session_started = now
        self._last_activity_at = now
        self._rate_samples.append((now, 0))
        if self.enable_verbose_logging:
            _log.info(
                "connection success recorded: type=%s session_present=%s attempt=%d time_to_reconnect=%s",
                event_type, session_present, attempt_number,
                "n/a" if to_reconnect is None else f"{to_reconnect:.1f}s",
            )
        if self._record_listeners:
            self._emit({"kind": "connection", **event.to_dict()})
        return event

    def record_disconnect(self) -> None:
        """A deliberate, clean MQTT DISCONNECT (daemon stop). It ends the session without counting as a drop."""
        if self._session_started is None:
            return
        record = {
            "kind": "disconnect",
            "timestamp": iso_utc(self._clock.wall()),
            "session_id": self._session_id,
            "session_seconds": self._monotonic() - self._session_started,
            "messages_published_in_session": self._session_published,
            "messages_received_in_session": self._session_received,
        }
        self._apply_disconnect(record)
        self._end_session()
        self._emit(record)

    def record_reconnect_attempt(
        self, attempt: int, error: BaseException | None = None, *, credentials_age_seconds: float | None = None
    ) -> None:
        """One CONNECT that did not (yet) succeed; ``error`` is why, when it failed."""
        self._metrics.total_reconnect_attempts += 1
        info = describe_error(error)
        self._emit(
            {
                "kind": "attempt",
                "timestamp": iso_utc(self._clock.wall()),
                "attempt": attempt,
                "error_name": info.name,
                "error_code": info.code,
                "credentials_age_seconds": credentials_age_seconds,
            }
        )

    def record_publish(self, queued: bool = False) -> None:
        # Counting only: the clock is read by tick(), not per publish, so this stays as cheap as a bare counter.
        if queued:
            self._metrics.messages_queued += 1
        else:
            self._session_published += 1

    def tick(self) -> None:
        """Sample the publish counter; the daemon calls this about once a second.

        Drops report ``publish_rate_60s`` from these samples (the "after many messages" pattern needs it); a collector
        that is never ticked reports the rate only for sessions younger than about a minute, and null after that.
        """
        if self._session_started is None:
            return
        now = self._monotonic()
        samples = self._rate_samples
        samples.append((now, self._session_published))
        # Keep exactly one sample at or before the window's start, so the rate always spans a full window.
        while len(samples) > 1 and samples[1][0] <= now - PUBLISH_RATE_WINDOW_SECS:
            samples.popleft()

    def record_message_received(self) -> None:
        self._session_received += 1
        self._last_activity_at = self._monotonic()

    def record_activity(self) -> None:
        """Any sign of life from the broker (an ack, a PINGRESP seen in the CRT log): the link was good then."""
        self._last_activity_at = self._monotonic()

    def complete_drop(
        self,
        drop_id: str,
        *,
        correlation: str,
        host_events: list[dict[str, Any]] | None = None,
        cause: str | None = None,
        subcause: str | None = None,
        network: dict[str, Any] | None = None,
    ) -> bool:
        """Attach what was learned once the drop's journal window closed. False if the drop is no longer retained."""
        record = {
            "kind": "drop_completed",
            "timestamp": iso_utc(self._clock.wall()),
            "drop_id": drop_id,
            "correlation": correlation,
            "host_events": self.redactor.value(host_events) if host_events else host_events,
            "cause": cause,
            "subcause": subcause,
            "network": self.redactor.value(network) if network else None,
        }
        found = self._apply_completion(record)
        self._emit(record)
        return found

    # ---------------------------------------------------------------- reading

    async def update_metrics(self) -> None:
        self._metrics.current_session_uptime_seconds = self._uptime()

    def get_metrics(self) -> MqttMetrics:
        """A snapshot: later records do not change the returned object."""
        metrics = self._metrics
        return MqttMetrics(
            total_connections=metrics.total_connections,
            total_disconnects=metrics.total_disconnects,
            total_connection_drops=metrics.total_connection_drops,
            total_reconnect_attempts=metrics.total_reconnect_attempts,
            longest_session_seconds=metrics.longest_session_seconds,
            shortest_session_seconds=metrics.shortest_session_seconds,
            average_session_seconds=(
                self._session_total_seconds / self._session_count if self._session_count else 0.0
            ),
            current_session_uptime_seconds=self._uptime(),
            connection_drops_by_error=dict(metrics.connection_drops_by_error),
            reconnection_attempts_distribution=dict(metrics.reconnection_attempts_distribution),
            last_drop_timestamp=metrics.last_drop_timestamp,
            last_successful_connect_timestamp=metrics.last_successful_connect_timestamp,
            connection_recovered=metrics.connection_recovered,
            messages_published=metrics.messages_published + self._session_published,
            messages_queued=metrics.messages_queued,
            messages_received=metrics.messages_received + self._session_received,
        )

    def get_recent_drops(self, limit: int = 10) -> list[ConnectionDropEvent]:
        return _tail(self._drops, limit)

    def get_recent_connections(self, limit: int = 10) -> list[ConnectionEvent]:
        return _tail(self._connections, limit)

    def export_dict(self, recent_limit: int = EXPORT_RECENT_LIMIT) -> dict[str, Any]:
        """The export as data, redacted. Keys are the guide's plus ``schema_version``, ``daemon`` and ``verdict``."""
        data = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": iso_utc(self._clock.wall()),
            "daemon": self.daemon_info,
            "metrics": self.get_metrics().to_dict(),
            "recent_drops": [event.to_dict() for event in _tail(self._drops, recent_limit)],
            "recent_connections": [event.to_dict() for event in _tail(self._connections, recent_limit)],
            "aws_error_counts": dict(self._error_counts),
            "session_history_summary": {
                "total_sessions": self._session_count,
                "sample_durations": list(self._sample_durations),
            },
            "verdict": self.verdict,
        }
        # Recorded strings were scrubbed when they came in (so the event log is clean too); what is added here is not.
        data["daemon"] = self.redactor.value(self.daemon_info)
        data["verdict"] = self.redactor.value(self.verdict)
        return data

    def export_json(self) -> str:
        return format_export(self.export_dict())

    def summary_text(self) -> str:
        return format_summary(
            self.get_metrics(), self.get_recent_drops(5), self._session_count, dict(self._error_counts)
        )

    def print_summary(self) -> None:
        text = self.summary_text()
        print(text, flush=True)
        _log.info("diagnostics summary:\n%s", text)

    # ---------------------------------------------------------------- history

    def restore(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild history from persisted records (oldest first). Returns how many were applied.

        Records of unknown kinds are skipped, so a newer daemon's files do not stop an older one from starting.
        """
        applied = 0
        for index, record in enumerate(records):
            kind = record.get("kind")
            where = f"record {index + 1} ({kind})"
            if kind == "drop":
                self._apply_drop(ConnectionDropEvent.from_dict(dict(record), where))
            elif kind == "connection":
                self._apply_connection(ConnectionEvent.from_dict(dict(record), where))
            elif kind == "disconnect":
                self._apply_disconnect(record)
            elif kind == "attempt":
                self._metrics.total_reconnect_attempts += 1
            elif kind == "drop_completed":
                self._apply_completion(record)
            else:
                continue
            applied += 1
        return applied

    # ---------------------------------------------------------------- internals

    def _apply_drop(self, event: ConnectionDropEvent) -> None:
        metrics = self._metrics
        metrics.total_connection_drops += 1
        metrics.last_drop_timestamp = event.timestamp
        metrics.messages_published += event.messages_published_in_session
        metrics.messages_received += event.messages_received_in_session
        if event.error_name:
            self._error_counts[event.error_name] = self._error_counts.get(event.error_name, 0) + 1
            by_error = metrics.connection_drops_by_error
            by_error[event.error_name] = by_error.get(event.error_name, 0) + 1
        duration = event.duration_connected_seconds
        if event.session_id is not None and duration is not None and math.isfinite(duration):
            self._session_count += 1
            self._session_total_seconds += duration
            self._sample_durations.append(duration)
            metrics.longest_session_seconds = max(metrics.longest_session_seconds, duration)
            metrics.shortest_session_seconds = min(metrics.shortest_session_seconds, duration)
        self._drops.append(event)

    def _apply_connection(self, event: ConnectionEvent) -> None:
        metrics = self._metrics
        metrics.total_connections += 1
        metrics.last_successful_connect_timestamp = event.timestamp
        if event.event_type != "connected":
            metrics.connection_recovered += 1
            bucket = attempt_bucket(event.attempt_number)
            distribution = metrics.reconnection_attempts_distribution
            distribution[bucket] = distribution.get(bucket, 0) + 1
        self._connections.append(event)

    def _apply_completion(self, record: Mapping[str, Any]) -> bool:
        drop_id = record.get("drop_id")
        validate_completion(record)
        for event in reversed(self._drops):
            if event.drop_id == drop_id:
                event.correlation = record.get("correlation")
                event.host_events = record.get("host_events")
                event.cause = record.get("cause")
                event.subcause = record.get("subcause")
                extra = record.get("network")
                if isinstance(extra, dict) and extra:
                    event.network = {**(event.network or {}), **extra}
                return True
        return False

    def _apply_disconnect(self, record: Mapping[str, Any]) -> None:
        self._metrics.total_disconnects += 1
        self._metrics.messages_published += _count(record, "messages_published_in_session")
        self._metrics.messages_received += _count(record, "messages_received_in_session")

    def _fold_session_messages(self) -> None:
        self._metrics.messages_published += self._session_published
        self._metrics.messages_received += self._session_received

    def _end_session(self) -> None:
        self._session_published = self._session_received = 0
        self._session_started = None
        self._session_id = None
        self._rate_samples.clear()

    def _publish_rate(self, now: float) -> float | None:
        if not self._rate_samples:
            return None
        since, count = self._rate_samples[0]
        elapsed = now - since
        if elapsed > PUBLISH_RATE_WINDOW_SECS * 1.5:
            return None  # not ticked for a long while: no honest one-minute figure
        return round((self._session_published - count) / max(elapsed, 1.0), 3)

    def _uptime(self) -> float:
        return 0.0 if self._session_started is None else self._monotonic() - self._session_started

    def _emit(self, record: dict[str, Any]) -> None:
        for listener in list(self._record_listeners):
            try:
                listener(record)
            except Exception:  # noqa: BLE001 - persistence trouble is reported by the store, not raised here
                _log.exception("record listener %r failed", listener)


def _tail(items: deque[Any], limit: int) -> list[Any]:
    if limit <= 0:
        return []
    return list(itertools.islice(items, max(0, len(items) - limit), None))


def _count(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{key} must be a non-negative integer, got {value!r:.60}")
    return value
