"""Samples of the kernel TCP counters over time, so a drop can say what changed during its session and its last
minute (the sampling is IO; the arithmetic is in netstat.py)."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from nwp500d.clock import Clock, SystemClock
from nwp500d.netdiag.netstat import Counters, delta, parse_counters

PROC_NET = Path("/proc/net")
WINDOW_SECS = 60.0


def read_counters(proc_net: Path = PROC_NET) -> Counters:
    texts = []
    for name in ("snmp", "netstat"):
        try:
            texts.append((proc_net / name).read_text())
        except OSError:
            continue
    return parse_counters(*texts)


class CounterSampler:
    """Keeps a minute of samples (the daemon's tick takes one every few seconds) and the session's first one."""

    def __init__(self, clock: Clock | None = None, proc_net: Path = PROC_NET) -> None:
        self._clock = clock or SystemClock()
        self._proc_net = proc_net
        self._samples: deque[tuple[float, Counters]] = deque()
        self._session_start: Counters | None = None

    def sample(self) -> None:
        now = self._clock.monotonic()
        self._samples.append((now, read_counters(self._proc_net)))
        while len(self._samples) > 1 and self._samples[1][0] <= now - WINDOW_SECS:
            self._samples.popleft()

    def session_started(self) -> None:
        self._session_start = read_counters(self._proc_net)

    def evidence(self) -> dict[str, Any]:
        """What the counters did during the session and over the last minute, for the drop record."""
        now = read_counters(self._proc_net)
        out: dict[str, Any] = {}
        if self._session_start is not None:
            out["netstat_session"] = delta(self._session_start, now)
        if self._samples:
            out["netstat_last_minute"] = delta(self._samples[0][1], now)
        return out
