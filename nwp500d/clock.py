"""Time sources. Durations come from a monotonic clock, timestamps are UTC ISO-8601 with ``Z``.

A clock is injected wherever time matters so that pure logic can be tested with a fake clock instead of sleeps.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (durations, rates)."""
        ...

    def wall(self) -> datetime:
        """Timezone-aware UTC wall time (timestamps people read)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """``2026-11-21T10:30:00.123Z``: millisecond precision is enough to order drops and host events."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_iso_utc(text: str) -> datetime:
    """Inverse of :func:`iso_utc`; also accepts ``+00:00`` offsets and naive values (taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+01:00": outside what datetime can hold in UTC
        raise ValueError(f"timestamp {text[:40]!r} is out of range") from None


def suspend_offset() -> float:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC: grows by exactly the time the machine spent suspended.

    Read at two moments, the difference is the suspended time between them, known without the journal.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a span back from now (``90m``, ``24h``, ``7d``, ``2w``) or an ISO date/time (UTC if no zone)."""
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        return parse_iso_utc(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a span like 24h, 7d, 90m or an ISO date/time") from None
