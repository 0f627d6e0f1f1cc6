"""Records the daemon keeps: the seed guide's dataclasses, with nwp500d's extension fields.

Field names and ``to_dict`` keys of the guide's three classes are a public contract (exports are read by the guide's
own analysis snippet and by Home Assistant diagnostics); extensions are only ever added, never renamed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

SUCCESS_EVENT_TYPES = ("connected", "resumed", "rebuilt", "deep_reconnected")
"""Every way a session can come up: first connect, CRT resume, supervisor rebuild, rebuild after a full sign-in."""

ATTEMPT_BUCKETS = ("1", "2-5", "6-10", "11+")


def attempt_bucket(attempts: int) -> str:
    if attempts <= 1:
        return "1"
    if attempts <= 5:
        return "2-5"
    if attempts <= 10:
        return "6-10"
    return "11+"


class RecordError(ValueError):
    """A stored or imported record does not have the shape this version understands."""


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    kwargs = {key: value for key, value in data.items() if key in known}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RecordError(f"{where}: {exc}") from None


def _number(value: Any, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or abs(value) > MAX_SECONDS:
        raise RecordError(f"{where}: {key} must be a finite number or null, got {_show(value)}")
    return float(value)


def _optional(value: Any, kind: type, where: str, key: str) -> Any:
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
        raise RecordError(f"{where}: {key} must be {kind.__name__} or null, got {_show(value)}")
    return value


def _timestamp(value: Any, where: str) -> str:
    """Stored and exported timestamps must parse and lie in a sane range (arithmetic on year 9999 overflows)."""
    if not isinstance(value, str):
        raise RecordError(f"{where}: timestamp must be an ISO-8601 string, got {_show(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise RecordError(f"{where}: timestamp {_show(value)} is not ISO-8601") from None
    if not 1970 <= parsed.year <= 2200:
        raise RecordError(f"{where}: timestamp {_show(value)} is outside 1970-2200")
    return value


HOST_EVENT_TEXT_KEYS = ("category", "kind", "unit", "interface", "message")


def _host_events(value: Any, where: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RecordError(f"{where}: host_events must be a list of objects or null")
    for item in value:
        stamp = item.get("time")
        if stamp is not None:
            _timestamp(stamp, f"{where}: host event")
        # The classifier looks these up in tables and compares them: anything but text (or null) is not an event.
        for key in HOST_EVENT_TEXT_KEYS:
            _optional(item.get(key), str, f"{where}: host event", key)
        _optional(item.get("fields"), dict, f"{where}: host event", "fields")
    return value


def validate_completion(record: Any, where: str = "drop_completed") -> None:
    """The second record of a drop: what it may carry, checked before it is merged into the drop."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object")
    for key in ("drop_id", "correlation", "cause", "subcause"):
        _optional(record.get(key), str, where, key)
    _host_events(record.get("host_events"), where)
    _optional(record.get("network"), dict, where, "network")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


MAX_SECONDS = 1e10  # ~300 years: anything larger is corruption, and overflows date arithmetic


_DROP_COUNTERS = (
    "reconnect_attempt",
    "active_subscriptions",
    "queued_commands",
    "messages_published_in_session",
    "messages_received_in_session",
)


