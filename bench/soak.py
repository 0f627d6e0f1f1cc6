"""Accelerated soak: a day's worth of drops through the daemon's session, recording and storage path in minutes.

A 24 h soak in real time is out of reach for CI: the supervisor never sends two CONNECTs within a second (AWS IoT's
per-client-id limit). So time is compressed: the real SessionSupervisor, collector, EventStore (256 KiB budget, 8
files, so retention runs all the time), SnapshotExporter (keep 5, one snapshot every 25 drops), Correlator and
StatusReporter, with a Notifier and ``watchdog_loop`` pinging a real notify socket every 50 ms, run against a real
mosquitto over TCP through the FaultProxy with ``Backoff(initial=0.01, cap=0.05, floor=0.0)`` and a 2 s keep-alive,
while a few thousand mixed faults (TCP reset, FIN, refused attempts then acceptance, forced rebuilds, and a blackhole
every 250 drops) are injected one after another. 3000 drops are a day at one drop every 29 s: a very bad day.

One deviation from the daemon as shipped: the backoff is ``SaturatingBackoff``, the daemon's ``Backoff`` with its step
held once the cap is reached. Its delays are identical, but without it the supervisor dies at the 1024th drop or
failed attempt in a row without a stable session (``2.0 ** 1024`` overflows; in compressed time no session is
stable), so this bench would end near drop 670. ``tests/integration/test_soak.py`` keeps that defect as a strict xfail.

Figures are procfs's (``VmRSS`` and ``Threads`` from ``/proc/self/status``, entries of ``/proc/self/fd``) and the
soak's own accounting (see ``tests/soak_machinery.py``, shared with ``tests/integration/test_soak.py``, which runs the
same machinery at CI size). Growth is counted from the sample after the warm-up, once every by-design cache and
retention window is full. Every bound is printed with PASS or FAIL; exit 2 when one fails, 1 when the soak could not
run at all.

Run from the repository root: ``.venv/bin/python bench/soak.py [--drops N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    add_json_flag,
    exit_on_sigterm,
    fail,
    new_parser,
    positive_int,
    progress,
    repo_on_path,
    scratch_dir,
)

repo_on_path()  # the machinery is shared with the CI-sized test

from nwp500d.sim.broker import BrokerUnavailable, find_mosquitto  # noqa: E402
from tests.soak_machinery import (  # noqa: E402
    FAULT_KINDS,
    FD_SLACK,
    KIB,
    THREAD_SLACK,
    Bound,
    SoakError,
    SoakResult,
    SoakSettings,
    bounds,
    rss_growth_bound_kib,
    run_soak,
)

DEFAULT_DROPS = 3000
TAG = "soak"  # what its progress and error lines start with, where the other benches say "bench"

_progress = functools.partial(progress, tag=TAG)


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--drops", type=positive_int, default=DEFAULT_DROPS, metavar="N",
                        help=f"faults to inject, one drop each (default {DEFAULT_DROPS})")
    parser.add_argument("--warmup", type=positive_int, default=SoakSettings.warmup_drops, metavar="N",
                        help="drops before the reference sample (default %(default)s)")
    parser.add_argument("--sample-every", type=positive_int, default=SoakSettings.sample_every, metavar="N",
                        help="drops between samples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=SoakSettings.seed, help="fault mix seed (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="keep the event log and snapshots here (default: a temporary directory, removed)")
    add_json_flag(parser)
    return parser


def _settings(args: argparse.Namespace) -> SoakSettings:
    try:
        return SoakSettings(drops=args.drops, warmup_drops=args.warmup, sample_every=args.sample_every,
                            seed=args.seed)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


async def _soak(settings: SoakSettings, state_dir: Path) -> SoakResult:
    try:
        return await run_soak(settings, state_dir, progress=_progress)
    except SoakError as exc:
        raise BenchError(str(exc)) from None


def _run(args: argparse.Namespace) -> SoakResult:
    try:
        find_mosquitto()
    except BrokerUnavailable as exc:
        raise BenchError(str(exc)) from None
    settings = _settings(args)
    with contextlib.ExitStack() as cleanup:
        state_dir: Path = args.state_dir or cleanup.enter_context(scratch_dir("nwp500d-soak-"))
        _progress(f"{settings.drops} drops into {state_dir} (warm-up {settings.warmup_drops}, seed {settings.seed})")
        result = asyncio.run(_soak(settings, state_dir))
    if args.state_dir is None:
        result.state_dir = f"{state_dir} (temporary, removed)"
    return result


def _bounds(result: SoakResult) -> list[Bound]:
    return bounds(result, rss_growth_kib=rss_growth_bound_kib(result.measured_drops), fd_slack=FD_SLACK,
                  thread_slack=THREAD_SLACK)


def _mib(kib: float) -> str:
    return f"{kib / KIB:.1f} MiB"


def _figures(result: SoakResult) -> list[tuple[str, str]]:
    s, before, warm, end, closed = result.settings, result.before, result.warm, result.end, result.closed
    assert before is not None and warm is not None and end is not None and closed is not None
    samples = result.samples
    slope = result.rss_slope_bytes_per_drop()
    n = result.drops_injected
    mix = ", ".join(f"{kind} {result.injected[kind]}" for kind in FAULT_KINDS)
    recovery = ", ".join(
        f"{kind} {result.recover_seconds_sum[kind] / result.injected[kind] * 1000:.0f}/"
        f"{result.recover_seconds_max[kind] * 1000:.0f} ms"
        for kind in FAULT_KINDS if result.injected[kind]
    )
    ups = ", ".join(f"{kind} {count}" for kind, count in sorted(result.up_events.items()))
    return [
        ("drops injected", f"{n} ({mix}); a day at one drop every {s.simulated_hours * 3600 / n:.0f} s"),
        ("wall time", f"{result.wall_seconds:.1f} s ({n / result.wall_seconds:.1f} drops/s); "
                      f"measured span {result.soak_seconds:.1f} s over {result.measured_drops} drops"),
        ("recovery mean/max", recovery),
        ("sessions up", f"{ups}; {result.failed_attempts} failed attempts, {result.sign_ins} sign-ins"),
        ("RSS start / end / max", f"{_mib(warm.rss_kib)} / {_mib(end.rss_kib)} / "
                                  f"{_mib(max(x.rss_kib for x in samples))} (before start {_mib(before.rss_kib)})"),
        ("RSS growth after warm-up", f"{result.rss_growth_kib:+d} KiB; slope {slope:+.0f} bytes/drop over "
                                     f"{len(samples)} samples"),
        ("RSS samples (KiB)", " ".join(str(x.rss_kib) for x in samples)),
        ("fds start / end / max", f"{warm.fds} / {end.fds} / {max(x.fds for x in samples)} "
                                  f"(after teardown {closed.fds}, before start {before.fds})"),
        ("threads start / end / max", f"python {warm.threads_python} / {end.threads_python} / "
                                      f"{max(x.threads_python for x in samples)}; kernel {warm.threads_os} / "
                                      f"{end.threads_os} / {max(x.threads_os for x in samples)} "
                                      f"(after teardown {closed.threads_os})"),
        ("drops recorded", f"session events {result.interrupted_events}, collector {result.collector_drops}, "
                           f"records to store {result.drop_records_emitted}, verified on disk "
                           f"{result.drops_verified_on_disk}, in the final reload {result.drops_in_final_reload} "
                           f"(retention), completions {result.completions_emitted}"),
        ("duplicates", f"drop ids twice on disk {result.duplicate_drop_ids_on_disk}, emitted twice "
                       f"{result.drop_records_emitted_twice}; missing on disk {result.drops_missing_on_disk}"),
        ("event log", f"max {result.store_max_bytes} bytes in {result.store_max_files} files; budget "
                      f"{result.store_budget} + one record ({result.store_max_record} bytes max); "
                      f"{result.pending_in_memory} left in memory"),
        ("snapshots", f"{result.snapshots_written} written (+1 final), max {result.snapshots_max_on_disk} on disk "
                      f"(keep {s.keep_snapshots}); exports max {result.exports_max_bytes} bytes, largest snapshot "
                      f"{result.snapshot_max_bytes} bytes; stale tmp {result.stale_tmp_files}"),
        ("watchdog", f"{result.watchdog_pings} pings every {s.watchdog_interval * 1000:.0f} ms; max gap "
                     f"{result.watchdog_max_gap * 1000:.1f} ms, p99 <= {result.watchdog_p99_gap * 1000:.0f} ms, "
                     f"{result.watchdog_over_limit} over {s.watchdog_gap_limit * 1000:.0f} ms; "
                     f"{result.watchdog_excluded} gaps spanning the soak's own samples left out"),
        ("notify", f"READY {result.notify_ready}, STATUS {result.notify_status_lines}"),
        ("daemon log", ", ".join(f"{level} {count}" for level, count in sorted(result.log_counts.items()))),
    ]


def _print(result: SoakResult, checks: Sequence[Bound]) -> None:
    rows = _figures(result)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}   {value}")
    print()
    width = max(len(check.name) for check in checks)
    for check in checks:
        verdict = "PASS" if check.ok else "FAIL"
        detail = f"   ({check.detail})" if check.detail else ""
        print(f"{verdict}  {check.name.ljust(width)}   {_number(check.value)} vs {_number(check.limit)}{detail}")
    print()
    print(f"python {platform.python_version()}, awscrt {importlib.metadata.version('awscrt')}, "
          f"state dir {result.state_dir}")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _report(result: SoakResult, checks: Sequence[Bound]) -> dict[str, Any]:
    return {
        "figures": result.to_dict(),
        "bounds": [dataclasses.asdict(check) for check in checks],
        "passed": all(check.ok for check in checks),
        "python": platform.python_version(),
        "awscrt": importlib.metadata.version("awscrt"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    exit_on_sigterm()  # so `finally` stops mosquitto and removes the temporary state directory
    try:
        result = _run(args)
    except BenchError as exc:
        return fail(exc, tag=TAG)
    checks = _bounds(result)
    if args.json:
        print(json.dumps(_report(result, checks), indent=2))
    else:
        _print(result, checks)
    return 0 if all(check.ok for check in checks) else 2


if __name__ == "__main__":
    sys.exit(main())
