"""``nwp500d analyze``: re-correlate an exported diagnostics file with a journal, offline.

Accepts any export with the guide's keys, including one written by the nwp500 library's own collector (which lacks
nwp500d's extension fields: its windows then fall back to keep-alive + ping timeout before detection).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nwp500d.clock import parse_iso_utc
from nwp500d.journal.correlate import Window, drop_window, summarize
from nwp500d.journal.reader import HostEventSource
from nwp500d.model import ConnectionDropEvent, HostEvent, RecordError
from nwp500d.summary import format_duration

ANALYZE_SCHEMA_VERSION = 1
DEFAULT_PING_TIMEOUT_SECS = 10.0
DEFAULT_KEEP_ALIVE_SECS = 1200  # the SDK's and upstream library's default, for exports that do not say


class ExportError(ValueError):
    """The export cannot be used; one line naming the file and what is wrong."""


@dataclass
class AnalyzedDrop:
    drop: ConnectionDropEvent
    window: Window | None
    host_events: list[dict[str, Any]] = field(default_factory=list)
    correlation: str = "none"


def load_export(path: Path) -> tuple[dict[str, Any], list[ConnectionDropEvent]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # an absurdly long number, or nesting deeper than Python recurses
        raise ExportError(f"{path}: not usable JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object with the keys 'metrics' and 'recent_drops'")
    missing = [key for key in ("metrics", "recent_drops") if key not in data]
    if missing:
        raise ExportError(f"{path}: not a diagnostics export: missing {', '.join(missing)}")
    if not isinstance(data["recent_drops"], list):
        raise ExportError(f"{path}: recent_drops must be a list")
    drops = []
    for index, raw in enumerate(data["recent_drops"]):
        try:
            drop = ConnectionDropEvent.from_dict(raw, f"recent_drops[{index}]")
            parse_iso_utc(drop.timestamp)
        except (RecordError, ValueError) as exc:
            raise ExportError(f"{path}: {exc}") from None
        drops.append(drop)
    return data, drops


def analyze(
    data: dict[str, Any], drops: list[ConnectionDropEvent], source: HostEventSource | None, *,
    before_secs: float = 120.0, after_secs: float = 30.0,
) -> list[AnalyzedDrop]:
    daemon = data.get("daemon")
    config = daemon.get("config") if isinstance(daemon, dict) else None
    if not isinstance(config, dict):
        config = {}
    ping = _seconds(config.get("ping_timeout_secs"), DEFAULT_PING_TIMEOUT_SECS)
    keep_alive_default = _seconds(config.get("keep_alive_secs"), DEFAULT_KEEP_ALIVE_SECS)
    analyzed = []
    for drop in drops:
        window = drop_window(
            parse_iso_utc(drop.timestamp),
            seconds_since_last_activity=drop.seconds_since_last_activity,
            suspended_seconds=drop.suspended_seconds,
            keep_alive_secs=drop.keep_alive_secs or keep_alive_default,
            ping_timeout_secs=ping,
            before_secs=before_secs,
            after_secs=after_secs,
        )
        if source is not None:
            events = [event.to_dict() for event in source.window(window.start, window.end)]
            analyzed.append(AnalyzedDrop(drop, window, events, "done"))
        else:
            analyzed.append(AnalyzedDrop(drop, window, list(drop.host_events or []), drop.correlation or "none"))
    return analyzed


def _seconds(value: Any, default: float) -> float:
    """An export's own settings are untrusted input: anything but a sane number means the default."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e6:
        return float(value)
    return default


def to_json(analyzed: list[AnalyzedDrop]) -> dict[str, Any]:
    return {
        "schema_version": ANALYZE_SCHEMA_VERSION,
        "drops": [
            {
                "timestamp": item.drop.timestamp,
                "error_name": item.drop.error_name,
                "duration_connected_seconds": item.drop.duration_connected_seconds,
                "window": None if item.window is None else {
                    "start": item.window.start.isoformat().replace("+00:00", "Z"),
                    "end": item.window.end.isoformat().replace("+00:00", "Z"),
                },
                "correlation": item.correlation,
                "host_events": item.host_events,
            }
            for item in analyzed
        ],
    }


def to_text(analyzed: list[AnalyzedDrop]) -> str:
    if not analyzed:
        return "no drops in this export"
    lines = []
    for item in analyzed:
        drop = item.drop
        head = (f"{drop.timestamp}  {drop.error_name or 'unknown error'}"
                f"  after {format_duration(drop.duration_connected_seconds)}")
        if item.window is not None:
            head += f"  (window {item.window.start:%Y-%m-%d %H:%M:%S} … {item.window.end:%H:%M:%S} UTC)"
        lines.append(head)
        events = [_event(raw) for raw in item.host_events]
        known = [event for event in events if event is not None]
        if item.correlation in ("unavailable", "disabled"):
            lines.append(f"    host events: {item.correlation} when this drop was recorded")
        elif not known:
            lines.append("    no host events in the window")
        else:
            lines.append(f"    {summarize(known)}")
            for event in known:
                where = f" {event.interface}" if event.interface else ""
                lines.append(f"    {event.time[11:19]}  {event.category:<15} {event.kind}{where}: {event.message}")
    return "\n".join(lines)


def _event(raw: Any) -> HostEvent | None:
    if not isinstance(raw, dict):
        return None
    try:
        return HostEvent(
            time=str(raw["time"]), category=str(raw["category"]), kind=str(raw["kind"]),
            message=str(raw.get("message", "")), unit=raw.get("unit"), interface=raw.get("interface"),
            fields={str(k): str(v) for k, v in (raw.get("fields") or {}).items()},
        )
    except (KeyError, TypeError, AttributeError):
        return None
