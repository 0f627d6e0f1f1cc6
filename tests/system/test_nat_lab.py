"""The real daemon behind a real NAT: what it records and how it recovers when the path between it and the broker
fails the way home networks fail (root only; the lab is in netns_lab.py).

Each test runs ``python -m nwp500d run`` in a client namespace, idle (no device to poll), so the only packets on
its MQTT connection are the keep-alive pings: every fault below then meets a known sequence of packets, and the
timings are the kernel's and awscrt's own (reference/netns-lab.md measured them to about 10 ms). The session's
progress is followed through the daemon's log lines as they are written; what it recorded is read back from its
state directory (event log, ``nwp500d report --format json``).

K = keep-alive 30 s (the configuration's floor), P = ping timeout 5 s; an idle session sends its PINGREQ K after
its last packet, and a lost ping is reported as AWS_ERROR_MQTT_TIMEOUT P later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.netns_lab import MQTT_PORT, DaemonOptions, Lab, LabDaemon, LabSet, lab_problem, lab_set

pytestmark = [pytest.mark.root]

if (_reason := lab_problem()) is not None:
    pytest.skip(_reason, allow_module_level=True)

K = 30
P = 5.0
UP_TIMEOUT = 30.0
DETECT_SLACK = 1.5  # log-line hand-over and scheduling; the timings themselves are exact to ~10 ms
COMPLETION_TIMEOUT = 20.0  # correlation_after_secs (1 s) plus the drop-time probe (bounded at 4 x 2 s)
NAT_EXPIRING = 20  # below K: the mapping is gone before the next ping
NAT_HOLDING = 35  # above K: every ping refreshes the mapping before it expires
NAT_PERIODS_OBSERVED = 3
NAT_UNUSED = 300  # tests about other faults: far above K, never in play


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[LabSet]:
    with lab_set(tmp_path) as made:
        yield made


def start_idle(lab: Lab, tmp_path: Path, name: str, options: DaemonOptions | None = None
               ) -> tuple[LabDaemon, float]:
    """The daemon up and idle; returns it with the moment its session came up."""
    daemon = lab.start_daemon(tmp_path / f"state-{name}", options or DaemonOptions(keep_alive_secs=K,
                                                                                   ping_timeout_secs=P))
    up = daemon.wait_up(UP_TIMEOUT)
    daemon.wait_idle(UP_TIMEOUT)
    return daemon, up


def only_drop(daemon: LabDaemon) -> dict[str, Any]:
    """The test's one drop, as recorded and then completed (cause, probe)."""
    daemon.completed_drops(1, COMPLETION_TIMEOUT)
    drops = daemon.drop_records()
    assert len(drops) == 1, [d.get("error_name") for d in drops]
    return drops[0]


def counters(drop: dict[str, Any], span: str) -> dict[str, int]:
    network = drop.get("network") or {}
    found = network.get(span)
    assert isinstance(found, dict), f"no {span} in the drop's network evidence: {sorted(network)}"
    return found


