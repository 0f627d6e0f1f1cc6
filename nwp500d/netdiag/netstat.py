"""Kernel TCP counters from /proc/net/snmp and /proc/net/netstat (pure parsing and arithmetic).

They are host-wide (every TCP connection on the machine), so they are evidence about the path and the host, not
about our one socket: a burst of retransmissions and timeouts around a drop says "packet loss", resets say "a
middlebox or the server closed it", attempt failures during the outage say "unreachable".
"""

from __future__ import annotations

from collections.abc import Mapping

COUNTERS = (
    "Tcp.RetransSegs",
    "Tcp.OutRsts",
    "Tcp.EstabResets",
    "Tcp.AttemptFails",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TCPAbortOnTimeout",
)

Counters = dict[str, int]


def parse_counters(*texts: str) -> Counters:
    """``Proto: name name …`` followed by ``Proto: value value …``, as both files write them; junk is skipped."""
    counters: Counters = {}
    for text in texts:
        lines = text.splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            proto, _, names = header.partition(":")
            proto_values, _, numbers = values.partition(":")
            if proto != proto_values:
                continue
            for name, number in zip(names.split(), numbers.split(), strict=False):
                try:
                    counters[f"{proto}.{name}"] = int(number)
                except ValueError:
                    continue
    return counters


def delta(before: Mapping[str, int], after: Mapping[str, int], keys: tuple[str, ...] = COUNTERS) -> dict[str, int]:
    """``after - before`` for ``keys`` (short names, e.g. ``RetransSegs``); a counter that went backwards (wrap,
    namespace change) reads 0 rather than a large negative number."""
    out = {}
    for key in keys:
        if key in before and key in after:
            out[key.split(".", 1)[1]] = max(0, after[key] - before[key])
    return out
