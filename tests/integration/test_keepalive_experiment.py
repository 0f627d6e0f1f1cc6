"""The real NAT keep-alive experiment (awscrt, mosquitto) through a userspace NAT that forgets idle connections.

Scaled down so a whole search fits in seconds: NAT idle timeout 3 s, keep-alive candidates 1-8 s, ping timeout
500 ms. The kernel-NAT version of the same experiment lives with the network-namespace lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nwp500d.mqtt.transport import CrtFactory, TransportEvent, TransportSettings
from nwp500d.netdiag.keepalive import (
    PING_TIMEOUT_ERROR,
    Progress,
    crt_trial_factory,
    derived_client_id,
    hold_seconds,
    run_experiment,
)
from nwp500d.sim.broker import MosquittoBroker, find_mosquitto
from nwp500d.sim.proxy import FaultProxy
from tests.integration.idle_nat import IdleExpiringNat

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - any reason mosquitto cannot be found means these tests cannot run here
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(90)

NAT_IDLE = 3.0
PING_MS = 500
LO, HI = 1, 8
BASE_ID = "nwp500d-test-monitored"


def _settings(port: int, client_id: str = BASE_ID, keep_alive_secs: int = 30) -> TransportSettings:
    return TransportSettings(kind="tcp", host=MosquittoBroker.host, port=port, client_id=client_id,
                             keep_alive_secs=keep_alive_secs, ping_timeout_ms=PING_MS, tcp_connect_timeout_ms=3000)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker(tmp_root=tmp_path) as instance:
        yield instance


@pytest.fixture
async def nat(broker: MosquittoBroker) -> AsyncIterator[IdleExpiringNat]:
    async with IdleExpiringNat(broker.host, broker.tcp_port, NAT_IDLE) as instance:
        yield instance


async def test_emulated_nat_blackholes_idle_connections_only() -> None:
    """The emulation itself: traffic keeps a mapping alive, idleness kills it silently, a new connection works."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    idle = 1.0  # with traffic every ~0.1 s, only a 0.9 s scheduling stall could expire the mapping early
    try:
        async with IdleExpiringNat("127.0.0.1", port, idle) as nat:
            reader, writer = await asyncio.open_connection("127.0.0.1", nat.port)
            for _ in range(3):  # traffic more often than the timeout: the mapping lives past it
                writer.write(b"ping")
                async with asyncio.timeout(2):
                    assert await reader.readexactly(4) == b"ping"
                await asyncio.sleep(0.1)  # the stimulus is elapsed time itself; there is no event to await
            await asyncio.sleep(idle * 1.5)
            writer.write(b"lost")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(idle * 2):
                    await reader.read(4)
            assert nat.mappings[0].expired_at is not None
            assert nat.mappings[0].dropped_bytes == 4
            writer.close()
            again_reader, again_writer = await asyncio.open_connection("127.0.0.1", nat.port)
            again_writer.write(b"back")
            async with asyncio.timeout(2):
                assert await again_reader.readexactly(4) == b"back"
            again_writer.close()
            await nat.wait_until(lambda: nat.open_clients == 0, timeout=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_experiment_brackets_the_nat_timeout_without_disturbing_the_monitored_session(
    broker: MosquittoBroker, nat: IdleExpiringNat
) -> None:
    loop = asyncio.get_running_loop()
    # The daemon's own session, with the base client id, straight to the broker: it must see no interruption.
    monitored_events: list[TransportEvent] = []
    monitored = CrtFactory(_settings(broker.tcp_port, keep_alive_secs=2), lambda: None).new_connection(
        loop, monitored_events.append
    )
    await monitored.connect(5.0)
    progress: list[Progress] = []
    started = loop.time()
    try:
        result = await run_experiment(
            crt_trial_factory(_settings(nat.port), lambda: None),
            base_client_id=BASE_ID, rounds=4, parallel=3, lo_limit=LO, hi_limit=HI, ping_timeout_ms=PING_MS,
            connect_timeout=5.0, on_progress=progress.append,
        )
    finally:
        assert await monitored.disconnect(5.0)
    elapsed = loop.time() - started
    print(result.summary)
    print(f"elapsed {elapsed:.1f} s")

    assert result.lower is not None and result.upper is not None
    assert result.lower <= NAT_IDLE <= result.upper
    assert result.upper - result.lower == 1  # converged to the planner's 1 s resolution
    assert LO <= result.recommendation < NAT_IDLE
    assert not result.ignored
    assert elapsed < 45

    by_outcome = {t.keep_alive_secs: t.outcome for t in result.trials}
    assert all(t.attempt == 1 for t in result.trials), "no trial should have needed a retry"
    assert all(by_outcome[k] == "survived" for k in by_outcome if k < NAT_IDLE)
    assert all(by_outcome[k] == "dropped" for k in by_outcome if k > NAT_IDLE)
    for trial in result.trials:
        assert trial.client_id == derived_client_id(BASE_ID, trial.keep_alive_secs)
        assert trial.idle_secs is not None
        if trial.outcome == "dropped":
            # The signature of an expired NAT mapping: a ping timeout at keep-alive + ping timeout after CONNACK.
            assert trial.error is not None and trial.error.name == PING_TIMEOUT_ERROR
            expected = trial.keep_alive_secs + PING_MS / 1000
            assert expected - 0.1 <= trial.idle_secs <= expected + 0.5, trial
        else:
            assert trial.idle_secs >= hold_seconds(trial.keep_alive_secs, PING_MS, 2) - 0.05

    # Drops were the NAT's doing (their mappings expired, a PINGREQ was swallowed); survivors' mappings never expired.
    expired = sum(1 for m in nat.mappings if m.expired_at is not None)
    assert expired == sum(1 for t in result.trials if t.outcome == "dropped")
    assert all(m.dropped_bytes >= 2 for m in nat.mappings if m.expired_at is not None)
    # Every trial connection was closed by the client (the dropped ones without the NAT passing anything on).
    await nat.wait_until(lambda: nat.open_clients == 0, timeout=5)

    assert [e.kind for e in monitored_events if e.kind == "interrupted"] == []
    log = broker.log_path.read_text(encoding="utf-8")
    for trial in result.trials:
        # Clean session and the trial's own keep-alive, under its own id.
        assert re.search(rf"as {re.escape(trial.client_id)} \(p2, c1, k{trial.keep_alive_secs}\b", log), trial
    assert "already connected" not in log  # no trial ever took the monitored session's id

    assert [p.kind for p in progress].count("round") == result.rounds
    assert [p.trial for p in progress if p.trial is not None] == list(result.trials)


async def test_cancelling_mid_round_closes_every_trial_connection(nat: IdleExpiringNat) -> None:
    task = asyncio.create_task(run_experiment(
        crt_trial_factory(_settings(nat.port), lambda: None),
        base_client_id=BASE_ID, lo_limit=LO, hi_limit=HI, ping_timeout_ms=PING_MS, connect_timeout=5.0,
    ))
    # Three trials connected (CONNACK passed the NAT) and idle.
    await nat.wait_until(lambda: sum(1 for m in nat.mappings if m.forwarded_down >= 4) == 3, timeout=10)
    assert nat.open_clients == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    await nat.wait_until(lambda: nat.open_clients == 0, timeout=5)


async def test_cancelling_while_connects_hang_closes_every_socket_by_the_crt_deadline() -> None:
    """A server that accepts and never answers. awscrt refuses to disconnect before CONNACK, so the sockets go when
    its CONNACK deadline (the ping timeout) ends the connects; nothing may outlive that."""
    ping_ms = 2000
    open_sockets = 0
    three_accepted = asyncio.Event()
    all_closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_sockets
        open_sockets += 1
        if open_sockets == 3:
            three_accepted.set()
        with contextlib.suppress(OSError):
            await reader.read()  # never answers; returns when the client closes
        open_sockets -= 1
        if open_sockets == 0:
            all_closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    settings = TransportSettings(kind="tcp", host="127.0.0.1", port=port, client_id=BASE_ID, ping_timeout_ms=ping_ms)
    loop = asyncio.get_running_loop()
    try:
        task = asyncio.create_task(run_experiment(
            crt_trial_factory(settings, lambda: None), base_client_id=BASE_ID, lo_limit=10, hi_limit=40,
            ping_timeout_ms=ping_ms, connect_timeout=30.0,
        ))
        async with asyncio.timeout(10):
            await three_accepted.wait()
        cancelled_at = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(1):  # the experiment itself returns at once
                await task
        async with asyncio.timeout(ping_ms / 1000 + 2):
            await all_closed.wait()
        print(f"sockets closed {loop.time() - cancelled_at:.2f} s after cancellation")
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connect_that_completes_after_cancellation_is_closed(broker: MosquittoBroker) -> None:
    """CONNACK arrives after the experiment was cancelled (1 s latency each way): the late connection is closed."""
    async with FaultProxy(broker.host, broker.tcp_port) as proxy, \
            IdleExpiringNat(broker.host, proxy.port, idle_timeout=60) as observer:
        # 1 s each way: the three CONNECTs, started together, have a 2 s window to all pass before any CONNACK returns.
        proxy.delay(1.0)
        # The CRT's CONNACK deadline (the ping timeout) must exceed the 2 s RTT with room to spare, and the experiment
        # wants it below lo_limit: keep-alives 5, 10 and 20 s.
        task = asyncio.create_task(run_experiment(
            crt_trial_factory(_settings(observer.port), lambda: None), base_client_id=BASE_ID, lo_limit=5,
            hi_limit=20, ping_timeout_ms=4000, connect_timeout=5.0,
        ))
        # Every CONNECT has left the client; no CONNACK can be back yet.
        await observer.wait_until(lambda: sum(1 for m in observer.mappings if m.forwarded_up) == 3, timeout=10)
        assert all(m.forwarded_down == 0 for m in observer.mappings)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(1):
                await task
        # Closed by the client, and the close passed all the way to the broker and back: up to the CONNACK's 2 s RTT,
        # then 1 s each way for the close.
        await observer.wait_until(
            lambda: not any(m.client_open or m.upstream_open for m in observer.mappings), timeout=15
        )
        assert all(m.forwarded_down >= 4 for m in observer.mappings), "the CONNACKs did arrive after cancellation"
        async with asyncio.timeout(5):
            await proxy.wait_idle()  # the delayed DISCONNECTs have reached the broker
    log = broker.log_path.read_text(encoding="utf-8")
    for k in (5, 10, 20):
        assert f"Client {derived_client_id(BASE_ID, k)} disconnected." in log  # a clean DISCONNECT, not a drop


async def test_refused_trials_are_retried_once_and_leave_the_bracket_open() -> None:
    with socket.socket() as probe:  # a port nobody listens on: connects are refused at once
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    result = await run_experiment(
        crt_trial_factory(_settings(port), lambda: None), base_client_id=BASE_ID, rounds=2, lo_limit=LO,
        hi_limit=HI, ping_timeout_ms=PING_MS, connect_timeout=5.0, retry_pause=0.05,
    )
    assert (result.lower, result.upper) == (None, None)
    assert result.recommendation == LO
    assert [(t.keep_alive_secs, t.attempt) for t in result.trials[:6]] == [
        (1, 1), (1, 2), (3, 1), (3, 2), (8, 1), (8, 2)
    ]
    assert all(t.outcome == "inconclusive" and t.idle_secs is None for t in result.trials)
    assert all(t.error is not None and t.error.name == "AWS_IO_SOCKET_CONNECTION_REFUSED" for t in result.trials)
    assert "No trial connection was accepted" in result.summary


async def test_experiment_cli_against_the_simulator_saves_its_bracket(tmp_path: Path) -> None:
    """The command as a user runs it: sign-in, trials with derived ids, a summary, and the result kept for report."""
    import json as json_module
    import os
    import sys

    from nwp500d.sim.demo import DEMO_PASSWORD, simulator

    async with simulator() as sim:
        config = tmp_path / "nwp500d.yaml"
        config.write_text(sim.config_yaml(tmp_path / "state").replace("mqtt:\n", "mqtt:\n  ping_timeout_secs: 1.0\n"))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nwp500d", "experiment", "keepalive", "--config", str(config), "--rounds", "1",
            "--parallel", "2", "--min", "2", "--max", "3", env={**os.environ, "NAVIEN_PASSWORD": DEMO_PASSWORD},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "Recommended keep_alive_secs" in text
    saved = json_module.loads((tmp_path / "state" / "exports" / "keepalive-experiment.json").read_text())
    assert saved["lower_secs"] == 3  # nothing forgets idle connections on loopback: every trial survived
    assert saved["upper_secs"] is None
    assert DEMO_PASSWORD not in text + err.decode()
