"""Collector benchmark: nwp500d's MqttDiagnosticsCollector against the upstream nwp500-python one, in the same run.

Absolute figures from one machine say little about another, so every figure is printed next to the collector whose
API ours keeps (nwp500-python 6.1.1), measured minutes apart on the same machine, and as a ratio of the two.

Upstream must never become a dependency of the project, nor be installed into its venv (it would shadow nothing, but
its pinned stack could move ours), so the bench builds a throwaway venv for it in a temporary directory and removes it
at exit, even on failure or SIGTERM. ``--baseline-venv DIR`` reuses one instead; ``--no-baseline`` skips it.

This file is also its own measurement script: with ``--measure MODULE`` it imports nothing but the standard library
(``_harness`` included: it is standard library only) and MODULE, so the baseline venv's interpreter runs the very
code that measures ours in this one. That code touches only the API both collectors share:
``MqttDiagnosticsCollector(max_events_retained=N)``, ``record_publish()``, ``await record_connection_drop(error=...)``,
``await record_connection_success(event_type=...)`` and ``export_json()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

# ``--measure`` runs this file under ``python -I`` in the baseline venv, which leaves its folder off sys.path. Appended,
# not prepended: nothing in bench/ may shadow what is measured.
_BENCH_DIR = str(Path(__file__).resolve().parent)
if _BENCH_DIR not in sys.path:
    sys.path.append(_BENCH_DIR)

from _harness import (  # noqa: E402
    BenchError,
    add_json_flag,
    exit_on_sigterm,
    fail,
    finish,
    gc_paused,
    new_parser,
    positive_int,
    print_columns,
    progress,
    python_label,
    run_command,
    scratch_dir,
    version,
)

BASELINE_REQUIREMENT = "nwp500-python==6.1.1"
BASELINE_MODULE = "nwp500"
OURS_MODULE = "nwp500d"
# Module to distribution: the version printed must be the installed distribution's, not a module attribute.
DISTRIBUTIONS = {OURS_MODULE: "nwp500d", BASELINE_MODULE: "nwp500-python"}

HANGUP_NAME = "AWS_ERROR_MQTT_UNEXPECTED_HANGUP"
HANGUP_CODE = 5134
HANGUP_MESSAGE = "The connection was closed unexpectedly."

VENV_TIMEOUT_SECS = 180.0
PIP_TIMEOUT_SECS = 600.0
FAILURE_TAIL_LINES = 15  # of a failing venv or pip command's output, in the error


# ---------------------------------------------------------------- measurement (runs on both sides)


class _Collector(Protocol):
    def record_publish(self, queued: bool = False) -> None: ...

    def record_connection_drop(self, error: BaseException | None = None) -> Awaitable[object]: ...

    def record_connection_success(self, event_type: str = "connected") -> Awaitable[object]: ...

    def export_json(self) -> str: ...


CollectorFactory = Callable[[int], _Collector]


class _HangupError(Exception):
    """Stands in for awscrt's AwsCrtError (same ``name``/``code``/``message``) only where awscrt is not importable.

    Upstream classifies drops with ``isinstance(error, AwsCrtError)``, so the real class is used whenever it exists,
    on both sides, or upstream would skip its per-error bookkeeping and look cheaper than it is.
    """

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message


def _hangup_error() -> tuple[BaseException, str]:
    try:
        crt = importlib.import_module("awscrt.exceptions")
    except ImportError:
        return _HangupError(HANGUP_CODE, HANGUP_NAME, HANGUP_MESSAGE), "stand-in _HangupError (no awscrt)"
    error = crt.AwsCrtError(code=HANGUP_CODE, name=HANGUP_NAME, message=HANGUP_MESSAGE)
    return cast(BaseException, error), "awscrt.exceptions.AwsCrtError"


def _load_factory(module_name: str) -> tuple[CollectorFactory, str]:
    """Both packages are imported the same dynamic way, so neither side pays for a path the other does not."""
    module = importlib.import_module(module_name)
    cls = getattr(module, "MqttDiagnosticsCollector", None)
    if cls is None:  # older nwp500-python releases kept it out of the package's top level
        cls = importlib.import_module(f"{module_name}.mqtt_diagnostics").MqttDiagnosticsCollector

    def make(retained: int) -> _Collector:
        return cast(_Collector, cls(max_events_retained=retained))

    return make, str(getattr(module, "__file__", "?"))


def _time_publish(make: CollectorFactory, calls: int, repeats: int) -> list[float]:
    samples: list[float] = []
    for _ in range(repeats):
        publish = make(1000).record_publish
        with gc_paused():
            start = time.perf_counter()
            for _ in range(calls):
                publish()
            samples.append(time.perf_counter() - start)
    return samples


async def _fill(collector: _Collector, pairs: int, error: BaseException) -> float:
    """Timed inside the loop so that creating and closing the event loop is not charged to either collector."""
    drop = collector.record_connection_drop
    success = collector.record_connection_success
    start = time.perf_counter()
    for _ in range(pairs):
        await drop(error=error)
        await success(event_type="resumed")
    return time.perf_counter() - start


def _time_size(make: CollectorFactory, size: int, repeats: int, error: BaseException) -> dict[str, Any]:
    fill_samples: list[float] = []
    collector = make(size)
    for _ in range(repeats):
        collector = make(size)  # the last one filled is the one exported
        with gc_paused():
            fill_samples.append(asyncio.run(_fill(collector, size, error)))
    export_samples: list[float] = []
    text = ""
    for _ in range(repeats):
        with gc_paused():
            start = time.perf_counter()
            text = collector.export_json()
            export_samples.append(time.perf_counter() - start)
    exported = json.loads(text)
    return {
        "size": size,
        "fill_seconds": fill_samples,
        "export_seconds": export_samples,
        "drops_exported": len(exported.get("recent_drops") or []),
        "connections_exported": len(exported.get("recent_connections") or []),
        "export_bytes": len(text.encode()),
    }


def measure(module_name: str, publish_calls: int, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Everything one side reports, as plain JSON-able data, so the subprocess and the parent share one shape."""
    make, module_file = _load_factory(module_name)
    error, error_kind = _hangup_error()
    distribution = DISTRIBUTIONS.get(module_name, module_name)
    return {
        "module": module_name,
        "module_file": module_file,
        "distribution": distribution,
        "version": version(distribution),
        "python": python_label(),
        "executable": sys.executable,
        "awscrt": version("awscrt"),
        "error_class": error_kind,
        "publish": {"calls": publish_calls, "seconds": _time_publish(make, publish_calls, repeats)},
        "sizes": [_time_size(make, size, repeats, error) for size in sizes],
    }


