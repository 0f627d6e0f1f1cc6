"""EventStore and SnapshotExporter on a real filesystem; write failures injected at the os layer."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.store import LATEST_SNAPSHOT, EventStore, SnapshotExporter
from tests.fakes import CrtLikeError, FakeClock


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "attempt", "timestamp": "2026-11-21T12:00:00.000Z", "attempt": n, **extra}


def attempts(store: EventStore) -> list[int]:
    return [r["attempt"] for r in store.load().records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_append_and_reload_with_modes(tmp_path: Path, clock: FakeClock) -> None:
    directory = tmp_path / "state" / "events"
    store = EventStore(directory, clock=clock)
    for n in range(5):
        assert store.append(record(n))
    store.close()
    assert attempts(EventStore(directory)) == [0, 1, 2, 3, 4]
    (path,) = list(directory.iterdir())
    assert path.name == "events-20261121.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750


def test_daily_rotation_and_reload_order(tmp_path: Path, clock: FakeClock) -> None:
    store = EventStore(tmp_path, clock=clock)
    store.append(record(1))
    clock.advance(86400)
    store.append(record(2))
    clock.advance(86400)
    store.append(record(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events-20261121.jsonl", "events-20261122.jsonl", "events-20261123.jsonl",
    ]
    assert attempts(EventStore(tmp_path)) == [1, 2, 3]


def test_torn_last_line_is_skipped_and_nothing_before_it_lost(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = EventStore(tmp_path, clock=clock)
    for n in range(3):
        store.append(record(n))
    store.close()
    path = tmp_path / "events-20261121.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"kind":"attempt","attem')  # power cut mid-write
    with caplog.at_level(logging.WARNING):
        loaded = EventStore(tmp_path).load()
    assert [r["attempt"] for r in loaded.records] == [0, 1, 2]
    assert loaded.skipped == [f"{path}:4: torn last record skipped (24 bytes)"]
    assert "torn last record skipped" in caplog.text
    # The next record after the restart starts on a fresh line and is readable.
    again = EventStore(tmp_path, clock=clock)
    again.append(record(3))
    assert attempts(EventStore(tmp_path)) == [0, 1, 2, 3]


def test_corrupt_line_in_the_middle_is_skipped(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "events-20261121.jsonl"
    lines = [json.dumps(record(0)), "\x00\x01garbage", json.dumps([1, 2]), json.dumps(record(1))]
    path.write_text("\n".join(lines) + "\n")
    loaded = EventStore(tmp_path).load()
    assert [r["attempt"] for r in loaded.records] == [0, 1]
    assert len(loaded.skipped) == 2
    assert "unreadable record" in loaded.skipped[0]


def test_duplicate_ids_are_loaded_once(tmp_path: Path) -> None:
    line = json.dumps({"id": "abc", **record(7)})
    (tmp_path / "events-20261121.jsonl").write_text(f"{line}\n{line}\n")
    assert attempts(EventStore(tmp_path)) == [7]


def test_retention_by_file_count(tmp_path: Path, clock: FakeClock) -> None:
    store = EventStore(tmp_path, max_files=3, clock=clock)
    for n in range(6):
        store.append(record(n))
        clock.advance(86400)
    assert len(list(tmp_path.iterdir())) == 3
    assert attempts(EventStore(tmp_path)) == [3, 4, 5]


def test_retention_by_bytes_splits_a_busy_day(tmp_path: Path, clock: FakeClock) -> None:
    budget = 64 * 1024
    store = EventStore(tmp_path, max_bytes=budget, clock=clock)
    padding = "x" * 900
    for n in range(400):  # ~380 KB in one day, six times the budget
        assert store.append(record(n, padding=padding))
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= budget + 1024
    kept = attempts(EventStore(tmp_path))
    assert kept == list(range(kept[0], 400))  # the newest survive, in order, without gaps
    assert len(kept) > 40


class FailingWrites:
    """Make os.write fail with ``error`` while ``active``; a partial first chunk models a disk filling mid-line."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
        self.active = True
        self.error = error
        real_write = os.write

        def write(fd: int, data: Any) -> int:
            if self.active and fd > 2:
                real_write(fd, bytes(data)[:7])
                raise OSError(self.error, os.strerror(self.error))
            return real_write(fd, data)

        monkeypatch.setattr("nwp500d.store.os.write", write)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_failure_is_reported_once_and_records_wait_in_memory(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: int
) -> None:
    store = EventStore(tmp_path, clock=clock)
    assert store.append(record(0))
    failing = FailingWrites(monkeypatch, error)
    with caplog.at_level(logging.WARNING, logger="nwp500d.store"):
        assert not store.append(record(1))
        assert not store.append(record(2))
        assert not store.append(record(3))
        assert store.pending_count == 3
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert errno.errorcode[error] in errors[0].getMessage()
        failing.active = False
        assert store.append(record(4))
    assert store.pending_count == 0
    assert "works again after 3 failed writes; 4 waiting records written" in caplog.text
    # No partial bytes were left behind by the failed writes.
    assert attempts(EventStore(tmp_path)) == [0, 1, 2, 3, 4]


