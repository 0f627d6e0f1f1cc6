"""Recovery after a local link outage: the daemon with its link-event shortcut against the same daemon without it.

When the host's own link goes away, awscrt notices only at the next missed ping, and after the link returns the
session sits out whatever backoff step it had reached. With ``netdiag.link_events: true`` the daemon watches
rtnetlink and, when the network comes back (``LinkMonitor.network_is_back``: carrier up on the default-route
interface, or a default route gained), wakes the sleeping reconnect (``SessionSupervisor.wake``). This bench measures
what that buys, against ``netdiag.link_events: false``, in the same run.

Both sides are the real daemon (``python -m nwp500d run``) in two network-namespace labs side by side
(tests/system/netns_lab.py: client, router with NAT, broker with mosquitto and the fake NaviLink REST API), with the
same configuration except that one switch: the production backoff (``MqttConnectionConfig`` defaults: 1 s doubling,
jittered, capped at 60 s; a full sign-in every 5 failures) and K/P at the configuration's floor so a trial does not
wait a minute for the drop. Each trial, on both labs at the same moment: the client's eth0 goes admin-down; the drop
is detected at the next missed ping; the link stays down ``--down-after-drop`` seconds more (the reconnect attempts
fail meanwhile and climb the backoff ladder); eth0 comes back with its default route, the way a DHCP client puts it
back. Recovery is from that link-up to the daemon's "session back" log line. Which lab goes first alternates per
trial. A session lasts K + P between trials, longer than ``stable_session_secs``, so every trial starts with a reset
backoff.

Everything runs inside namespaces the bench creates; they and every process in them are removed at exit, on errors,
Ctrl-C and SIGTERM alike. Needs root, ip, nft and mosquitto.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from _harness import (
    BenchError,
    add_json_flag,
    finish,
    median_ratio,
    new_parser,
    positive_int,
    print_columns,
    progress,
    python_label,
    repo_on_path,
    run_to_exit_status,
    scratch_dir,
    spread,
    spread_cell,
    versions,
)

repo_on_path()  # the lab lives with the system tests

from nwp500d.config import MqttConnectionConfig  # noqa: E402
from tests.system.netns_lab import DaemonOptions, Lab, LabDaemon, LabError, lab_problem, lab_set  # noqa: E402

DEFAULT_TRIALS = 5
DEFAULT_KEEP_ALIVE = 30  # the configuration's floor
DEFAULT_PING_TIMEOUT = 5.0
DEFAULT_DOWN_AFTER_DROP = 20.0
NAT_TIMEOUT = 300  # far above K: the NAT plays no part here
UP_BOUND = 30.0
DETECT_SLACK = 5.0
RECOVER_BOUND = 90.0  # above the 60 s backoff cap plus a connect: a slow side is measured, not cut off
SIDES = (("with", True), ("without", False))


@dataclass
class Side:
    label: str
    shortcut: bool
    lab: Lab
    daemon: LabDaemon


@dataclass
class Trial:
    side: str
    trial: int
    detection_secs: float | None = None  # link-down -> drop logged
    detected_error: str | None = None
    recovery_secs: float | None = None  # link-up -> session back logged
    down_secs: float | None = None  # the daemon's own drop -> back figure
    attempt: int | None = None  # the attempt that succeeded (failures during the outage + 1)
    kind: str | None = None  # rebuilt, or deep_reconnected when a sign-in came first
    woken: bool = False  # a "network is back" wake was logged between link-up and the reconnect
    problem: str | None = None


@dataclass
class Settings:
    trials: int
    keep_alive: int
    ping_timeout: float
    down_after_drop: float
    keep: bool


def _options(settings: Settings, shortcut: bool) -> DaemonOptions:
    production = MqttConnectionConfig()
    return DaemonOptions(
        keep_alive_secs=settings.keep_alive, ping_timeout_secs=settings.ping_timeout,
        initial_reconnect_delay=production.initial_reconnect_delay,
        max_reconnect_delay=production.max_reconnect_delay,
        reconnect_backoff_multiplier=production.reconnect_backoff_multiplier,
        stable_session_secs=min(production.stable_session_secs, settings.keep_alive / 2),
        link_events=shortcut,
    )


def _run_trial(number: int, sides: list[Side], settings: Settings) -> list[Trial]:
    results = {side.label: Trial(side.label, number) for side in sides}
    order = sides if number % 2 else list(reversed(sides))
    marks = {side.label: side.daemon.process.mark() for side in sides}
    down_at: dict[str, float] = {}
    for side in order:
        down_at[side.label] = time.monotonic()
        side.lab.link_down()
    detect_bound = settings.keep_alive + settings.ping_timeout + DETECT_SLACK
    drops = {}
    for side in sides:
        drop = side.daemon.wait_down(detect_bound, start=marks[side.label])
        drops[side.label] = drop
        results[side.label].detection_secs = drop.at - down_at[side.label]
        results[side.label].detected_error = drop.error
    # The outage itself: the link stays down this long after the later detection (a fault's length, not a wait
    # for anything), so both sides' reconnect attempts fail and climb the ladder for the same time.
    time.sleep(max(0.0, max(d.at for d in drops.values()) + settings.down_after_drop - time.monotonic()))
    up_at: dict[str, float] = {}
    for side in order:
        marks[side.label] = side.daemon.process.mark()
        up_at[side.label] = time.monotonic()
        side.lab.link_up()
    for side in sides:
        back = side.daemon.wait_back(RECOVER_BOUND, start=marks[side.label])
        result = results[side.label]
        result.recovery_secs = back.at - up_at[side.label]
        result.down_secs = back.down_seconds
        result.attempt = back.attempt
        result.kind = back.kind
        result.woken = any(at <= back.at for at, _event in side.daemon.wakes_logged(start=marks[side.label]))
    return [results[side.label] for side in sides]


def _measure(settings: Settings, scratch: Path) -> list[Trial]:
    trials: list[Trial] = []
    with lab_set(scratch) as labs:
        sides: list[Side] = []
        for label, shortcut in SIDES:
            lab = labs.lab(nat_timeout=NAT_TIMEOUT, label=f"link-events-{label}")
            daemon = lab.start_daemon(scratch / f"state-{label}", _options(settings, shortcut))
            sides.append(Side(label, shortcut, lab, daemon))
        for side in sides:
            side.daemon.wait_up(UP_BOUND)
            side.daemon.wait_idle(UP_BOUND)
        for number in range(1, settings.trials + 1):
            progress(f"trial {number}/{settings.trials}: link down on both labs")
            try:
                done = _run_trial(number, sides, settings)
            except LabError as exc:
                # The sessions' state is unknown after a failed wait: report what was measured, stop here.
                trials.append(Trial("both", number, problem=str(exc).splitlines()[0]))
                progress(f"  problem: {str(exc).splitlines()[0]}; stopping after {number - 1} complete trial(s)")
                break
            for trial in done:
                progress(f"  {trial.side:<7} detected {trial.detection_secs:.2f} s after link-down, back "
                          f"{trial.recovery_secs:.3f} s after link-up (attempt {trial.attempt}, {trial.kind})")
            trials.extend(done)
    return trials


# ---------------------------------------------------------------- report


def _rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure; the ratio is of medians, with shortcut over without (below 1: the shortcut is quicker)."""
    metrics = [
        ("link-up -> session back (s)", "recovery_secs"),
        ("daemon's own downtime (s)", "down_secs"),
        ("link-down -> drop detected (s)", "detection_secs"),
        ("successful attempt number", "attempt"),
    ]
    rows: list[dict[str, Any]] = []
    for name, key in metrics:
        row: dict[str, Any] = {"metric": name}
        for label, _shortcut in SIDES:
            values = [float(t[key]) for t in trials if t["side"] == label and t[key] is not None]
            row[label] = spread(values)
        row["ratio"] = median_ratio(row.get("with"), row.get("without"))
        rows.append(row)
    return rows


