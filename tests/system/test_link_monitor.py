"""LinkMonitor against a real kernel, in throw-away network namespaces (root only).

Why namespaces: the monitor must see a link go down, a route vanish and addresses come and go, and none of that may
happen to the machine running the tests. Each test gets its own pair of namespaces joined by a veth (``eth0`` in
the monitor's namespace, ``lan0`` in the peer's, the reference lab's client/router layout), with random names so
parallel runs never meet, and both are deleted in the fixture's ``finally`` whatever the test did. The monitor runs
as a subprocess inside the namespace (``ip netns exec``), so no test process ever changes its own namespace, and
reports each event as a JSON line; the tests wait for those lines under a deadline instead of sleeping.

Two kernel behaviours are checked on purpose: an admin-down interface loses its IPv4 default route without any
RTM_DELROUTE (the monitor has to notice anyway), and a peer-side (cable pulled) carrier loss keeps the route.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
EVENT_TIMEOUT = 5.0
READY_TIMEOUT = 15.0
CLIENT_ADDRESS, GATEWAY = "198.51.100.2", "198.51.100.1"  # TEST-NET-2, as in the reference lab

if os.geteuid() != 0:
    pytest.skip("needs root: creates network namespaces and veth pairs", allow_module_level=True)
if shutil.which("ip") is None:
    pytest.skip("iproute2 (`ip`) is not installed", allow_module_level=True)

# Runs inside the namespace. It stops when the test closes its stdin, so the test never has to signal it.
PROBE = """
import asyncio, json, os, sys
from nwp500d.netdiag.link import LinkMonitor, describe

def line(**fields):
    sys.stdout.write(json.dumps(fields) + "\\n")
    sys.stdout.flush()

async def main():
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    monitor = None
    def on_event(event):
        line(**event.to_dict(), text=describe(event), back=monitor.network_is_back(event),
             default=list(monitor.default_route_interfaces), carrier=monitor.carrier)
    monitor = LinkMonitor(on_event)
    monitor.start(loop)
    loop.add_reader(0, lambda: os.read(0, 4096) or closed.set())
    await monitor.wait_ready()
    line(kind="ready", default=list(monitor.default_route_interfaces), carrier=monitor.carrier)
    await closed.wait()
    monitor.stop()

asyncio.run(main())
"""


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class Lab:
    client: str  # the monitor's namespace
    peer: str


@pytest.fixture
def lab() -> Iterator[Lab]:
    suffix = secrets.token_hex(3)
    names = Lab(client=f"nwlm{suffix}-c", peer=f"nwlm{suffix}-p")
    created: list[str] = []
    try:
        for name in (names.client, names.peer):
            result = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10,
                                    check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {result.stderr.strip()}")
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        # Created inside the namespaces: no interface ever appears in the root namespace.
        ip("-n", names.client, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", names.peer)
        ip("-n", names.client, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "eth0")
        ip("-n", names.peer, "addr", "add", f"{GATEWAY}/24", "dev", "lan0")
        ip("-n", names.client, "link", "set", "eth0", "up")
        ip("-n", names.peer, "link", "set", "lan0", "up")
        ip("-n", names.client, "route", "add", "default", "via", GATEWAY)
        yield names
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


@dataclass
class Monitor:
    """The probe's output as a stream of parsed lines, read with deadlines."""

    process: subprocess.Popen[bytes]
    stderr_path: Path
    seen: list[dict[str, Any]] = field(default_factory=list)
    _buffer: bytes = b""
    _eof: bool = False
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT,
              what: str = "a matching event") -> list[dict[str, Any]]:
        """Every line up to and including the first that matches; fails (with all lines so far) at the deadline."""
        window: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                line = json.loads(raw)
                line["received"] = time.monotonic()
                self.seen.append(line)
                window.append(line)
                if predicate(line):
                    return window
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                stderr = self.stderr_path.read_text(errors="replace")[-2000:]
                ended = "the probe exited" if self._eof else f"nothing within {timeout} s"
                raise AssertionError(f"waiting for {what}: {ended}; lines so far: {self.seen}; stderr: {stderr}")
            if self._selector.select(remaining):
                assert self.process.stdout is not None
                chunk = os.read(self.process.stdout.fileno(), 65536)
                self._eof = not chunk
                self._buffer += chunk

    def close(self) -> None:
        self._selector.close()


def event(kind: str, interface: str | None = None, **detail: str) -> Callable[[dict[str, Any]], bool]:
    def matches(line: dict[str, Any]) -> bool:
        if line.get("kind") != kind or (interface is not None and line.get("interface") != interface):
            return False
        return all(line.get("detail", {}).get(key) == value for key, value in detail.items())

    return matches


@pytest.fixture
def monitor(lab: Lab, tmp_path: Path) -> Iterator[Monitor]:
    stderr_path = tmp_path / "probe.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            ["ip", "netns", "exec", lab.client, sys.executable, "-c", PROBE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO,
        )
    stream = Monitor(process, stderr_path)
    try:
        ready = stream.until(event("ready"), READY_TIMEOUT, "ready line")[-1]
        assert ready["default"] == ["eth0"]
        assert ready["carrier"] == {"eth0": True}
        yield stream
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()  # the probe stops on EOF
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()  # only this probe, by its own pid
            process.wait(timeout=5)
        process.stdout.close()
        stream.close()


def latency_ms(line: dict[str, Any], started: float) -> float:
    """From just before the `ip` command to the monitor's handling of the event (same CLOCK_MONOTONIC)."""
    return round((float(line["monotonic"]) - started) * 1000, 1)


