"""Crash-safe files under the state directory: the append-only event log and the rotating snapshots.

The event log is the source of truth: one JSON record per line, written and fsync'd before ``append`` returns True,
so a power cut loses at most the record being written, and a torn line is skipped (with a warning) on reload without
losing anything before it. Snapshots are conveniences for people (what ``export_json`` returns), written atomically.

A full, read-only or vanished directory never stops the daemon: the failure is reported once, records wait in
memory (bounded), and they are written, in order, as soon as the directory accepts writes again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nwp500d import logfields
from nwp500d.clock import Clock, SystemClock

FILE_MODE = 0o640
PRIVATE_FILE_MODE = 0o600  # credentials: the service user only
DIR_MODE = 0o750
MAX_PENDING_RECORDS = 100_000

_log = logging.getLogger("nwp500d.store")
_EVENT_FILE = re.compile(r"^events-(?P<day>\d{8})(?:\.(?P<part>\d+))?\.jsonl$")
_SNAPSHOT_FILE = re.compile(r"^diagnostics_\d{8}T\d{6}Z\.json$")
LATEST_SNAPSHOT = "diagnostics-latest.json"


def ensure_directory(path: Path) -> None:
    """Create ``path`` (and parents) as 0750; tighten an existing one that is wider."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    mode = path.stat().st_mode & 0o777
    if mode & ~DIR_MODE:
        path.chmod(mode & DIR_MODE)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


