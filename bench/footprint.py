"""Idle footprint of the real daemon next to a bare awscrt connection, sampled side by side in the same run.

What a user weighs is "what does running nwp500d cost over just holding the connection myself", so the daemon is
started exactly as systemd would start it (``python -m nwp500d run --config FILE``, password from
``NAVIEN_PASSWORD``) with one live MQTT-over-WebSocket+TLS+SigV4 session to the simulator, and next to it runs the
smallest process that holds the same kind of session: awsiotsdk's builder at its defaults, nothing else imported.
Both run at the same time against the same mosquitto through the same proxy, so both are sampled at the same
instants and a busy machine weighs on both alike; running them one after the other would double the wall time.

Figures come from procfs, as an operator would read them: VmRSS, VmHWM and Threads from ``/proc/PID/status``,
utime+stime from ``/proc/PID/stat`` (clock ticks, so 10 ms steps), the entries of ``/proc/PID/fd``. An idle
connection costs well under one tick per minute, so on-CPU time is also summed from ``/proc/PID/task/*/schedstat``
(nanoseconds, per thread, so it misses only what a thread did in the last sampling step before it exited).

The baseline holder is a source string run with ``python -I -c`` rather than a mode of this file: this file imports
asyncio, argparse and nwp500d's simulator, and the holder would otherwise be charged for them. Both children get a
parent-death signal (``setpriv --pdeathsig``) and their own session, and are stopped in ``finally``, so neither
outlives the bench even when it is killed; the daemon must then exit 0 on SIGTERM, as systemd expects.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    REPO,
    BenchError,
    add_json_flag,
    finish,
    kill_group_now,
    new_parser,
    print_columns,
    progress,
    python_label,
    ratio,
    run_to_exit_status,
    scratch_dir,
    sigterm_cancels_current_task,
    versions,
)

from nwp500d.config import Config
from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.sim.broker import BrokerUnavailable
from nwp500d.sim.demo import DEMO_EMAIL, DEMO_PASSWORD, Simulator, simulator

DEFAULT_SECONDS = 300.0
DEFAULT_INTERVAL = 10.0
START_BOUND = 60.0
STOP_BOUND = 20.0
KILL_BOUND = 5.0
REGION = "us-east-1"
BUILDER_KEEP_ALIVE_SECS = 1200
DAEMON_READY = re.compile(r"MQTT session up")
BASELINE_READY = re.compile(r"^up$")
# Lines that mean the session did not stay idle: the daemon's reconnect/warning lines, the holder's callbacks.
DAEMON_UNREST = re.compile(r"WARNING|ERROR|\[WARN\]|MQTT session back|MQTT session down")
BASELINE_UNREST = re.compile(r"^(interrupted|resumed)")
_TAIL = 30
_MIB = 1024 * 1024
# Set by the environment of a systemd service; inherited, they would send the daemon's log or notifications
# somewhere other than the pipe read here.
_SCRUBBED_ENV = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                 "JOURNAL_STREAM", "NWP500D_LOG_LEVEL")

BASELINE_HOLDER = """\
import os, signal, sys
from awscrt import auth
from awsiot import mqtt_connection_builder

host, port, ca_file, client_id, region = sys.argv[1:6]
# Blocked before the CRT starts its threads, which inherit the mask: the signal can only end the sigwait below.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
provider = auth.AwsCredentialsProvider.new_static(
    os.environ["BENCH_AWS_ACCESS_KEY_ID"], os.environ["BENCH_AWS_SECRET_ACCESS_KEY"],
    os.environ["BENCH_AWS_SESSION_TOKEN"])

def interrupted(connection, error, **kwargs):
    print("interrupted", getattr(error, "name", error), flush=True)

def resumed(connection, return_code, session_present, **kwargs):
    print("resumed", flush=True)

connection = mqtt_connection_builder.websockets_with_default_aws_signing(
    region=region, credentials_provider=provider, endpoint=host, port=int(port), ca_filepath=ca_file,
    client_id=client_id, on_connection_interrupted=interrupted, on_connection_resumed=resumed)
