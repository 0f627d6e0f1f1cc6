"""Reconnect pacing, as pure arithmetic on a clock value.

Jittered exponential backoff (full spread between half and all of the step, so a fleet cut by the same AWS-side
event does not reconnect in lockstep), a cap, and a floor that keeps two CONNECTs with one client id at least a
second apart: AWS IoT throttles one client id to one CONNECT per second, and a reconnect loop faster than that
produces the very drops it is recovering from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CONNECT_FLOOR_SECS = 1.0
MAX_STEP = 64  # any cap is reached long before: 1.1 ** 64 > 400


@dataclass
class Backoff:
    initial: float
    cap: float
    multiplier: float = 2.0
    floor: float = CONNECT_FLOOR_SECS
    rng: random.Random = field(default_factory=random.Random)
    step: int = 0
    last_connect_at: float | None = None

    def next_delay(self) -> float:
        """The wait before the next attempt; each call moves one step up the ladder."""
        base = min(self.cap, self.initial * self.multiplier ** min(self.step, MAX_STEP))
        self.step = min(self.step + 1, MAX_STEP)  # hours of outage must not overflow the power
        return min(self.cap, base * self.rng.uniform(0.5, 1.0)) if base > self.floor else base

    def reset(self) -> None:
        """Only after a session proved stable: a flapping link must keep climbing the ladder."""
        self.step = 0

    def floor_wait(self, now: float) -> float:
        """How long to wait before a CONNECT at ``now`` so that two CONNECTs are ``floor`` seconds apart."""
        if self.last_connect_at is None:
            return 0.0
        return max(0.0, self.last_connect_at + self.floor - now)

    def connecting(self, now: float) -> None:
        self.last_connect_at = now