@pytest.mark.timeout(240)
def test_keep_alive_above_the_nat_timeout_drops_and_below_it_holds(labs: LabSet, tmp_path: Path) -> None:
    """Two labs side by side, same daemon settings (K 30 s), only the router's established timeout differs."""
    expiring = labs.lab(nat_timeout=NAT_EXPIRING, label=f"nat{NAT_EXPIRING}")
    holding = labs.lab(nat_timeout=NAT_HOLDING, label=f"nat{NAT_HOLDING}")
    options = DaemonOptions(keep_alive_secs=K, ping_timeout_secs=P)
    dropping = expiring.start_daemon(tmp_path / "state-expiring", options)
    steady = holding.start_daemon(tmp_path / "state-holding", options)
    dropping_up = dropping.wait_up(UP_TIMEOUT)
    steady_up = steady.wait_up(UP_TIMEOUT)

    first = dropping.wait_down(K + P + DETECT_SLACK + 5)
    assert first.error == "AWS_ERROR_MQTT_TIMEOUT"
    # The signature of an expired mapping: nothing wrong until the ping K after the last packet, which vanishes.
    assert abs((first.at - dropping_up) - (K + P)) < DETECT_SLACK, first.at - dropping_up

    # The holding side's claim is that nothing happens for several NAT periods: there is no event to wait for, so
    # the observation window itself is the wait.
    window_end = steady_up + NAT_PERIODS_OBSERVED * NAT_HOLDING
    time.sleep(max(0.0, window_end - time.monotonic()))
    assert steady.drops_logged() == [], steady.process.tail()
    assert holding.invalid_drops(mqtt_only=True) == 0
    assert steady.records() and not [r for r in steady.records() if r.get("kind") == "drop"]

    logged = dropping.drops_logged()
    assert len(logged) >= 2, "one drop per K + P + reconnect delay over the window"
    assert {d.error for d in logged} == {"AWS_ERROR_MQTT_TIMEOUT"}
    assert all(abs(d.session_seconds - (K + P)) < 1.0 for d in logged), [d.session_seconds for d in logged]
    assert expiring.invalid_drops(mqtt_only=True) > 0, "the PINGREQs must have met the expired mapping"

    dropping.completed_drops(len(logged), COMPLETION_TIMEOUT)
    recorded = dropping.drop_records()[:len(logged)]
    assert all(r["error_name"] == "AWS_ERROR_MQTT_TIMEOUT" for r in recorded)
    assert all(r["keep_alive_secs"] == K for r in recorded)
    assert all(r["network"]["probe"]["ok"] for r in recorded), "the endpoint answers at once: only the mapping died"
    report = dropping.report()
    verdicts = [(d["cause"], d["subcause"]) for d in report["drops"]]
    evidence = [d["evidence"] for d in report["drops"]]
    assert verdicts == [("network", "nat_idle_timeout")] * len(report["drops"]), (
        f"NAT idle expiry classified as {verdicts}; evidence: {evidence}; recorded causes: "
        f"{[(r.get('cause'), r.get('subcause')) for r in recorded]}"
    )


@pytest.mark.timeout(150)
def test_link_down_is_recorded_and_link_up_cuts_the_backoff_short(labs: LabSet, tmp_path: Path) -> None:
    """A long backoff (first retry 10-20 s after the drop) so that a reconnect 1-2 s after link-up can only be
    the link-event shortcut."""
    lab = labs.lab(nat_timeout=NAT_UNUSED)
    options = DaemonOptions(keep_alive_secs=K, ping_timeout_secs=P, initial_reconnect_delay=20.0,
                            max_reconnect_delay=40.0)
    daemon, up = start_idle(lab, tmp_path, "link", options)
    went_down = time.monotonic()
    lab.link_down()
    # The kernel keeps the established socket on a downed link: only the missed ping ends the session.
    drop = daemon.wait_down(K + P + DETECT_SLACK)
    assert drop.error == "AWS_ERROR_MQTT_TIMEOUT"
    assert drop.at - went_down <= K + P + DETECT_SLACK
    mark = daemon.process.mark()
    time.sleep(2.0)  # the outage itself: the link stays down a little past the detection (a fault, not a wait)
    came_up = time.monotonic()
    lab.link_up()
    back = daemon.wait_back(0.5 * options.initial_reconnect_delay, start=mark)
    latency = back.at - came_up
    wakes = daemon.wakes_logged(start=mark)
    assert wakes, f"no 'network is back' wake; log:\n{daemon.process.tail()}"
    assert latency <= 2.0, f"reconnected {latency:.2f} s after link-up (wakes: {wakes})"
    assert back.down_seconds < 0.5 * options.initial_reconnect_delay, "came back before the first backoff slot"

    recorded = only_drop(daemon)
    kinds = [event["kind"] for event in recorded["network"].get("link_events", [])]
    assert "carrier_down" in kinds and "default_route_lost" in kinds, kinds
    assert (recorded["cause"], recorded["subcause"]) == ("system_event", "link")
    print(f"link: down {drop.at - went_down:.2f} s after link-down ({drop.at - up:.2f} s after connect); "
          f"back {latency:.3f} s after link-up, {back.down_seconds:.1f} s down; wakes: {[w for _, w in wakes]}")


@pytest.mark.timeout(120)
def test_packet_loss_shows_in_the_drop_records_tcp_counters(labs: LabSet, tmp_path: Path) -> None:
    """9 of every 10 MQTT packets lost from the idle point on: the ping and its 4 retransmissions within P are all
    lost (numgen inc starts counting at the PINGREQ, so this is the same sequence every run)."""
    lab = labs.lab(nat_timeout=NAT_UNUSED)
    daemon, _up = start_idle(lab, tmp_path, "loss")
    started = time.monotonic()
    lab.loss_burst(9, 10, port=MQTT_PORT)
    drop = daemon.wait_down(K + P + DETECT_SLACK)
    lost = lab.fault_packets()
    lab.clear_faults()
    assert drop.error == "AWS_ERROR_MQTT_TIMEOUT"
    assert drop.at - started <= K + P + DETECT_SLACK
    assert lost >= 5, lost
    daemon.wait_back(10.0)

    recorded = only_drop(daemon)
    for span in ("netstat_session", "netstat_last_minute"):
        seen = counters(recorded, span)
        assert seen["RetransSegs"] > 0 and seen["TCPTimeouts"] > 0, (span, seen)
    assert (recorded["cause"], recorded["subcause"]) == ("network", "packet_loss")
    print(f"loss: {lost} packets dropped by the router; counters {counters(recorded, 'netstat_session')}")


