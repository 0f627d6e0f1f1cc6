"""Which journal window belongs to a drop, and how its host events read in one line (pure).

The window starts at the last moment the link was known to be good, not at detection: a laptop lid closed at 02:00
and opened at 06:00 produces a drop noticed at 06:01, and only a window reaching back to 02:00 holds the
"Entering sleep state" line that explains it. The idle time before detection is measured on the monotonic clock,
which stands still during suspend, so the suspended time (from CLOCK_BOOTTIME - CLOCK_MONOTONIC) is added back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from nwp500d.model import HostEvent

SUMMARY_LIMIT = 3


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    last_good: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


def drop_window(
    detected: datetime,
    *,
    seconds_since_last_activity: float | None,
    suspended_seconds: float | None,
    keep_alive_secs: float | None,
    ping_timeout_secs: float,
    before_secs: float,
    after_secs: float,
) -> Window:
    if seconds_since_last_activity is not None:
        idle = seconds_since_last_activity
    else:
        # Unknown: a dead link is noticed at most keep-alive + ping timeout after the last good exchange.
        idle = (keep_alive_secs or 0.0) + ping_timeout_secs
    last_good = detected - timedelta(seconds=max(0.0, idle) + max(0.0, suspended_seconds or 0.0))
    return Window(last_good - timedelta(seconds=before_secs), detected + timedelta(seconds=after_secs), last_good)


def summarize(events: Sequence[HostEvent]) -> str:
    """``suspend: suspend, resume · wifi: wlan0 disconnected x2 · network_manager: …`` (most telling first)."""
    if not events:
        return "no host events in the window"
    order = ("suspend", "link", "wifi", "network_manager", "dhcp", "time", "dns", "cron")
    by_category: dict[str, Counter[str]] = {}
    for event in events:
        label = f"{event.interface} {event.kind}" if event.interface else event.kind
        by_category.setdefault(event.category, Counter())[label] += 1
    parts = []
    for category in sorted(by_category, key=lambda c: order.index(c) if c in order else len(order)):
        common = by_category[category].most_common(SUMMARY_LIMIT)
        labels = [f"{label} x{n}" if n > 1 else label for label, n in common]
        parts.append(f"{category}: {', '.join(labels)}")
    return " · ".join(parts)
