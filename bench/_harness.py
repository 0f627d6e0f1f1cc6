"""Plumbing shared by the bench scripts, so that each script keeps only what it measures and how it reports it.

Every bench has to do the same few things the same way for its figures to be trusted and its host left clean: start
children in their own process group and kill the whole group on a timeout or SIGTERM (a child's own children,
pip's build backends say, would outlive a plain kill), remove its scratch directories whatever happens, turn an
expected failure into one line on stderr and a documented exit status, and print ours beside the baseline in a
table whose columns line up.

Standard library only, on purpose: ``collector.py`` runs itself as its own measurement script in a throwaway venv
under ``python -I``, and that side must import nothing but the standard library and the module it measures.

Not a script: the benches import it as ``_harness`` (``python bench/NAME.py`` puts bench/ first on sys.path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

R = TypeVar("R")
Spread = dict[str, float]

REPO = Path(__file__).resolve().parent.parent
KILL_GRACE_SECS = 10.0  # after SIGKILL, how long to wait to reap the child and drain its pipes


class BenchError(Exception):
    """A failure worth one clear line on stderr rather than a traceback (no mosquitto, no network for pip, a bad
    flag, a child that never came up); every bench exits 1 on it."""


# ---------------------------------------------------------------- messages and exit statuses


def progress(message: str, *, tag: str = "bench") -> None:
    """On stderr and flushed at once, so progress never mixes into the figures on stdout, which may be piped JSON."""
    print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def fail(exc: BaseException, *, tag: str = "bench") -> int:
    """The one line an expected failure earns, and exit status 1, which every bench uses for "could not run"."""
    print(f"{tag}: {exc}", file=sys.stderr)
    return 1


def finish(report: dict[str, Any], *, as_json: bool, table: Callable[[dict[str, Any]], None]) -> int:
    """The figures as JSON for a script to read (``--json``), else the bench's table for a person; exit status 0."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table(report)
    return 0