def test_admin_down_reports_carrier_and_the_silently_flushed_route(lab: Lab, monitor: Monitor) -> None:
    started = time.monotonic()
    ip("-n", lab.client, "link", "set", "eth0", "down")
    window = monitor.until(event("default_route_lost", "eth0"), what="default_route_lost")
    down = [line for line in window if line["kind"] == "carrier_down"]
    assert [line["interface"] for line in down] == ["eth0"]
    assert down[0]["detail"]["admin"] == "down" and not down[0]["back"]
    lost = window[-1]
    assert lost["detail"] == {"old_interface": "eth0", "old_gateway": GATEWAY}
    assert lost["default"] == [] and lost["carrier"] == {"eth0": False}
    print(f"admin down: carrier_down {latency_ms(down[0], started)} ms, "
          f"default_route_lost {latency_ms(lost, started)} ms")

    started = time.monotonic()
    ip("-n", lab.client, "link", "set", "eth0", "up")
    up = monitor.until(event("carrier_up", "eth0"), what="carrier_up")[-1]
    assert up["back"], "eth0 carried the last default route, so its carrier coming back is news"
    print(f"admin up: carrier_up {latency_ms(up, started)} ms")

    started = time.monotonic()
    ip("-n", lab.client, "route", "replace", "default", "via", GATEWAY)  # what a DHCP client would redo
    gained = monitor.until(event("default_route_gained", "eth0"), what="default_route_gained")[-1]
    assert gained["detail"] == {"new_interface": "eth0", "new_gateway": GATEWAY}
    assert gained["back"] and gained["default"] == ["eth0"]
    print(f"route back: default_route_gained {latency_ms(gained, started)} ms")


def test_peer_side_carrier_loss_keeps_the_route_and_is_reported_once(lab: Lab, monitor: Monitor) -> None:
    started = time.monotonic()
    ip("-n", lab.peer, "link", "set", "lan0", "down")
    down = monitor.until(event("carrier_down", "eth0"), what="carrier_down")[-1]
    assert down["detail"]["admin"] == "up"
    assert down["default"] == ["eth0"], "a lost carrier alone does not remove the route"
    print(f"peer down: carrier_down {latency_ms(down, started)} ms")
    # A sentinel change closes the window: the several NEWLINKs the kernel sent must have become one event.
    ip("-n", lab.client, "addr", "add", "192.0.2.77/32", "dev", "eth0")
    window = monitor.until(event("address_added", "eth0", address="192.0.2.77/32"), what="sentinel address")
    assert not [line for line in window if line["kind"] in ("carrier_down", "carrier_up", "default_route_lost")]

    started = time.monotonic()
    ip("-n", lab.peer, "link", "set", "lan0", "up")
    up = monitor.until(event("carrier_up", "eth0"), what="carrier_up")[-1]
    assert up["back"] and up["default"] == ["eth0"]
    print(f"peer up: carrier_up {latency_ms(up, started)} ms")
    ip("-n", lab.client, "addr", "del", "192.0.2.77/32", "dev", "eth0")
    window = monitor.until(event("address_removed", "eth0", address="192.0.2.77/32"), what="sentinel removal")
    assert not [line for line in window if line["kind"].startswith("carrier")]


def test_addresses_added_and_removed(lab: Lab, monitor: Monitor) -> None:
    for family, address in (("inet", "192.0.2.7/24"), ("inet6", "2001:db8::7/64")):
        started = time.monotonic()
        extra = ["nodad"] if family == "inet6" else []  # skip duplicate-address detection: no one else is here
        ip("-n", lab.client, "addr", "add", address, "dev", "eth0", *extra)
        added = monitor.until(event("address_added", "eth0", address=address), what=f"{address} added")[-1]
        assert added["detail"]["family"] == family
        assert added["back"], "an address on the default-route interface counts as the network coming back"
        ip("-n", lab.client, "addr", "del", address, "dev", "eth0")
        removed = monitor.until(event("address_removed", "eth0", address=address), what=f"{address} removed")[-1]
        assert not removed["back"]
        print(f"{family}: address_added {latency_ms(added, started)} ms, removed {latency_ms(removed, started)} ms")


def test_default_route_moving_to_another_interface(lab: Lab, monitor: Monitor) -> None:
    ip("-n", lab.client, "link", "add", "eth1", "type", "veth", "peer", "name", "lan1", "netns", lab.peer)
    ip("-n", lab.client, "addr", "add", "203.0.113.2/24", "dev", "eth1")
    ip("-n", lab.peer, "addr", "add", "203.0.113.1/24", "dev", "lan1")
    ip("-n", lab.peer, "link", "set", "lan1", "up")
    ip("-n", lab.client, "link", "set", "eth1", "up")
    up = monitor.until(event("carrier_up", "eth1"), what="carrier_up on eth1")[-1]
    assert not up["back"], "eth1 does not carry the default route: no reason to wake the session"

    started = time.monotonic()
    ip("-n", lab.client, "route", "replace", "default", "via", "203.0.113.1", "dev", "eth1")
    changed = monitor.until(event("default_route_changed", "eth1"), what="default_route_changed")[-1]
    assert changed["detail"] == {"old_interface": "eth0", "old_gateway": GATEWAY,
                                 "new_interface": "eth1", "new_gateway": "203.0.113.1"}
    assert changed["text"] == f"default route changed: eth0 via {GATEWAY} -> eth1 via 203.0.113.1"
    assert changed["default"] == ["eth1"]
    print(f"route moved: default_route_changed {latency_ms(changed, started)} ms")
