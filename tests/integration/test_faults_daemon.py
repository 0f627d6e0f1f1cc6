"""Daemon-level faults of the reliability pass: SIGTERM during a reconnect storm, and damaged state at start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_PASSWORD, simulator
from nwp500d.store import EventStore
from tests.notify import NotifySocket

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)


async def start(config: Path, notify: NotifySocket) -> asyncio.subprocess.Process:
    env = {**os.environ, "NAVIEN_PASSWORD": DEMO_PASSWORD, "NOTIFY_SOCKET": notify.path}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nwp500d", "run", "--config", str(config), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_during_a_reconnect_storm_exits_cleanly_and_quickly(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with simulator() as sim:
        config = tmp_path / "nwp500d.yaml"
        config.write_text(sim.config_yaml(tmp_path / "state"))
        process = await start(config, notify_socket)
        try:
            await asyncio.to_thread(notify_socket.wait_for, "READY=1")
            sim.proxy.refuse(True)  # every reconnect is reset at once: a storm of failed attempts
            await sim.proxy.reset_all()
            store = EventStore(tmp_path / "state" / "events")
            deadline = time.monotonic() + 20
            while sum(r["kind"] == "attempt" for r in store.load().records) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):  # the unit's TimeoutStopSec
                _out, err = await process.communicate()
            took = time.monotonic() - sent
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, err.decode()
    assert took < 5.0
    assert "STOPPING=1" in notify_socket.lines()
    records = EventStore(tmp_path / "state" / "events").load().records
    assert [r["kind"] for r in records].count("drop") == 1
    assert "attempt" in [r["kind"] for r in records]
    latest = json.loads((tmp_path / "state" / "exports" / "diagnostics-latest.json").read_text())
    assert latest["metrics"]["total_connection_drops"] == 1  # the final snapshot was written on the way out


async def test_damaged_event_log_and_snapshot_at_start(tmp_path: Path, notify_socket: NotifySocket) -> None:
    state = tmp_path / "state"
    (state / "events").mkdir(parents=True)
    (state / "exports").mkdir()
    good = {"id": "r1", "kind": "connection", "timestamp": "2026-11-20T10:00:00.000Z", "event_type": "connected",
            "session_present": False, "return_code": 0, "attempt_number": 1, "session_id": "s1"}
    drop = {"id": "r2", "kind": "drop", "timestamp": "2026-11-20T11:00:00.000Z", "error_name": "AWS_IO_SOCKET_CLOSED",
            "duration_connected_seconds": 3600.0, "drop_id": "d1", "session_id": "s1", "correlation": "pending"}
    (state / "events" / "events-20261120.jsonl").write_text(
        json.dumps(good) + "\n" + "\x00garbage\n" + json.dumps(drop) + "\n" + '{"kind": "drop", "timest'
    )
    (state / "exports" / "diagnostics-latest.json").write_bytes(b'{"metrics": {"total_co')  # a torn snapshot
    async with simulator() as sim:
        config = tmp_path / "nwp500d.yaml"
        config.write_text(sim.config_yaml(state) + "logging:\n  level: info\n")
        process = await start(config, notify_socket)
        try:
            await asyncio.to_thread(notify_socket.wait_for, "READY=1")
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                _out, err = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = err.decode()
    assert process.returncode == 0, log
    assert "unreadable record skipped" in log
    assert "torn last record skipped" in log
    assert "reloaded 2 records" in log
    latest = json.loads((state / "exports" / "diagnostics-latest.json").read_text())  # replaced, readable
    assert latest["metrics"]["total_connection_drops"] == 1  # the history before the damage survived
    assert latest["recent_drops"][0]["correlation"] == "disabled"  # the pending drop was completed at start