class FailureReporter:
    """Say it once when writing starts failing and once when it works again; nothing in between."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing_since: str | None = None
        self.failures = 0

    def failed(self, exc: OSError, detail: str) -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = _describe_os_error(exc)
            _log.error("cannot write %s: %s; %s", self.what, self.failing_since, detail,
                       extra=logfields.event("storage_failing"))

    def succeeded(self, detail: str) -> None:
        if self.failing_since is not None:
            _log.warning("writing %s works again after %d failed writes; %s", self.what, self.failures, detail,
                         extra=logfields.event("storage_recovered"))
            self.failing_since = None
            self.failures = 0


@dataclass
class LoadResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    where: list[str] = field(default_factory=list)  # "file:line" of each record, for messages about it


def _event_file_key(path: Path) -> tuple[str, int]:
    match = _EVENT_FILE.match(path.name)
    assert match is not None
    return match.group("day"), int(match.group("part") or 0)


class EventStore:
    def __init__(
        self,
        directory: Path,
        *,
        max_files: int = 90,
        max_bytes: int = 50 * 1024 * 1024,
        clock: Clock | None = None,
        max_pending: int = MAX_PENDING_RECORDS,
    ) -> None:
        self.directory = directory
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._clock = clock or SystemClock()
        self._pending: deque[bytes] = deque()
        self._max_pending = max_pending
        self._dropped_pending = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._needs_newline = False
        self._others_size = 0  # bytes in the files other than the one being written (known since the last prune)
        self._reporter = FailureReporter(f"event records to {directory}")

    # ------------------------------------------------------------------ reading

    def event_files(self) -> list[Path]:
        try:
            names = [p for p in self.directory.iterdir() if _EVENT_FILE.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted(names, key=_event_file_key)

    def load(self) -> LoadResult:
        """Every readable record, oldest first, each id once. Unreadable lines are skipped and listed."""
        result = LoadResult()
        seen: set[str] = set()
        for path in self.event_files():
            result.files += 1
            try:
                raw = path.read_bytes()
            except OSError as exc:
                result.skipped.append(f"{path}: unreadable: {_describe_os_error(exc)}")
                continue
            for number, record in _parse_lines(path, raw, result.skipped):
                record_id = record.get("id")
                if isinstance(record_id, str):
                    if record_id in seen:
                        continue
                    seen.add(record_id)
                record.setdefault("_line", f"{path}:{number}")
                result.records.append(record)
        for message in result.skipped:
            _log.warning("%s", message)
        result.where = [str(record.pop("_line", "?")) for record in result.records]
        return result

    # ------------------------------------------------------------------ writing

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def append(self, record: dict[str, Any]) -> bool:
        """Persist ``record`` (an ``id`` is added). True once it is on disk; False while it waits in memory."""
        if "id" not in record:
            record = {"id": uuid.uuid4().hex, **record}
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode()
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._dropped_pending += 1
        self._pending.append(line)
        return self.flush_pending()

    def flush_pending(self) -> bool:
        """Write what waits in memory, in order. True when nothing is left waiting."""
        written = 0
        while self._pending:
            try:
                self._write(self._pending[0])
            except OSError as exc:
                self._close_file()
                self._reporter.failed(
                    exc, f"keeping {len(self._pending)} records in memory until the directory accepts writes"
                )
                return False
            self._pending.popleft()
            written += 1
        if written:
            lost = f" ({self._dropped_pending} oldest were dropped from memory)" if self._dropped_pending else ""
            self._reporter.succeeded(f"{written} waiting records written{lost}")
            self._dropped_pending = 0
        return True

    def close(self) -> None:
        self._close_file()

    def _write(self, line: bytes) -> None:
        fd = self._file_for_today(len(line))
        data = b"\n" + line if self._needs_newline else line
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            # Leave no partial line behind; if even that fails, start the next record on a fresh line.
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._needs_newline = True
            raise
        self._needs_newline = False
        self._size = start + len(data)
        if self._others_size + self._size > self.max_bytes:
            self._prune()  # the file being written counts against the budget too

    def _file_for_today(self, incoming: int) -> int:
        day = self._clock.wall().strftime("%Y%m%d")
        if self._fd is not None and self._path is not None:
            vanished = os.fstat(self._fd).st_nlink == 0
            same_day = self._path.name.startswith(f"events-{day}")
            too_big = self._size + incoming > self._part_budget()
            if not vanished and same_day and not too_big:
                return self._fd
            self._close_file()
        ensure_directory(self.directory)
        path = self._next_path(day, incoming)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        size = os.fstat(fd).st_size
        # A file left with a torn last line (power cut) must not glue the next record onto it.
        self._needs_newline = size > 0 and _last_byte(path, size) != b"\n"
        self._fd, self._path, self._size = fd, path, size
        self._prune()
        return fd

    def _part_budget(self) -> int:
        # A day's file is split once it would take more than a quarter of the whole budget, so retention by
        # bytes can always drop something other than the file being written.
        return max(self.max_bytes // 4, 1)

    def _next_path(self, day: str, incoming: int) -> Path:
        parts = [p for p in self.event_files() if _event_file_key(p)[0] == day]
        if not parts:
            return self.directory / f"events-{day}.jsonl"
        last = parts[-1]
        if last.stat().st_size + incoming <= self._part_budget():
            return last
        return self.directory / f"events-{day}.{_event_file_key(last)[1] + 1}.jsonl"

    def _prune(self) -> None:
        """Drop the oldest files until both budgets hold; never the file being written."""
        files = self.event_files()
        sizes = [p.stat().st_size for p in files]
        count, total = len(files), sum(sizes)
        for path, size in zip(files, sizes, strict=True):
            if path == self._path or (count <= self.max_files and total <= self.max_bytes):
                break
            path.unlink(missing_ok=True)
            count, total = count - 1, total - size
            _log.info("event retention removed %s (%d bytes)", path.name, size)
        current = self._path.stat().st_size if self._path is not None and self._path.exists() else 0
        self._others_size = total - current

    def _close_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._path = None


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def _parse_lines(path: Path, raw: bytes, skipped: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = raw.split(b"\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        torn = index == len(lines) - 1  # no newline after it: the write was cut short
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # torn, not UTF-8, absurdly long numbers, absurdly deep
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            what = "torn last record" if torn else "unreadable record"
            skipped.append(f"{path}:{index + 1}: {what} skipped ({len(line)} bytes)")
            continue
        yield index + 1, record


class SnapshotExporter:
    """``exports/diagnostics_<UTC stamp>.json`` plus ``diagnostics-latest.json``, each written atomically."""

    def __init__(self, directory: Path, *, keep: int = 288, clock: Clock | None = None) -> None:
        self.directory = directory
        self.keep = keep
        self._clock = clock or SystemClock()
        self._reporter = FailureReporter(f"snapshots to {directory}")

    def write(self, text: str) -> Path | None:
        """The snapshot's path, or None if it could not be written (reported once; the next call tries again)."""
        stamp = self._clock.wall().strftime("%Y%m%dT%H%M%SZ")
        final = self.directory / f"diagnostics_{stamp}.json"
        try:
            ensure_directory(self.directory)
            atomic_write(final, text.encode())
            _replace_with_link(final, self.directory / LATEST_SNAPSHOT)
            _fsync_directory(self.directory)
        except OSError as exc:
            self._reporter.failed(exc, "monitoring continues; the next snapshot will try again")
            return None
        self._reporter.succeeded("snapshots resumed")
        self._prune()
        return final

    def snapshots(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if _SNAPSHOT_FILE.match(p.name))
        except FileNotFoundError:
            return []

    def _prune(self) -> None:
        snapshots = self.snapshots()
        for path in snapshots[: max(0, len(snapshots) - self.keep)]:
            path.unlink(missing_ok=True)
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Readers see the old content or the new, never a mix; the file is created with ``mode`` from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    # O_EXCL|O_NOFOLLOW: never write through a link someone planted where the temporary file goes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    _fsync_directory(path.parent)


def _replace_with_link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``'s content atomically: a hard link, so it never dangles after retention."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        atomic_write(link, target.read_bytes())
        return
    tmp.replace(link)
