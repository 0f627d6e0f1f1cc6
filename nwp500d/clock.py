"""Time sources. Durations come from a monotonic clock, timestamps are UTC ISO-8601 with ``Z``.

A clock is injected wherever time matters so that pure logic can be tested with a fake clock instead of sleeps.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
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
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def suspend_offset() -> float:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC: grows by exactly the time the machine spent suspended.

    Read at two moments, the difference is the suspended time between them, known without the journal.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