@dataclass(slots=True)
class ConnectionDropEvent:
    """One lost session. Recorded at once; ``host_events``/``cause`` are filled when its journal window closes."""

    timestamp: str
    error_name: str | None = None
    error_message: str | None = None
    error_code: int | None = None
    reconnect_attempt: int = 0
    duration_connected_seconds: float | None = None
    active_subscriptions: int = 0
    queued_commands: int = 0
    # nwp500d extensions (DESIGN.md §5); null until the part of the daemon that knows them exists.
    drop_id: str | None = None
    session_id: str | None = None
    cause: str | None = None
    subcause: str | None = None
    correlation: str | None = None
    host_events: list[dict[str, Any]] | None = None
    network: dict[str, Any] | None = None
    messages_published_in_session: int = 0
    messages_received_in_session: int = 0
    publish_rate_60s: float | None = None
    seconds_since_last_activity: float | None = None
    credentials_age_seconds: float | None = None
    suspended_seconds: float | None = None
    keep_alive_secs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _DROP_FIELDS}

    @classmethod
    def from_dict(cls, data: Any, where: str = "drop") -> Self:
        event: Self = _build(cls, data, where)
        _timestamp(event.timestamp, where)
        for key in ("duration_connected_seconds", "publish_rate_60s", "seconds_since_last_activity",
                    "credentials_age_seconds", "suspended_seconds"):
            setattr(event, key, _number(getattr(event, key), where, key))
        for key in ("error_name", "error_message", "drop_id", "session_id", "cause", "subcause", "correlation"):
            _optional(getattr(event, key), str, where, key)
        _optional(event.error_code, int, where, "error_code")
        _optional(event.keep_alive_secs, int, where, "keep_alive_secs")
        _optional(event.network, dict, where, "network")
        event.host_events = _host_events(event.host_events, where)
        for key in _DROP_COUNTERS:
            value = getattr(event, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RecordError(f"{where}: {key} must be a non-negative integer, got {value!r:.60}")
        return event


@dataclass(slots=True)
class ConnectionEvent:
    """One session that came up, by any path (see ``SUCCESS_EVENT_TYPES``)."""

    timestamp: str
    event_type: str = "connected"
    session_present: bool = False
    return_code: int | None = None
    attempt_number: int = 0
    time_to_reconnect_seconds: float | None = None
    session_id: str | None = None
    credentials_age_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONNECTION_FIELDS}

    @classmethod
    def from_dict(cls, data: Any, where: str = "connection") -> Self:
        event: Self = _build(cls, data, where)
        _timestamp(event.timestamp, where)
        for key in ("time_to_reconnect_seconds", "credentials_age_seconds"):
            setattr(event, key, _number(getattr(event, key), where, key))
        if not isinstance(event.event_type, str):
            raise RecordError(f"{where}: event_type must be a string")
        if isinstance(event.attempt_number, bool) or not isinstance(event.attempt_number, int):
            raise RecordError(f"{where}: attempt_number must be an integer, got {_show(event.attempt_number)}")
        _optional(event.return_code, int, where, "return_code")
        _optional(event.session_id, str, where, "session_id")
        return event


_DROP_FIELDS = tuple(f.name for f in fields(ConnectionDropEvent))
_CONNECTION_FIELDS = tuple(f.name for f in fields(ConnectionEvent))


@dataclass(slots=True)
class MqttMetrics:
    """Aggregates over the whole recorded history (which spans daemon restarts)."""

    total_connections: int = 0
    total_disconnects: int = 0
    total_connection_drops: int = 0
    total_reconnect_attempts: int = 0
    longest_session_seconds: float = 0.0
    shortest_session_seconds: float = math.inf
    average_session_seconds: float = 0.0
    current_session_uptime_seconds: float = 0.0
    connection_drops_by_error: dict[str, int] = field(default_factory=dict)
    reconnection_attempts_distribution: dict[str, int] = field(default_factory=dict)
    last_drop_timestamp: str | None = None
    last_successful_connect_timestamp: str | None = None
    connection_recovered: int = 0
    messages_published: int = 0
    messages_queued: int = 0
    messages_received: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _METRIC_FIELDS}
        data["connection_drops_by_error"] = dict(self.connection_drops_by_error)
        data["reconnection_attempts_distribution"] = dict(self.reconnection_attempts_distribution)
        if math.isinf(self.shortest_session_seconds):
            data["shortest_session_seconds"] = None
        return data


_METRIC_FIELDS = tuple(f.name for f in fields(MqttMetrics))


HOST_EVENT_CATEGORIES = ("suspend", "network_manager", "wifi", "dhcp", "link", "cron", "time", "dns")


@dataclass(frozen=True, slots=True)
class HostEvent:
    """One journal entry that matters for a drop, normalised across systemd, NetworkManager and kernel versions.

    ``kind`` is a short stable verb within the category (e.g. ``suspend``/``resume``, ``state_change``,
    ``carrier_lost``, ``lease_renewed``); ``fields`` keeps the few structured details a verdict may quote
    (old/new state, reason, bssid, address), never the raw entry.
    """

    time: str  # UTC ISO-8601 with Z (the entry's __REALTIME_TIMESTAMP)
    category: str
    kind: str
    message: str
    unit: str | None = None
    interface: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "category": self.category, "kind": self.kind, "message": self.message,
                "unit": self.unit, "interface": self.interface, "fields": dict(self.fields)}