def test_pending_records_are_bounded(tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    store = EventStore(tmp_path, clock=clock, max_pending=5)
    failing = FailingWrites(monkeypatch, errno.ENOSPC)
    for n in range(8):
        store.append(record(n))
    assert store.pending_count == 5
    failing.active = False
    with caplog.at_level(logging.WARNING, logger="nwp500d.store"):
        assert store.flush_pending()
    assert "3 oldest were dropped from memory" in caplog.text
    assert attempts(EventStore(tmp_path)) == [3, 4, 5, 6, 7]


def test_directory_deleted_while_running_is_recreated(tmp_path: Path, clock: FakeClock) -> None:
    directory = tmp_path / "events"
    store = EventStore(directory, clock=clock)
    store.append(record(0))
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
    assert store.append(record(1))
    assert attempts(EventStore(directory)) == [1]


def test_collector_persists_through_the_store_and_restores(tmp_path: Path, clock: FakeClock) -> None:
    import asyncio

    async def scenario() -> dict[str, Any]:
        collector = MqttDiagnosticsCollector(clock=clock)
        store = EventStore(tmp_path, clock=clock)
        collector.on_record(store.append)
        await collector.record_connection_success()
        clock.advance(100)
        await collector.record_connection_drop(error=CrtLikeError("AWS_ERROR_MQTT_TIMEOUT", 5129))
        clock.advance(2)
        await collector.record_connection_success(event_type="rebuilt", attempt_number=1)
        return collector.get_metrics().to_dict()

    before = asyncio.run(scenario())
    restored = MqttDiagnosticsCollector(clock=FakeClock())
    restored.restore(EventStore(tmp_path).load().records)
    after = restored.get_metrics().to_dict()
    before.pop("current_session_uptime_seconds")
    after.pop("current_session_uptime_seconds")
    assert after == before


# ------------------------------------------------------------------------------------------------ snapshots


def test_snapshots_atomic_latest_and_retention(tmp_path: Path, clock: FakeClock) -> None:
    exporter = SnapshotExporter(tmp_path / "exports", keep=3, clock=clock)
    written = []
    for n in range(5):
        path = exporter.write(json.dumps({"n": n}))
        assert path is not None
        written.append(path)
        clock.advance(300)
    names = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert names == sorted([p.name for p in written[-3:]] + [LATEST_SNAPSHOT])
    latest = tmp_path / "exports" / LATEST_SNAPSHOT
    assert json.loads(latest.read_text()) == {"n": 4}
    assert not latest.is_symlink()
    assert stat.S_IMODE(written[-1].stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "exports").stat().st_mode) == 0o750


def test_snapshot_failure_is_reported_once_and_retried(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = SnapshotExporter(tmp_path, clock=clock)
    failing = FailingWrites(monkeypatch, errno.ENOSPC)
    with caplog.at_level(logging.WARNING, logger="nwp500d.store"):
        assert exporter.write("{}") is None
        clock.advance(300)
        assert exporter.write("{}") is None
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        failing.active = False
        clock.advance(300)
        assert exporter.write('{"ok": true}') is not None
    assert "snapshots resumed" in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((tmp_path / LATEST_SNAPSHOT).read_text()) == {"ok": True}


async def test_periodic_export_writes_snapshots_and_flushes_waiting_records(tmp_path: Path) -> None:
    import asyncio

    from nwp500d.config import Config
    from nwp500d.state import export_periodically, open_history, snapshot_exporter

    collector = MqttDiagnosticsCollector()
    history = open_history(tmp_path, Config(), collector, persist=True)
    await collector.record_connection_drop(error=CrtLikeError("AWS_ERROR_MQTT_TIMEOUT", 5129))
    exporter = snapshot_exporter(tmp_path, Config())
    written = asyncio.Event()
    task = asyncio.create_task(export_periodically(history, exporter, 0.01, written))
    try:
        async with asyncio.timeout(10):
            await written.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    latest = json.loads((tmp_path / "exports" / LATEST_SNAPSHOT).read_text())
    assert latest["metrics"]["total_connection_drops"] == 1
    assert [r["kind"] for r in EventStore(tmp_path / "events").load().records] == ["drop"]