# ---------------------------------------------------------------- the baseline venv


def _run(command: list[str], timeout: float, what: str, *, scratch: Path | None = None) -> str:
    """Own process group, so a timeout or an interrupt also ends whatever pip spawned (build backends). With
    ``scratch``, its temporary files go there too (pip's own build and unpack directories outlive a killed pip)."""
    env = {**os.environ, "TMPDIR": str(scratch)} if scratch is not None else None
    out = run_command(command, timeout, what, tail_lines=FAILURE_TAIL_LINES, stdout_if_silent=True, env=env)
    return out.decode(errors="replace")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _create_baseline_venv(parent: Path) -> Path:
    venv = parent / "venv"
    progress(f"creating a throwaway venv for {BASELINE_REQUIREMENT} in {venv}")
    _run([sys.executable, "-I", "-m", "venv", str(venv)], VENV_TIMEOUT_SECS, "python -m venv")
    python = _venv_python(venv)
    progress(f"pip install {BASELINE_REQUIREMENT} (into the throwaway venv only)")
    _run(
        [str(python), "-I", "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
         BASELINE_REQUIREMENT],
        PIP_TIMEOUT_SECS,
        f"pip install {BASELINE_REQUIREMENT}",
        scratch=parent,
    )
    return python


def _measure_baseline(python: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``-I`` keeps the script's folder and PYTHONPATH off sys.path: only the venv's own nwp500 can be measured."""
    progress(f"measuring {BASELINE_MODULE} in {python}")
    out = _run(
        [str(python), "-I", str(Path(__file__).resolve()), "--measure", BASELINE_MODULE, *_shared_args(args)],
        args.timeout,
        "baseline measurement",
    )
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise BenchError("baseline measurement printed nothing")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise BenchError(f"baseline measurement printed no JSON: {lines[-1][:200]!r}") from exc
    return result


# ---------------------------------------------------------------- report


def _best(samples: Sequence[float]) -> float:
    return min(samples)


def _rows(ours: dict[str, Any], theirs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each row carries which direction is better, so a ratio is never read the wrong way round."""
    rows: list[dict[str, Any]] = []
    calls = int(ours["publish"]["calls"])
    rows.append(
        {
            "figure": "record_publish calls/s",
            "better": "higher",
            "ours": calls / _best(ours["publish"]["seconds"]),
            "theirs": None if theirs is None else calls / _best(theirs["publish"]["seconds"]),
        }
    )
    their_sizes = {entry["size"]: entry for entry in theirs["sizes"]} if theirs else {}
    for entry in ours["sizes"]:
        size = entry["size"]
        other = their_sizes.get(size)
        rows.append(
            {
                "figure": f"export_json {size:,} events (ms)",
                "better": "lower",
                "ours": _best(entry["export_seconds"]) * 1000,
                "theirs": None if other is None else _best(other["export_seconds"]) * 1000,
            }
        )
        rows.append(
            {
                "figure": "  drops / connections in export",
                "better": None,
                "ours": f"{entry['drops_exported']} / {entry['connections_exported']}",
                "theirs": None if other is None else f"{other['drops_exported']} / {other['connections_exported']}",
            }
        )
        rows.append(
            {
                "figure": "  export size (KiB)",
                "better": None,
                "ours": entry["export_bytes"] / 1024,
                "theirs": None if other is None else other["export_bytes"] / 1024,
            }
        )
    for entry in ours["sizes"]:
        size = entry["size"]
        other = their_sizes.get(size)
        rows.append(
            {
                "figure": f"record drop+success pairs/s ({size:,} pairs)",
                "better": "higher",
                "ours": size / _best(entry["fill_seconds"]),
                "theirs": None if other is None else size / _best(other["fill_seconds"]),
            }
        )
    for row in rows:
        mine, other_value = row["ours"], row["theirs"]
        numeric = isinstance(mine, float) and isinstance(other_value, float) and other_value > 0
        row["ratio_ours_over_theirs"] = mine / other_value if numeric else None
        speedup = None
        if numeric and row["better"] == "higher":
            speedup = mine / other_value
        elif numeric and row["better"] == "lower" and mine > 0:
            speedup = other_value / mine
        row["ours_speedup"] = speedup  # > 1: ours is faster, whichever way the figure runs
    return rows


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if not isinstance(value, float):
        return str(value)
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _verdict(speedup: float | None) -> str:
    if speedup is None:
        return "-"
    if speedup >= 1:
        return f"ours {speedup:.2f}x faster"
    return f"ours {1 / speedup:.2f}x slower"


def _side_line(label: str, side: dict[str, Any], note: str = "") -> str:
    return (
        f"{label}: {side['distribution']} {side['version']} on {side['python']} ({side['executable']}{note}); "
        f"awscrt {side['awscrt']}; drop error: {side['error_class']}"
    )


def _print_table(report: dict[str, Any]) -> None:
    ours, theirs = report["ours"], report["theirs"]
    their_title = f"{theirs['distribution']} {theirs['version']}" if theirs else "baseline (skipped)"
    header = ["figure", f"{ours['distribution']} {ours['version']}", their_title, "ratio (ours/theirs)", "better",
              "verdict"]
    body = [
        [
            row["figure"],
            _number(row["ours"]),
            _number(row["theirs"]),
            "-" if row["ratio_ours_over_theirs"] is None else f"{row['ratio_ours_over_theirs']:.3f}",
            row["better"] or "-",
            _verdict(row["ours_speedup"]),
        ]
        for row in report["rows"]
    ]
    print_columns(header, body)
    config = report["config"]
    print()
    print(_side_line("ours  ", ours))
    if theirs:
        note = ", throwaway venv, removed at exit" if report["baseline_throwaway"] else ""
        print(_side_line("theirs", theirs, note))
        if theirs["version"] != BASELINE_REQUIREMENT.split("==")[1]:
            print(f"warning: the baseline venv has {theirs['distribution']} {theirs['version']}, "
                  f"not {BASELINE_REQUIREMENT}")
    else:
        print("theirs: not measured (--no-baseline)")
    print(
        f"method: best of {config['repeats']} repetitions each (time.perf_counter, GC paused while timed); "
        f"record_publish: {config['publish_calls']:,} calls per repetition; an N-event collector has "
        f"max_events_retained=N and N drops ({HANGUP_NAME}, code {HANGUP_CODE}) alternating with N 'resumed' "
        "successes; export figures time export_json() on the last filled collector."
    )
    print(
        "note: ratio is ours/theirs; 'better' says which direction wins; verdict is the speedup either way. "
        "Upstream exports the last 50 drops and connections, ours the last 100, with more fields per event."
    )
    print(f"wall time: {report['elapsed_seconds']:.1f} s (baseline venv setup {report['setup_seconds']:.1f} s)")


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-venv", type=Path, metavar="DIR",
                          help=f"reuse this venv (with {BASELINE_REQUIREMENT}) instead of building a throwaway one")
    baseline.add_argument("--no-baseline", action="store_true", help="measure nwp500d only")
    add_json_flag(parser)
    parser.add_argument("--publish-calls", type=positive_int, default=1_000_000, metavar="N")
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[1000, 10_000], metavar="N",
                        help="retained-event counts for the export and recording figures")
    parser.add_argument("--repeats", type=positive_int, default=5, metavar="N", help="best of N (default 5)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECS",
                        help="limit for the baseline measurement subprocess (default 600)")
    parser.add_argument("--measure", metavar="MODULE", help=argparse.SUPPRESS)
    return parser