def _print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    header = ["metric", "link_events: true  median (min-max)", "link_events: false  median (min-max)",
              "ratio true/false"]
    body = [[row["metric"], spread_cell(row.get("with")), spread_cell(row.get("without")),
             "-" if row["ratio"] is None else f"{row['ratio']:.4f}"] for row in report["rows"]]
    print_columns(header, body)
    print()
    recovery = report["rows"][0]
    if recovery["ratio"]:
        print(f"recovery after link-up: the shortcut is {1 / recovery['ratio']:.0f}x quicker (median against median)")
    kinds: dict[str, list[str]] = {}
    for trial in report["trials"]:
        if trial["kind"]:
            kinds.setdefault(trial["side"], []).append(f"{trial['kind']}{'*' if trial['woken'] else ''}")
    print("reconnect kinds per trial (* = a link-event wake was logged first): "
          + "; ".join(f"{'true' if side == 'with' else 'false'}: {', '.join(seen)}" for side, seen in kinds.items()))
    problems = [t["problem"] for t in report["trials"] if t["problem"]]
    if problems:
        print("problems: " + "; ".join(problems))
    print(f"both:   nwp500d {report['versions']['nwp500d']} (python -m nwp500d run), awscrt "
          f"{report['versions']['awscrt']}, MQTT 3.1.1 over TCP through an nft masquerade router to mosquitto "
          f"{report['mosquitto']}; keep_alive K={cfg['keep_alive_secs']} s, ping timeout "
          f"P={cfg['ping_timeout_secs']:g} s; backoff {cfg['backoff']}")
    print(f"method: {cfg['trials']} trial(s), both labs in lockstep, alternating which goes first; client eth0 "
          f"admin-down, drop detected at the next missed ping, link kept down {cfg['down_after_drop_secs']:g} s "
          "after the detection, then eth0 up + default route back (one `ip -batch`). Recovery = link-up -> the "
          "daemon's 'MQTT session back' log line, read as it is written.")
    print(f"wall time: {report['elapsed_seconds']:.1f} s on {report['python']}")


