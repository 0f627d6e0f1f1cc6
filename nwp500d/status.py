"""The one-line state people read in ``systemctl status nwp500d`` (pure): state, uptime, drops/24h, last error."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from nwp500d.clock import parse_iso_utc
from nwp500d.summary import format_duration

# First guesses per error, until a classified verdict exists for the drop (the classifier refines these).
_HINTS = (
    ("AWS_ERROR_MQTT_TIMEOUT", "no answer to keep-alive: network, NAT or Wi-Fi"),
    ("AWS_ERROR_MQTT_UNEXPECTED_HANGUP", "server hung up: limit, policy or duplicate client id"),
    ("AWS_IO_SOCKET_CLOSED", "closed by the server or the network"),
    ("AWS_IO_SOCKET_TIMEOUT", "network unreachable"),
    ("AWS_IO_SOCKET_CONNECTION_REFUSED", "endpoint refused the connection"),
    ("AWS_IO_SOCKET_NO_ROUTE_TO_HOST", "no route: network down"),
    ("AWS_IO_SOCKET_NETWORK_DOWN", "network down"),
    ("AWS_IO_DNS", "DNS failure"),
    ("AWS_IO_TLS", "TLS failure: clock, proxy or certificates"),
    ("AWS_ERROR_HTTP_WEBSOCKET_UPGRADE_FAILURE", "WebSocket upgrade refused: stale credentials?"),
    ("NWP500D_CONNECT_DEADLINE", "connect stalled"),
    ("NWP500D_DEVICE_DEAF", "connected but no replies"),
    ("NAVILINK_", "NaviLink API unavailable"),
)


def likely_cause(error_name: str | None) -> str | None:
    if not error_name:
        return None
    for prefix, hint in _HINTS:
        if error_name.startswith(prefix):
            return hint
    return None


def drops_within(timestamps: Iterable[str], now: datetime, window: timedelta = timedelta(hours=24)) -> int:
    count = 0
    for stamp in timestamps:
        try:
            if now - parse_iso_utc(stamp) <= window:
                count += 1
        except ValueError:
            continue
    return count


def status_line(
    *,
    state: str,
    state_seconds: float | None,
    drops_24h: int,
    last_error: str | None,
    cause: str | None = None,
) -> str:
    """``connected 3h12m · 4 drops/24h · last: AWS_ERROR_MQTT_TIMEOUT (no answer to keep-alive: …)``."""
    head = state if state_seconds is None else f"{state} {format_duration(state_seconds)}"
    parts = [head, f"{drops_24h} drop{'s' if drops_24h != 1 else ''}/24h"]
    if last_error:
        why = cause or likely_cause(last_error)
        parts.append(f"last: {last_error}" + (f" ({why})" if why else ""))
    return " · ".join(parts)