def _shared_args(args: argparse.Namespace) -> list[str]:
    return [
        "--publish-calls", str(args.publish_calls),
        "--repeats", str(args.repeats),
        "--sizes", *(str(size) for size in args.sizes),
    ]


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    setup_seconds = 0.0
    theirs: dict[str, Any] | None = None
    scratch: Path | None = None
    with contextlib.ExitStack() as cleanup:
        python: Path | None = None
        if args.baseline_venv is not None:
            python = _venv_python(args.baseline_venv)
            if not python.exists():
                raise BenchError(f"--baseline-venv {args.baseline_venv}: no {python}")
        elif not args.no_baseline:
            scratch = cleanup.enter_context(scratch_dir("nwp500d-bench-"))
            setup_started = time.perf_counter()
            python = _create_baseline_venv(scratch)
            setup_seconds = time.perf_counter() - setup_started
        progress(f"measuring {OURS_MODULE} in {sys.executable}")
        ours = measure(OURS_MODULE, args.publish_calls, args.sizes, args.repeats)
        if python is not None:
            theirs = _measure_baseline(python, args)
    return {
        "config": {"publish_calls": args.publish_calls, "sizes": args.sizes, "repeats": args.repeats},
        "ours": ours,
        "theirs": theirs,
        "baseline_throwaway": scratch is not None,
        "rows": _rows(ours, theirs),
        "elapsed_seconds": time.perf_counter() - started,
        "setup_seconds": setup_seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.publish_calls, args.sizes, args.repeats)), flush=True)
        return 0
    exit_on_sigterm()  # so the scratch directory, the venv in it, is removed on the way out
    try:
        report = _compare(args)
    except BenchError as exc:
        status = fail(exc)
        if args.baseline_venv is None and not args.no_baseline:
            print("bench: --no-baseline measures nwp500d alone", file=sys.stderr)
        return status
    return finish(report, as_json=args.json, table=_print_table)


if __name__ == "__main__":
    sys.exit(main())
