"""Test doubles for what cannot be real in a unit test: time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """Monotonic and wall time that move only when told to, independently (to model NTP steps and DST)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.mono = 1000.0
        self.now = start or datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.now += timedelta(seconds=seconds)

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP step, manual change); the monotonic clock does not."""
        self.now += timedelta(seconds=seconds)


class CrtLikeError(Exception):
    """Shaped like awscrt.exceptions.AwsCrtError: name, code and message attributes."""

    def __init__(self, name: str, code: int, message: str = "") -> None:
        super().__init__(message or name)
        self.name = name
        self.code = code
        self.message = message or name
