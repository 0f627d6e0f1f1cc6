"""The state directory: where it is, what lives in it, and how history is brought back after a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nwp500d.clock import iso_utc
from nwp500d.config import Config
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.model import RecordError
from nwp500d.store import FILE_MODE, EventStore, LoadResult, SnapshotExporter, atomic_write, ensure_directory

CLIENT_ID_FILE = "client-id"
EVENTS_DIR = "events"
EXPORTS_DIR = "exports"

_log = logging.getLogger("nwp500d.state")


@dataclass
class History:
    collector: MqttDiagnosticsCollector
    store: EventStore
    loaded: LoadResult


def event_store(state_dir: Path, config: Config) -> EventStore:
    return EventStore(
        state_dir / EVENTS_DIR,
        max_files=config.exports.events_max_files,
        max_bytes=config.exports.events_max_bytes,
    )


def snapshot_exporter(state_dir: Path, config: Config) -> SnapshotExporter:
    return SnapshotExporter(state_dir / EXPORTS_DIR, keep=config.exports.keep_snapshots)


def restore_history(collector: MqttDiagnosticsCollector, store: EventStore) -> LoadResult:
    """Load the event log into ``collector``. A record this version cannot apply is skipped and reported."""
    loaded = store.load()
    applied = []
    for record, where in zip(loaded.records, loaded.where, strict=True):
        try:
            collector.restore([record])
        except RecordError as exc:
            reason = str(exc).split(": ", 1)[-1]  # the collector's own "record 1 (kind)" prefix says nothing here
            loaded.skipped.append(f"{where}: {record.get('kind')} record skipped: {reason}")
            _log.warning("skipped a stored record: %s: %s", where, reason)
        else:
            applied.append(record)
    loaded.records = applied
    return loaded


def open_history(state_dir: Path, config: Config, collector: MqttDiagnosticsCollector, *, persist: bool) -> History:
    """Restore ``collector`` from the state directory; with ``persist`` every new record is appended to the log."""
    store = event_store(state_dir, config)
    loaded = restore_history(collector, store)
    if persist:
        collector.on_record(store.append)
    return History(collector, store, loaded)


def stable_client_id(state_dir: Path) -> str:
    """One MQTT client id per installation, kept across restarts: AWS IoT allows one live connection per id."""
    path = state_dir / CLIENT_ID_FILE
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    ensure_directory(state_dir)
    client_id = f"nwp500d-{uuid.uuid4().hex[:12]}"
    atomic_write(path, (client_id + "\n").encode())
    path.chmod(FILE_MODE)
    return client_id


async def export_periodically(
    history: History, exporter: SnapshotExporter, interval_secs: float, written: asyncio.Event | None = None
) -> None:
    """Write a snapshot every ``interval_secs`` until cancelled, and retry records still waiting for the disk.

    Runs as one of the daemon's named tasks; the final snapshot on shutdown is the caller's (it must not be lost to
    cancellation). ``written`` is set after each snapshot that reached the disk, for whoever waits on one.
    """
    while True:
        await asyncio.sleep(interval_secs)
        history.store.flush_pending()
        if exporter.write(history.collector.export_json()) is not None and written is not None:
            written.set()


KEEPALIVE_RESULT = "keepalive-experiment.json"


def save_keepalive_result(state_dir: Path, result: dict[str, Any], *, finished_at: datetime, source: str) -> Path:
    """Keep the experiment's result where ``report``, the classifier and the daemon's scheduler look for it.
    Raises OSError: the caller decides whether an unsaved result is worth a warning or an error."""
    ensure_directory(state_dir / EXPORTS_DIR)
    path = state_dir / EXPORTS_DIR / KEEPALIVE_RESULT
    data = {**result, "finished_at": iso_utc(finished_at), "finished_at_epoch": finished_at.timestamp(),
            "source": source}
    atomic_write(path, json.dumps(data, indent=2).encode())
    return path


def load_keepalive_result(state_dir: Path) -> dict[str, Any] | None:
    """The saved result, or None when there is none or it cannot be read (a damaged file is as good as none)."""
    try:
        data = json.loads((state_dir / EXPORTS_DIR / KEEPALIVE_RESULT).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def keepalive_result_time(state_dir: Path) -> float | None:
    """When the saved result was finished (epoch seconds); None when there is none. A result saved before this
    field existed counts from its file's modification time."""
    data = load_keepalive_result(state_dir)
    if data is None:
        return None
    finished = data.get("finished_at_epoch")
    if isinstance(finished, int | float) and not isinstance(finished, bool) and math.isfinite(finished):
        return float(finished)
    try:
        return (state_dir / EXPORTS_DIR / KEEPALIVE_RESULT).stat().st_mtime
    except OSError:
        return None


def load_nat_bracket(state_dir: Path) -> tuple[int | None, int | None] | None:
    """The NAT idle-timeout bracket the last keep-alive experiment saved, as classifier evidence (None: none)."""
    data = load_keepalive_result(state_dir)
    if data is None:
        return None
    lower, upper = data.get("lower_secs"), data.get("upper_secs")
    if not all(value is None or (isinstance(value, int) and not isinstance(value, bool)) for value in (lower, upper)):
        return None
    return lower, upper
