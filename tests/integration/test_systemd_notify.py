"""The daemon against a real sd_notify socket: READY once, STATUS, watchdog cadence, RELOADING, STOPPING.

A bound AF_UNIX datagram socket plays systemd's part; the daemon is the real one (a subprocess, or in-process where
the test must block its event loop), talking to the NaviLink simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_PASSWORD, Simulator, simulator
from nwp500d.systemd import Notifier, sd_notify, watchdog_interval, watchdog_loop
from tests.notify import NotifySocket

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

WATCHDOG_USEC = 400_000


def message_count(notify: NotifySocket) -> int:
    with notify.arrived:
        return len(notify.messages)


def index_after(notify: NotifySocket, line: str, nth: int) -> int:
    """The index of the first message after the ``nth`` one carrying ``line`` (which must have arrived)."""
    with notify.arrived:
        carrying = [i for i, (_at, _pid, fields) in enumerate(notify.messages) if line in fields]
        assert len(carrying) >= nth, f"{line!r} x{nth} not received"
        return carrying[nth - 1] + 1


def wait_for_lines(
    notify: NotifySocket, done: Callable[[list[str]], bool], *, since: int, timeout: float = 30.0
) -> list[str]:
    """Wait (bounded) until ``done`` holds for the lines of the messages from index ``since`` on, so that only what
    arrived after a point counts; returns those lines."""
    deadline = time.monotonic() + timeout
    with notify.arrived:
        while not done(lines := [line for _a, _p, fields in notify.messages[since:] for line in fields]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not received since message {since}; got {lines[-10:]}")
            notify.arrived.wait(remaining)
        return lines


def test_sd_notify_basics(notify_socket: NotifySocket) -> None:
    assert sd_notify("READY=1", env={}) is False  # not under systemd: a no-op
    assert sd_notify("STATUS=héllo ✓", env={"NOTIFY_SOCKET": notify_socket.path})  # UTF-8, not latin-1
    notify_socket.wait_for("STATUS=héllo ✓", timeout=5)
    assert notify_socket.messages[0][1] == os.getpid()
    with pytest.raises(OSError):
        sd_notify("READY=1", env={"NOTIFY_SOCKET": notify_socket.path + ".missing"})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another pid
    assert watchdog_interval({}) is None


@contextlib.asynccontextmanager
async def daemon_process(sim: Simulator, tmp_path: Path, notify: NotifySocket,
                         watchdog_usec: int = WATCHDOG_USEC) -> AsyncIterator[asyncio.subprocess.Process]:
    config = tmp_path / "nwp500d.yaml"
    config.write_text(sim.config_yaml(tmp_path / "state"))
    env = {**os.environ, "NAVIEN_PASSWORD": DEMO_PASSWORD, "NOTIFY_SOCKET": notify.path,
           "WATCHDOG_USEC": str(watchdog_usec)}
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nwp500d", "run", "--config", str(config), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_ready_status_watchdog_reload_and_stop(tmp_path: Path, notify_socket: NotifySocket) -> None:
    async with simulator() as sim, daemon_process(sim, tmp_path, notify_socket) as process:
        await asyncio.to_thread(notify_socket.wait_for, "READY=1")
        ready_message = next(fields for _a, _p, fields in notify_socket.messages if "READY=1" in fields)
        status = next(line for line in ready_message if line.startswith("STATUS="))
        assert status.startswith("STATUS=connected")
        assert "0 drops/24h" in status
        assert {pid for _a, pid, _f in notify_socket.messages} == {process.pid}

        await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", 10, 10)
        pings = notify_socket.times_of("WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Pinged every WATCHDOG_USEC/2 = 0.2 s; what systemd requires is that no gap reaches WATCHDOG_USEC itself.
        assert max(gaps) < WATCHDOG_USEC / 1e6

        since_drop = message_count(notify_socket)
        await sim.proxy.reset_all()  # a drop shows up in STATUS, and the reconnect is reported (as STATUS, not READY)
        lines = await asyncio.to_thread(
            wait_for_lines, notify_socket,
            lambda seen: any(line.startswith("STATUS=connected") and "1 drop/24h" in line for line in seen),
            since=since_drop,
        )
        assert any("AWS_IO_SOCKET_CLOSED" in line for line in lines)

        process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(notify_socket.wait_for, "RELOADING=1")
        await asyncio.to_thread(notify_socket.wait_for, "READY=1", 30, 2)
        reload_message = next(fields for _a, _p, fields in notify_socket.messages if "RELOADING=1" in fields)
        assert any(line.startswith("MONOTONIC_USEC=") for line in reload_message)

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        assert "STOPPING=1" in notify_socket.lines()
        lines = notify_socket.lines()
        assert lines.count("READY=1") == 2  # once at start, once to end the reload; never again


async def test_bad_config_on_sighup_is_refused_and_the_old_one_kept(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with simulator() as sim, daemon_process(sim, tmp_path, notify_socket) as process:
        await asyncio.to_thread(notify_socket.wait_for, "READY=1")
        (tmp_path / "nwp500d.yaml").write_text("mqtt:\n  keep_alive_secs: 5\n")
        process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(notify_socket.wait_for, "READY=1", 30, 2)
        await asyncio.to_thread(  # still alive and healthy: pings after the refused reload, not before the SIGHUP
            wait_for_lines, notify_socket, lambda seen: seen.count("WATCHDOG=1") >= 3,
            since=index_after(notify_socket, "READY=1", 2), timeout=10,
        )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await process.wait() == 0


def test_watchdog_stops_pinging_while_the_loop_is_blocked(notify_socket: NotifySocket) -> None:
    sent: list[float] = []  # when each ping was sent, stamped by the sending thread (arrival can lag the send)

    def send(*fields: str) -> bool:
        if "WATCHDOG=1" in fields:
            sent.append(time.monotonic())
        return sd_notify(*fields, env={"NOTIFY_SOCKET": notify_socket.path})

    notifier = Notifier(send=send)

    async def scenario() -> tuple[float, float]:
        task = asyncio.create_task(watchdog_loop(notifier, 0.05, lambda: None))
        await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", 5, 5)
        blocked_at = time.monotonic()
        time.sleep(1.0)  # the event loop is blocked, as by a runaway callback  # noqa: ASYNC251
        unblocked_at = time.monotonic()
        sent_before = len(sent)
        # Received more than were sent before the block ended: pings sent after it arrived.
        await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", 5, sent_before + 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return blocked_at, unblocked_at

    blocked_at, unblocked_at = asyncio.run(scenario())
    assert [t for t in sent if blocked_at <= t <= unblocked_at] == []
    assert any(t > unblocked_at for t in sent)  # resumed after the block


def test_watchdog_withholds_pings_while_unhealthy(
    notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(send=lambda *fields: sd_notify(*fields, env={"NOTIFY_SOCKET": notify_socket.path}))
    health: dict[str, str | None] = {"reason": "the session supervisor has stopped"}

    async def scenario() -> None:
        task = asyncio.create_task(watchdog_loop(notifier, 0.02, lambda: health["reason"]))
        await asyncio.sleep(0.3)  # a window in which pings would have been sent ~15 times
        assert "WATCHDOG=1" not in notify_socket.lines()
        health["reason"] = None
        await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", 5, 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert "withholding watchdog pings: the session supervisor has stopped" in caplog.text
    assert caplog.text.count("withholding watchdog pings") == 1  # said once, not per tick


async def test_dead_supervisor_makes_the_daemon_unhealthy() -> None:
    from nwp500d.daemon import _unhealthy

    class Stuck:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        def stuck_seconds(self) -> float:
            return self.seconds

    async def finished() -> None:
        return None

    done = asyncio.create_task(finished())
    await done
    running = asyncio.create_task(asyncio.sleep(10))
    try:
        assert _unhealthy(done, Stuck(0), 100) == "the session supervisor has stopped"  # type: ignore[arg-type]
        assert _unhealthy(running, Stuck(500), 100) is not None  # type: ignore[arg-type]
        assert _unhealthy(running, Stuck(5), 100) is None  # type: ignore[arg-type]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
