"""Reading host events from the journal: a window query, a live follow, and the same from an export file.

Window queries use systemd-python's Reader with indexed matches (one OR-ed disjunct per match term) and
``seek_realtime`` with *float seconds* (an int is taken as microseconds and seeks to 1970). A fresh Reader per query:
opening costs ~0.1 ms and a long-lived one pins vacuumed files. Rotated files are read because the Reader opens the
whole directory. The live follow is fd-driven on the event loop (``add_reader`` on the Reader's inotify fd), with
the INVALIDATE that rotation produces handled like an append.
"""

from __future__ import annotations

import asyncio
import bisect
import grp
import logging
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from nwp500d.clock import parse_iso_utc
from nwp500d.journal.events import JOURNAL_MATCHES, normalize
from nwp500d.journal.export_format import parse_export
from nwp500d.model import HostEvent

_log = logging.getLogger("nwp500d.journal")

SYSTEM_JOURNAL_DIRS = (Path("/var/log/journal"), Path("/run/log/journal"))


class JournalUnavailable(Exception):
    """The journal cannot be read here; the message says why and what to change (one line)."""


class HostEventSource(Protocol):
    def window(self, start: datetime, end: datetime) -> list[HostEvent]: ...


def _journal_module() -> Any:
    try:
        from systemd import journal  # noqa: PLC0415 - optional at import time: report/analyze work without it
    except ImportError as exc:
        raise JournalUnavailable(
            f"systemd-python is not installed ({exc}); install libsystemd-dev and reinstall nwp500d"
        ) from exc
    return journal


def _add_matches(reader: Any) -> None:
    for index, (name, value) in enumerate(JOURNAL_MATCHES):
        if index:
            reader.add_disjunction()
        reader.add_match(**{name: value})


def _events_from(entries: Iterable[dict[str, Any]], end: datetime) -> list[HostEvent]:
    events = []
    for entry in entries:
        stamp = entry.get("__REALTIME_TIMESTAMP")
        if isinstance(stamp, datetime) and stamp > end:
            break
        event = normalize(entry)
        if event is not None:
            events.append(event)
    return events


class SystemdJournal:
    """The live system journal (``directory=None``), a directory of ``.journal`` files, or explicit files."""

    def __init__(self, directory: Path | None = None, files: Sequence[Path] = ()) -> None:
        if directory is not None and not directory.is_dir():
            raise JournalUnavailable(f"{directory}: not a directory of .journal files")
        self.directory = directory
        self.files = tuple(files)
        self._journal = _journal_module()

    def _open(self) -> Any:
        journal = self._journal
        if self.files:
            return journal.Reader(files=[str(path) for path in self.files])
        if self.directory is not None:
            return journal.Reader(path=str(self.directory))
        return journal.Reader(flags=journal.SYSTEM_ONLY)

    def window(self, start: datetime, end: datetime) -> list[HostEvent]:
        files = self._files_for(start, end)
        if files is not None and not files:
            return []
        reader = self._journal.Reader(files=[str(p) for p in files]) if files is not None else self._open()
        try:
            _add_matches(reader)
            reader.seek_realtime(start.timestamp())  # float seconds: an int would be microseconds
            return _events_from(iter(reader.get_next, {}), end)
        finally:
            reader.close()

    def _files_for(self, start: datetime, end: datetime) -> list[Path] | None:
        """Only the files whose entries overlap the window: every match term is looked up in every open file, so
        skipping archived files that end before the window is most of a query's cost (None: let the Reader pick)."""
        if self.files:
            candidates = list(self.files)
        elif self.directory is not None:
            candidates = sorted(self.directory.glob("*.journal"))
        else:
            candidates = [p for base in SYSTEM_JOURNAL_DIRS for p in sorted(base.glob("*/system*.journal"))]
            if not candidates:
                return None
        start_us, end_us = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
        chosen = []
        for path in candidates:
            span = journal_file_span(path)
            if span is None or (span[0] <= end_us and (span[1] == 0 or span[1] >= start_us)):
                chosen.append(path)
        return chosen

    def follow(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[HostEvent], None]) -> Callable[[], None]:
        """Call ``on_event`` for each new matching entry, from the event loop. Returns a function that stops it."""
        journal = self._journal
        reader = self._open()
        _add_matches(reader)
        reader.seek_tail()
        reader.get_previous()
        reader.process()  # the first call reports INVALIDATE at once; drain it before relying on events

        def readable() -> None:
            if reader.process() == journal.NOP:
                return
            for entry in reader:  # APPEND and INVALIDATE (a rotated-in file) both mean: read what is new
                event = normalize(entry)
                if event is not None:
                    on_event(event)

        loop.add_reader(reader.fileno(), readable)

        def stop() -> None:
            loop.remove_reader(reader.fileno())
            reader.close()

        return stop


_HEADER = struct.Struct("<8s176xQQ")  # signature, then head/tail entry realtime at byte 184 of the header


def journal_file_span(path: Path) -> tuple[int, int] | None:
    """(first, last) entry realtime in µs from a .journal file's header; None when it cannot be read as one.

    The header layout (signature "LPKSHHRH", head_entry_realtime at 184, tail_entry_realtime at 192) is part of
    systemd's documented on-disk format and has not moved since the format was introduced.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(_HEADER.size)
    except OSError:
        return None
    if len(raw) < _HEADER.size:
        return None
    signature, head, tail = _HEADER.unpack(raw)
    if signature != b"LPKSHHRH":
        return None
    return head, tail


class ExportFile:
    """A ``journalctl -o export`` file: parsed once, normalised, and windowed with a binary search."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalUnavailable(f"{path}: cannot read: {exc.strerror}") from None
        events = [event for entry in parse_export(data, str(path)) if (event := normalize(entry)) is not None]
        events.sort(key=lambda event: event.time)
        self._events = events
        self._times = [parse_iso_utc(event.time) for event in events]

    def window(self, start: datetime, end: datetime) -> list[HostEvent]:
        low = bisect.bisect_left(self._times, start)
        high = bisect.bisect_right(self._times, end)
        return self._events[low:high]


def system_journal_problem(directories: Sequence[Path] = SYSTEM_JOURNAL_DIRS) -> str | None:
    """Why this process cannot read the system journal, or None.

    A Reader opened without the rights silently sees nothing (no error), which would make every drop look
    uncorrelated; so look for system journal files this process cannot open and say which group is missing.
    """
    unreadable = []
    found = False
    for base in directories:
        try:
            paths = list(base.glob("*/system*.journal")) if base.is_dir() else []
        except PermissionError:
            return f"cannot list {base}: add the service user to the 'systemd-journal' group"
        for path in paths:
            found = True
            if not os.access(path, os.R_OK):
                unreadable.append(path)
    if unreadable:
        try:
            group = grp.getgrgid(unreadable[0].stat().st_gid).gr_name
        except (KeyError, OSError):
            group = "systemd-journal"
        return (f"cannot read {unreadable[0]} (and {len(unreadable) - 1} more): add the service user to the "
                f"'{group}' group (the unit's SupplementaryGroups={group})")
    if not found:
        return "no system journal files under /var/log/journal or /run/log/journal (is journald running?)"
    return None