connection.connect().result(30)
print("up", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
connection.disconnect().result(10)
"""


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the window opened
    rss_kib: int
    hwm_kib: int
    threads: int
    fds: int
    cpu_secs: float  # utime + stime, every thread that ever ran
    oncpu_ns_by_thread: dict[int, int]  # schedstat of each live thread, keyed by thread id


_TICK = os.sysconf("SC_CLK_TCK")


def sample(pid: int, at: float) -> Sample:
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted after "pid (comm) "
    oncpu: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just exited
            oncpu[int(task.name)] = int((task / "schedstat").read_text(encoding="utf-8").split()[0])
    return Sample(
        at=at,
        rss_kib=int(status["VmRSS"].split()[0]),
        hwm_kib=int(status["VmHWM"].split()[0]),
        threads=int(status["Threads"]),
        fds=sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()),
        cpu_secs=(utime + stime) / _TICK,
        oncpu_ns_by_thread=oncpu,
    )


@dataclass
class Child:
    """One measured subprocess, its output drained continuously (a full pipe would stall it mid-measurement)."""

    label: str
    process: asyncio.subprocess.Process
    ready_pattern: re.Pattern[str]
    unrest_pattern: re.Pattern[str]
    spawned: float
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL))
    ready_after: float | None = None
    window_open: bool = False
    unrest: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    stop_seconds: float | None = None
    exit_code: int | None = None
    killed: bool = False

    @classmethod
    async def spawn(cls, label: str, argv: list[str], *, env: dict[str, str], cwd: Path, ready: re.Pattern[str],
                    unrest: re.Pattern[str]) -> Child:
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]  # exec()s: the pid measured is the Python one
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
        )
        child = cls(label, process, ready, unrest, time.monotonic())
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            child.readers.append(asyncio.create_task(child._read(stream), name=f"bench.{label}.output"))
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.tail.append(line)
            if not self.ready.is_set() and self.ready_pattern.search(line):
                self.ready_after = time.monotonic() - self.spawned
                self.ready.set()
            elif self.window_open and self.unrest_pattern.search(line):
                self.unrest.append(line)

    async def wait_ready(self, timeout: float) -> None:
        ready = asyncio.ensure_future(self.ready.wait())
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait([ready, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if not self.ready.is_set():
            why = (f"exited with status {self.process.returncode}" if self.process.returncode is not None
                   else f"not up within {timeout:g} s")
            raise BenchError(f"{self.label} {why}; output tail:\n" + "\n".join(self.tail))

    async def stop(self, bound: float) -> None:
        """SIGTERM, as systemd stops a unit; SIGKILL only if it is still there after ``bound``."""
        if self.process.returncode is not None:
            self.exit_code = self.process.returncode
            return
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(bound):
                self.exit_code = await self.process.wait()
            self.stop_seconds = time.monotonic() - started
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.killed = True
            kill_group_now(self.process.pid)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_BOUND):
                    await self.process.wait()
        self.exit_code = self.process.returncode
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_BOUND):
                await asyncio.gather(*self.readers, return_exceptions=True)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    env.update(extra)
    return env


async def _spawn_both(sim: Simulator, scratch: Path) -> tuple[Child, Child]:
    state_dir = scratch / "state"
    config_file = scratch / "nwp500d.yaml"
    config_file.write_text(sim.config_yaml(state_dir), encoding="utf-8")
    navilink = NaviLinkClient(sim.navilink.base_url, DEMO_EMAIL, DEMO_PASSWORD, cache_path=None)
    try:
        await navilink.sign_in()  # the holder's static credentials; the daemon signs in on its own
    finally:
        await navilink.close()
    creds = navilink.aws_credentials()
    if creds is None:
        raise BenchError("the FakeNaviLink sign-in returned no AWS credentials")
    daemon = await Child.spawn(
        "daemon", [sys.executable, "-m", "nwp500d", "run", "--config", str(config_file)],
        env=_child_env({"NAVIEN_PASSWORD": DEMO_PASSWORD}), cwd=REPO, ready=DAEMON_READY, unrest=DAEMON_UNREST,
    )
    try:
        holder_env = _child_env({"BENCH_AWS_ACCESS_KEY_ID": creds.access_key_id,
                                 "BENCH_AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
                                 "BENCH_AWS_SESSION_TOKEN": creds.session_token})
        baseline = await Child.spawn(
            "baseline", [sys.executable, "-I", "-c", BASELINE_HOLDER, sim.broker.host, str(sim.proxy.port),
                         str(sim.broker.ca_file), "nwp500d-bench-footprint-baseline", REGION],
            env=holder_env, cwd=scratch, ready=BASELINE_READY, unrest=BASELINE_UNREST,
        )
    except BaseException:
        await daemon.kill()
        raise
    return daemon, baseline


async def _sample_window(children: Sequence[Child], seconds: float, interval: float) -> dict[str, list[Sample]]:
    """Samples on a fixed schedule from the window's start, so late wake-ups do not accumulate into drift."""
    samples: dict[str, list[Sample]] = {child.label: [] for child in children}
    opened = time.monotonic()
    steps = max(1, math.ceil(seconds / interval))
    for step in range(steps + 1):
        due = opened + min(step * interval, seconds)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        at = time.monotonic() - opened
        for child in children:
            if child.process.returncode is not None:
                raise BenchError(f"{child.label} exited with status {child.process.returncode} during the window; "
                                 "output tail:\n" + "\n".join(child.tail))
            try:
                samples[child.label].append(sample(child.pid, at))
            except (FileNotFoundError, ProcessLookupError) as exc:
                raise BenchError(f"{child.label} vanished during the window ({exc})") from None
        progress(f"{at:5.0f} s  " + "  ".join(
            f"{child.label} {samples[child.label][-1].rss_kib / 1024:.1f} MiB" for child in children))
    return samples


async def _measure(seconds: float, interval: float) -> dict[str, Any]:
    async with simulator() as sim:
        with scratch_dir("nwp500d-footprint-") as scratch:
            progress("starting the daemon and the baseline holder")
            daemon, baseline = await _spawn_both(sim, scratch)
            children = (daemon, baseline)
            try:
                # Each wait is bounded on its own, so gather (no cancelling of the sibling) cannot hang.
                await asyncio.gather(*(child.wait_ready(START_BOUND) for child in children))
                for child in children:
                    child.window_open = True
                progress(f"both sessions up; sampling every {interval:g} s for {seconds:g} s")
                samples = await _sample_window(children, seconds, interval)
                for child in children:
                    child.window_open = False  # what they log while shutting down is not idle behaviour
                progress("stopping both with SIGTERM")
                await asyncio.gather(*(child.stop(STOP_BOUND) for child in children))
            finally:
                # After an error or SIGTERM the children get the same polite stop first; kill() only finishes up.
                await asyncio.gather(*(child.stop(KILL_BOUND) for child in children), return_exceptions=True)
                for child in children:
                    await child.kill()
            return {
                child.label: {
                    "pid": child.pid,
                    "ready_after_secs": child.ready_after,
                    "samples": [dataclasses.asdict(s) for s in samples[child.label]],
                    "unrest": child.unrest,
                    "exit_code": child.exit_code,
                    "stop_seconds": child.stop_seconds,
                    "killed": child.killed,
                }
                for child in children
            }


# ---------------------------------------------------------------- report


def _oncpu_ns(samples: Sequence[dict[str, Any]]) -> int:
    """Per thread and per sampling step, so a thread that exits takes only its last step's CPU with it.

    Summing the live threads at the two ends instead goes negative when a thread that ran before the window (the
    CRT's host-resolver thread, say) exits inside it.
    """
    total = 0
    for earlier, later in itertools.pairwise(samples):
        before = earlier["oncpu_ns_by_thread"]
        total += sum(ns - before.get(tid, 0) for tid, ns in later["oncpu_ns_by_thread"].items())
    return total


def _figures(side: dict[str, Any], seconds: float) -> dict[str, float | int | None]:
    samples = side["samples"]
    first, last = samples[0], samples[-1]
    window = last["at"] - first["at"] or seconds
    oncpu_ms = _oncpu_ns(samples) / 1e6
    return {
        "rss_start_mib": first["rss_kib"] / 1024,
        "rss_end_mib": last["rss_kib"] / 1024,
        "rss_max_mib": max(s["rss_kib"] for s in samples) / 1024,
        "hwm_end_mib": last["hwm_kib"] / 1024,
        "threads_start": first["threads"],
        "threads_end": last["threads"],
        "threads_max": max(s["threads"] for s in samples),
        "fds_start": first["fds"],
        "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "cpu_before_window_secs": first["cpu_secs"],
        "cpu_window_secs": last["cpu_secs"] - first["cpu_secs"],
        "oncpu_window_ms": oncpu_ms,
        "oncpu_ms_per_minute": oncpu_ms * 60 / window,
        "ready_after_secs": side["ready_after_secs"],
        "stop_seconds": side["stop_seconds"],
        "exit_code": side["exit_code"],
        "unrest_lines": len(side["unrest"]),
    }


ROWS: list[tuple[str, str, str]] = [
    # (label, key, format); ratios only for the measured quantities, not for exit codes or counts of surprises
    ("RSS at window start (MiB)", "rss_start_mib", "{:.1f}"),
    ("RSS at window end (MiB)", "rss_end_mib", "{:.1f}"),
    ("RSS max of samples (MiB)", "rss_max_mib", "{:.1f}"),
    ("VmHWM peak since start (MiB)", "hwm_end_mib", "{:.1f}"),
    ("threads start / end", "threads", ""),
    ("threads max", "threads_max", "{}"),
    ("open fds start / end", "fds", ""),
    ("open fds max", "fds_max", "{}"),
    ("CPU in window, utime+stime (s)", "cpu_window_secs", "{:.2f}"),
    ("CPU in window, schedstat (ms)", "oncpu_window_ms", "{:.1f}"),
    ("  per minute (ms/min)", "oncpu_ms_per_minute", "{:.2f}"),
    ("CPU before window, startup (s)", "cpu_before_window_secs", "{:.2f}"),
    ("spawn -> session up (s)", "ready_after_secs", "{:.2f}"),
    ("SIGTERM -> exit (s)", "stop_seconds", "{:.2f}"),
    ("exit status after SIGTERM", "exit_code", "{}"),
    ("drops/warnings during window (lines)", "unrest_lines", "{}"),
]
_NO_RATIO = {"exit_code", "unrest_lines"}


def _rows(ours: dict[str, Any], theirs: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, key, fmt in ROWS:
        if key in ("threads", "fds"):
            rows.append({"figure": label, "ours": f"{ours[key + '_start']} / {ours[key + '_end']}",
                         "baseline": f"{theirs[key + '_start']} / {theirs[key + '_end']}",
                         "ratio": ratio(ours[key + "_end"], theirs[key + "_end"])})
            continue
        mine, other = ours[key], theirs[key]
        rows.append({
            "figure": label,
            "ours": "-" if mine is None else fmt.format(mine),
            "baseline": "-" if other is None else fmt.format(other),
            "ratio": None if key in _NO_RATIO else ratio(mine, other),
        })
    return rows


def _print_table(report: dict[str, Any]) -> None:
    header = ["figure", "ours (nwp500d run)", "baseline (builder)", "ratio ours/baseline"]
    body = [[row["figure"], row["ours"], row["baseline"], "-" if row["ratio"] is None else f"{row['ratio']:.2f}"]
            for row in report["rows"]]
    print_columns(header, body)
    print()
    cfg = report["config"]
    for label in ("daemon", "baseline"):
        series = " ".join(f"{s['rss_kib'] / 1024:.1f}" for s in report["raw"][label]["samples"])
        print(f"RSS every {cfg['interval_secs']:g} s, {label} (MiB): {series}")
        for line in report["raw"][label]["unrest"]:
            print(f"  {label} during window: {line}")
    print()
    print(f"ours:     python -m nwp500d run (nwp500d {report['versions']['nwp500d']}), config from "
          f"Simulator.config_yaml: daemon defaults, i.e. keep_alive {cfg['daemon_keep_alive_secs']} s, status poll "
          f"every {cfg['daemon_status_interval_secs']:g} s, snapshot every {cfg['daemon_export_interval_secs']:g} s, "
          "log level info")
    print(f"baseline: python -I -c <holder>: awsiotsdk {report['versions']['awsiotsdk']} "
          "websockets_with_default_aws_signing at the builder's defaults (keep_alive "
          f"{BUILDER_KEEP_ALIVE_SECS} s: no PINGREQ inside the window), static credentials, nothing else imported")
    print(f"both:     awscrt {report['versions']['awscrt']}, one WSS+SigV4 session each to the same mosquitto "
          "through the same FaultProxy, run concurrently and sampled at the same instants")
    print(f"method:   window opens once both sessions are up; /proc sampled every {cfg['interval_secs']:g} s for "
          f"{cfg['seconds']:g} s; utime+stime has {1000 / _TICK:g} ms resolution; schedstat is summed per thread "
          "and per step (a thread that exits loses at most its last step)")
    print(f"wall time: {report['elapsed_seconds']:.1f} s on {report['python']}, {os.cpu_count()} CPU(s)")


# ---------------------------------------------------------------- command line


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--seconds", type=_seconds, default=DEFAULT_SECONDS, metavar="SECS",
                        help=f"length of the idle window (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--interval", type=_seconds, default=DEFAULT_INTERVAL, metavar="SECS",
                        help=f"sampling period (default {DEFAULT_INTERVAL:g})")
    add_json_flag(parser)
    return parser


async def _amain(seconds: float, interval: float) -> dict[str, Any]:
    """SIGTERM cancels this task, so the children are stopped by the same ``finally`` as on any error."""
    with sigterm_cancels_current_task():
        started = time.perf_counter()
        raw = await _measure(seconds, interval)
    ours, theirs = _figures(raw["daemon"], seconds), _figures(raw["baseline"], seconds)
    defaults = Config()
    return {
        "config": {
            "seconds": seconds, "interval_secs": interval,
            "daemon_keep_alive_secs": defaults.mqtt.keep_alive_secs,
            "daemon_status_interval_secs": defaults.monitor.status_interval_secs,
            "daemon_export_interval_secs": defaults.exports.interval_secs,
            "baseline_keep_alive_secs": BUILDER_KEEP_ALIVE_SECS,
        },
        "versions": versions("nwp500d", "awscrt", "awsiotsdk"),
        "python": python_label(),
        "ours": ours,
        "baseline": theirs,
        "rows": _rows(ours, theirs),
        "raw": raw,
        "elapsed_seconds": time.perf_counter() - started,
    }


def _problems(report: dict[str, Any]) -> list[str]:
    """What makes the run a failure even though figures were printed: the daemon must stop cleanly on SIGTERM."""
    problems = []
    for label in ("daemon", "baseline"):
        side = report["raw"][label]
        if side["killed"]:
            problems.append(f"{label} did not exit within {STOP_BOUND:g} s of SIGTERM and was killed")
        elif side["exit_code"] != 0:
            problems.append(f"{label} exited with status {side['exit_code']} after SIGTERM, not 0")
    return problems


def _show(report: dict[str, Any], *, as_json: bool) -> int:
    finish(report, as_json=as_json, table=_print_table)
    problems = _problems(report)
    for problem in problems:
        print(f"bench: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_to_exit_status(
        lambda: asyncio.run(_amain(args.seconds, args.interval)),
        lambda report: _show(report, as_json=args.json),
        errors=(BenchError, BrokerUnavailable),
        stop=asyncio.CancelledError,
        stopped_note="both children were stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