@pytest.mark.timeout(120)
def test_a_middlebox_reset_is_recorded_as_socket_closed(labs: LabSet, tmp_path: Path) -> None:
    """The router answers the MQTT flow with RSTs; an idle client notices at its next PINGREQ."""
    lab = labs.lab(nat_timeout=NAT_UNUSED)
    daemon, up = start_idle(lab, tmp_path, "reset")
    lab.reset_flows(port=MQTT_PORT)
    drop = daemon.wait_down(K + DETECT_SLACK)
    resets = lab.fault_packets()
    lab.clear_faults()
    assert drop.error == "AWS_IO_SOCKET_CLOSED"
    assert drop.at - up <= K + DETECT_SLACK, "seen at the PINGREQ, not at a ping timeout"
    assert resets >= 1
    daemon.wait_back(15.0)

    recorded = only_drop(daemon)
    assert recorded["error_name"] == "AWS_IO_SOCKET_CLOSED"
    seen = counters(recorded, "netstat_session")
    assert seen["EstabResets"] >= 1, seen
    print(f"reset: drop {drop.at - up:.2f} s after connect; counters {seen}")


@pytest.mark.timeout(120)
def test_blackhole_is_detected_within_keep_alive_plus_ping_timeout(labs: LabSet, tmp_path: Path) -> None:
    """Everything forwarded is dropped, both ways, from right after the last packet: the worst case, K + P."""
    lab = labs.lab(nat_timeout=NAT_UNUSED)
    daemon, _up = start_idle(lab, tmp_path, "blackhole")
    started = time.monotonic()
    lab.blackhole()
    drop = daemon.wait_down(K + P + DETECT_SLACK)
    detection = drop.at - started
    lab.clear_faults()
    assert drop.error == "AWS_ERROR_MQTT_TIMEOUT"
    assert P <= detection <= K + P + DETECT_SLACK, detection
    daemon.wait_back(10.0)

    recorded = only_drop(daemon)
    assert counters(recorded, "netstat_session")["RetransSegs"] > 0  # the lost PINGREQ, retransmitted
    print(f"blackhole: detected {detection:.2f} s after it began (bound K + P = {K + P:g} s)")


@pytest.mark.timeout(300)
def test_keepalive_experiment_brackets_the_real_nat_timeout(labs: LabSet, tmp_path: Path) -> None:
    """`nwp500d experiment keepalive` behind the real conntrack: the bracket it reports contains the router's
    established timeout (keep-alives below it survive two cycles, those at or above it die at K + P)."""
    import json
    import os
    import sys

    from tests.system.netns_lab import PASSWORD

    lab = labs.lab(nat_timeout=NAT_EXPIRING, label="experiment")
    state = tmp_path / "state-experiment"
    config = lab.daemon_config(state, DaemonOptions(ping_timeout_secs=1.0))
    env = {key: value for key, value in os.environ.items() if key not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env.update(NAVIEN_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    # Round 1 tries 8, 16 and 32 s; round 2 splits (16, 32]: about 70 s in all.
    experiment = lab.spawn("experiment", lab.client, [
        sys.executable, "-m", "nwp500d", "experiment", "keepalive", "--config", str(config), "--rounds", "2",
        "--parallel", "3", "--min", "8", "--max", "32",
    ], env=env)
    experiment.wait_for(r"Recommended keep_alive_secs", 200)
    assert experiment.popen.wait(timeout=30) == 0  # it saves the result after printing the summary
    saved = json.loads((state / "exports" / "keepalive-experiment.json").read_text())
    lower, upper = saved["lower_secs"], saved["upper_secs"]
    assert lower is not None and upper is not None, saved
    assert lower < NAT_EXPIRING <= upper, (lower, upper)
    assert saved["recommended_keep_alive_secs"] < NAT_EXPIRING
