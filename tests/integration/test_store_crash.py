"""Crash safety with real processes and real filesystems: SIGKILL mid-stream, a full tmpfs, a read-only remount."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwp500d.store import EventStore, SnapshotExporter

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nwp500d.store import EventStore

    store = EventStore(Path(sys.argv[1]))
    padding = "p" * int(sys.argv[2])
    n = 0
    while True:
        store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:00.000Z", "attempt": n, "pad": padding})
        print(n, flush=True)  # only after append() returned: the record is fsync'd
        n += 1
    """
)


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_mid_stream_loses_no_fsynced_record_and_duplicates_none(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kill_after = rng.randint(20, 400)
    padding = rng.choice([10, 4000, 70000])  # large records make a kill inside write() likely
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(padding)],
        stdout=subprocess.PIPE, text=True,
    )
    confirmed = -1
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            if int(line) >= kill_after:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        # The writer runs ahead of this reader: every number it printed before the kill was fsync'd, so the
        # true confirmed count is the last number in the pipe once the writer is dead, not the one we broke at.
        confirmed = max([kill_after, *(int(rest) for rest in writer.stdout.read().split())])
    finally:
        writer.kill()
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert confirmed >= kill_after

    loaded = EventStore(tmp_path).load()
    numbers = [r["attempt"] for r in loaded.records]
    # Every confirmed record is there, in order, once; at most one more (written, not yet confirmed) follows.
    assert numbers[: confirmed + 1] == list(range(confirmed + 1))
    assert len(numbers) - (confirmed + 1) in (0, 1)
    assert len(set(numbers)) == len(numbers)
    # A restarted writer appends after whatever the kill left behind, and that record reads back.
    store = EventStore(tmp_path)
    assert store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:01.000Z", "attempt": -1})
    assert [r["attempt"] for r in EventStore(tmp_path).load().records][-1] == -1


def _mount_tmpfs(target: Path, size_kib: int) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "nwp500d-test", str(target)],
        capture_output=True, check=False, timeout=30,
    )
    return result.returncode == 0


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    if not _mount_tmpfs(mountpoint, 256):
        pytest.skip("needs root and permission to mount a tmpfs (the injected-failure unit tests cover the logic)")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=30)


@pytest.mark.root
def test_full_disk_then_space_returns(tiny_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = EventStore(tiny_tmpfs / "events", max_bytes=10 * 1024 * 1024)
    filler = tiny_tmpfs / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * (200 * 1024))
    confirmed: list[int] = []
    with caplog.at_level(logging.WARNING, logger="nwp500d.store"):
        n = 0
        while n < 2000:
            if not store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:00.000Z", "attempt": n,
                                 "pad": "x" * 500}):
                break
            confirmed.append(n)
            n += 1
        assert n < 2000, "the tmpfs never filled up"
        failed_at = n
        for extra in range(1, 4):  # more records arrive while the disk is full
            assert not store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:00.000Z",
                                     "attempt": failed_at + extra, "pad": "x" * 500})
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "ENOSPC" in errors[0]
        filler.unlink()
        assert store.flush_pending()
    numbers = [r["attempt"] for r in EventStore(tiny_tmpfs / "events").load().records]
    assert numbers == list(range(failed_at + 4))
    assert "works again" in caplog.text


@pytest.mark.root
def test_read_only_remount_then_writable(tiny_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = EventStore(tiny_tmpfs / "events")
    exporter = SnapshotExporter(tiny_tmpfs / "exports")
    assert store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:00.000Z", "attempt": 0})
    store.close()  # the kernel refuses a remount while a file is open for writing; the store reopens on demand
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True, timeout=30)
    try:
        with caplog.at_level(logging.WARNING, logger="nwp500d.store"):
            assert not store.append({"kind": "attempt", "timestamp": "2026-11-21T12:00:01.000Z", "attempt": 1})
            assert exporter.write(json.dumps({"snapshot": 1})) is None
        assert "EROFS" in caplog.text
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_tmpfs)], check=True, timeout=30)
    assert store.flush_pending()
    assert exporter.write(json.dumps({"snapshot": 2})) is not None
    assert [r["attempt"] for r in EventStore(tiny_tmpfs / "events").load().records] == [0, 1]