# ---------------------------------------------------------------- command line


def _mosquitto_version() -> str:
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        done = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split()[-1] if first and first[0].split() else "?"


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS, metavar="N",
                        help=f"link outages per side (default {DEFAULT_TRIALS})")
    parser.add_argument("--keep-alive", type=positive_int, default=DEFAULT_KEEP_ALIVE, metavar="SECS",
                        help=f"MQTT keep-alive K, 30-1200 (default {DEFAULT_KEEP_ALIVE})")
    parser.add_argument("--ping-timeout", type=float, default=DEFAULT_PING_TIMEOUT, metavar="SECS",
                        help=f"PINGRESP deadline P, below K (default {DEFAULT_PING_TIMEOUT:g})")
    parser.add_argument("--down-after-drop", type=float, default=DEFAULT_DOWN_AFTER_DROP, metavar="SECS",
                        help=f"how long the link stays down after the drop is detected (default "
                             f"{DEFAULT_DOWN_AFTER_DROP:g})")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (daemon logs, state)")
    add_json_flag(parser)
    return parser


class _Terminated(Exception):
    """SIGTERM, turned into an exception so every ``with`` and ``finally`` unwinds as on any other error."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the teardown it starts short
    raise _Terminated()


def _run(settings: Settings) -> dict[str, Any]:
    problem = lab_problem()
    if problem is not None:
        raise BenchError(problem)
    with scratch_dir("nwp500d-recovery-", keep=settings.keep) as scratch:
        started = time.perf_counter()
        trials = _measure(settings, scratch)
    plain = [dataclasses.asdict(t) for t in trials]
    production = MqttConnectionConfig()
    return {
        "config": {
            "trials": settings.trials, "keep_alive_secs": settings.keep_alive,
            "ping_timeout_secs": settings.ping_timeout, "down_after_drop_secs": settings.down_after_drop,
            "backoff": f"{production.initial_reconnect_delay:g} s x{production.reconnect_backoff_multiplier:g} "
                       f"jittered up to {production.max_reconnect_delay:g} s, sign-in every "
                       f"{production.deep_reconnect_threshold} failures",
        },
        "versions": versions("nwp500d", "awscrt"),
        "mosquitto": _mosquitto_version(),
        "python": python_label(),
        "rows": _rows(plain),
        "trials": plain,
        "elapsed_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 30 <= args.keep_alive <= 1200 or not 1 <= args.ping_timeout < args.keep_alive:
        print("bench: the daemon accepts K from 30 to 1200 s and 1 <= P < K", file=sys.stderr)
        return 2
    settings = Settings(trials=args.trials, keep_alive=args.keep_alive, ping_timeout=args.ping_timeout,
                        down_after_drop=args.down_after_drop, keep=args.keep)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return run_to_exit_status(
        lambda: _run(settings),
        lambda report: finish(report, as_json=args.json, table=_print_table),
        errors=(BenchError, LabError),
        stop=_Terminated,
        stopped_note="everything it started was shut down",
    )


if __name__ == "__main__":
    sys.exit(main())
