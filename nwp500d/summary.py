"""The human summary shared by ``print_summary()`` and ``nwp500d report``: short, aligned, no box art."""

from __future__ import annotations

import math
from collections.abc import Sequence

from nwp500d.model import ConnectionDropEvent, MqttMetrics


def format_duration(seconds: float | None) -> str:
    """``3h12m``, ``4m05s``, ``12.3s``: how people read uptimes."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def format_summary(
    metrics: MqttMetrics,
    recent_drops: Sequence[ConnectionDropEvent],
    total_sessions: int,
    error_counts: dict[str, int],
) -> str:
    rows: list[tuple[str, str]] = [
        ("connections", str(metrics.total_connections)),
        ("drops", str(metrics.total_connection_drops)),
        ("recovered", str(metrics.connection_recovered)),
        ("reconnect attempts", str(metrics.total_reconnect_attempts)),
        ("clean disconnects", str(metrics.total_disconnects)),
        ("current uptime", format_duration(metrics.current_session_uptime_seconds)),
    ]
    if total_sessions:
        rows += [
            ("sessions ended by a drop", str(total_sessions)),
            ("session longest", format_duration(metrics.longest_session_seconds)),
            ("session shortest", format_duration(metrics.shortest_session_seconds)),
            ("session average", format_duration(metrics.average_session_seconds)),
        ]
    rows += [
        ("messages published", str(metrics.messages_published)),
        ("messages received", str(metrics.messages_received)),
        ("messages queued", str(metrics.messages_queued)),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["MQTT connection diagnostics"]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    if error_counts:
        lines.append("drops by error")
        for name, count in sorted(error_counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {count:>5}  {name}")
    if metrics.reconnection_attempts_distribution:
        lines.append("attempts needed to recover")
        for bucket in ("1", "2-5", "6-10", "11+"):
            if bucket in metrics.reconnection_attempts_distribution:
                lines.append(f"  {metrics.reconnection_attempts_distribution[bucket]:>5}  {bucket}")
    if recent_drops:
        lines.append("recent drops")
        for drop in recent_drops:
            cause = f"  [{drop.cause}]" if drop.cause else ""
            lines.append(
                f"  {drop.timestamp}  {drop.error_name or 'unknown error'}"
                f"  after {format_duration(drop.duration_connected_seconds)}{cause}"
            )
    return "\n".join(lines)