def run_to_exit_status(
    compute: Callable[[], R],
    show: Callable[[R], int],
    *,
    errors: tuple[type[BaseException], ...],
    stop: type[BaseException],
    stopped_note: str,
) -> int:
    """Run a bench whose SIGTERM handling raises ``stop`` and map how it ended to the exit status a caller expects.

    128 + SIGTERM as a shell reports a killed process, but after a clean teardown, which ``stopped_note`` tells the
    operator; 130 for Ctrl-C, without a traceback; 1 and one line for ``errors``; otherwise ``show``'s status.
    """
    try:
        report = compute()
    except stop:
        print(f"bench: stopped by SIGTERM ({stopped_note})", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130
    except errors as exc:
        return fail(exc)
    return show(report)


# ---------------------------------------------------------------- SIGTERM and child processes


class Termination:
    """Turns SIGTERM into SystemExit, except while a child is being spawned.

    Raised inside ``Popen()`` the exit would leave a started child that no code holds, so it would outlive the bench
    (and keep writing into a directory being removed); the signal waits until the child can be killed.
    """

    def __init__(self) -> None:
        self.spawning = False
        self.pending: int | None = None

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.spawning:
            self.pending = signum
            return
        raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def spawning_child(self) -> Iterator[None]:
        self.spawning = True
        try:
            yield
        finally:
            self.spawning = False
        if self.pending is not None:
            raise SystemExit(128 + self.pending)


termination = Termination()  # one per process: there is only one SIGTERM handler to install


def exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit, so every ``finally`` and ``with`` (scratch directories, children) still runs."""
    signal.signal(signal.SIGTERM, termination.handler)


@contextlib.contextmanager
def sigterm_cancels_current_task() -> Iterator[None]:
    """For an asyncio bench: SIGTERM cancels the running task, so its ``async with`` and ``finally`` unwind as on
    any other error; the caller sees ``asyncio.CancelledError`` out of ``asyncio.run``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("sigterm_cancels_current_task() needs a running task")
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def popen(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in its own process group (so it can be killed with everything it spawned), started where SIGTERM
    cannot interrupt ``Popen()`` half-way."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with termination.spawning_child():
            proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    except BaseException:
        # A SIGTERM held back during Popen() is raised as the block ends: the child exists but nobody holds it yet.
        if proc is not None:
            kill_group(proc)
        raise
    return proc


def kill_group_now(pid: int) -> None:
    """SIGKILL the child's whole group; a group that is already gone is not an error. Safe from a timer thread."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the group, then reap the child and drain its pipes, bounded: a zombie or open pipe must not outlive us."""
    kill_group_now(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=KILL_GRACE_SECS)


def run_command(command: Sequence[str], timeout: float, what: str, *, tail_lines: int = 10,
                stdout_if_silent: bool = False, env: Mapping[str, str] | None = None) -> bytes:
    """stdout of a command run in its own process group, killed with the group on timeout or interrupt.

    A non-zero exit raises BenchError with the last ``tail_lines`` of stderr, since the end is where the cause is;
    with ``stdout_if_silent``, of stdout when stderr is empty, so a tool that explains itself there is not cut off.
    """
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if proc is not None:
            kill_group(proc)
        raise BenchError(f"{what} timed out after {timeout:.0f} s") from None
    except BaseException:
        if proc is not None:
            kill_group(proc)
        raise
    if proc.returncode != 0:
        shown = err or out if stdout_if_silent else err
        tail = "\n".join(shown.decode(errors="replace").strip().splitlines()[-tail_lines:])
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return out


@contextlib.contextmanager
def scratch_dir(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """A fresh temporary directory, removed on the way out, on errors and SIGTERM too (a bench run often must not
    leave hundreds of MB in /tmp); with ``keep`` it stays for a post-mortem and its path is printed instead."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            progress(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- measuring


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """As timeit does: a collection landing in one repetition and not another is noise, not the measured code's cost."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def version(distribution: str) -> str | None:
    """The installed distribution's version (not a module attribute, which may lie or be missing); None if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(*distributions: str) -> dict[str, str | None]:
    """What a report names beside its figures: they mean little without the versions that produced them."""
    return {name: version(name) for name in distributions}


def python_label() -> str:
    """Implementation and version, e.g. ``CPython 3.11.7``: the interpreter weighs on every figure."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def spread(values: Sequence[float]) -> Spread | None:
    """Median with min and max: a few trials are reported by their middle, and the range shows how far to trust it."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(mine: float | None, other: float | None) -> float | None:
    """ours / baseline, or None where either is missing or the baseline is zero (no ratio beats a meaningless one)."""
    if mine is None or other is None or other <= 0:
        return None
    return mine / other


def median_ratio(mine: Spread | None, other: Spread | None) -> float | None:
    """The ratio of two spreads' medians: one odd trial moves a median far less than a mean."""
    if mine is None or other is None:
        return None
    return ratio(mine["median"], other["median"])


# ---------------------------------------------------------------- reporting


def spread_cell(value: Spread | None, missing: int = 0) -> str:
    """``median (min-max)``, with how many trials gave no figure, so a median of fewer trials cannot pass unnoticed."""
    if value is None:
        return f"n/a ({missing} failed)" if missing else "n/a"
    text = f"{value['median']:.3f} ({value['min']:.3f}-{value['max']:.3f})"
    return f"{text} [{missing} failed]" if missing else text


def print_columns(header: Sequence[str], body: Sequence[Sequence[str]], *, left: int = 1) -> None:
    """A plain-text table: the first ``left`` columns (labels) left-aligned, the figures right-aligned so that they
    line up on their last digit, three spaces apart, no trailing blanks. Every bench's table reads the same way."""
    lines = [header, *body]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:left], widths[:left], strict=True)]
        cells += [cell.rjust(width) for cell, width in zip(line[left:], widths[left:], strict=True)]
        print("   ".join(cells).rstrip())


# ---------------------------------------------------------------- command line


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """Described by the first line of the bench's module docstring, so ``--help`` and the docstring cannot drift."""
    return argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Every bench offers its figures as JSON too, for whoever compares runs with a script rather than by eye."""
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")


def positive_int(text: str) -> int:
    """An argparse type for counts; "10,000" and "10_000" are accepted, as sizes are written in the docs."""
    value = int(text.replace(",", "").replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def repo_on_path() -> None:
    """Put the repository root first on sys.path: ``tests`` (the soak machinery, the netns lab) is not installed,
    and a bench script may be started from any directory."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
