"""run_experiment's IO rules with scripted connections: retries, classification, and closing on every path.

The real CRT against a real broker and NAT is in tests/integration/test_keepalive_experiment.py; this covers the
paths a real network cannot produce on demand, in about a second.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nwp500d.config import KeepAliveExperimentConfig
from nwp500d.errors import ErrorInfo
from nwp500d.mqtt.session import SessionEvent
from nwp500d.mqtt.transport import ConnectResult, TransportError, TransportEvent
from nwp500d.netdiag.experiment_service import KeepAliveExperimentService
from nwp500d.netdiag.keepalive import Progress, run_experiment
from nwp500d.state import EXPORTS_DIR, KEEPALIVE_RESULT

PING_MS = 100
REFUSED = ErrorInfo("AWS_IO_SOCKET_CONNECTION_REFUSED", 1047, "refused")
CLOSED = ErrorInfo("AWS_IO_SOCKET_CLOSED", 1051, "closed")
PING_TIMEOUT = ErrorInfo("AWS_ERROR_MQTT_TIMEOUT", 5129, "timeout")

_ids = itertools.count(1)


@dataclass
class Script:
    """What one attempt does: refuse the connect, or connect and (maybe) be interrupted after ``after`` seconds."""

    refuse: bool = False
    interrupt: ErrorInfo | None = None
    after: float = 0.05
    disconnect_ok: bool = True
    hang_connect: asyncio.Event | None = None  # connect waits for this, like a CRT connect awaiting CONNACK


@dataclass
class FakeConnection:
    key: tuple[int, int]  # (keep-alive, attempt)
    script: Script
    loop: asyncio.AbstractEventLoop
    on_event: Callable[[TransportEvent], None]
    changed: asyncio.Event
    connection_id: int = field(default_factory=lambda: next(_ids))
    connected: bool = False
    closed_now: int = 0
    disconnected: int = 0
    closed_before_connected: bool = False

    async def connect(self, timeout: float) -> ConnectResult:
        if self.script.hang_connect is not None:
            await self.script.hang_connect.wait()
        if self.script.refuse:
            raise TransportError(REFUSED)
        self.connected = True
        self.changed.set()
        if self.script.interrupt is not None:
            event = TransportEvent("interrupted", self.connection_id, error=self.script.interrupt)
            self.loop.call_later(self.script.after, self.on_event, event)
        return ConnectResult(session_present=False)

    async def subscribe(self, topic: str, timeout: float) -> None:
        raise AssertionError("an idle trial must not subscribe")

    async def publish(self, topic: str, payload: bytes, timeout: float) -> None:
        raise AssertionError("an idle trial must not publish")

    async def disconnect(self, timeout: float) -> bool:
        self.disconnected += 1
        return self.script.disconnect_ok

    def close_now(self) -> None:
        if not self.connected:
            self.closed_before_connected = True  # what awscrt refuses (AWS_ERROR_MQTT_NOT_CONNECTED)
        self.closed_now += 1
        self.changed.set()


@dataclass
class FakeFactory:
    keep_alive_secs: int
    attempt: int
    script: Script
    owner: Scripted

    def new_connection(
        self, loop: asyncio.AbstractEventLoop, on_event: Callable[[TransportEvent], None]
    ) -> FakeConnection:
        connection = FakeConnection((self.keep_alive_secs, self.attempt), self.script, loop, on_event,
                                    self.owner.changed)
        self.owner.made[connection.key] = connection
        self.owner.changed.set()
        return connection


@dataclass
class Scripted:
    """A TrialFactory whose attempts follow ``scripts[(keep_alive, attempt)]`` (default: connect and stay up)."""

    scripts: dict[tuple[int, int], Script] = field(default_factory=dict)
    calls: list[tuple[int, str, int]] = field(default_factory=list)
    made: dict[tuple[int, int], FakeConnection] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, keep_alive_secs: int, client_id: str, ping_timeout_ms: int, /) -> FakeFactory:
        self.calls.append((keep_alive_secs, client_id, ping_timeout_ms))
        attempt = sum(1 for call in self.calls if call[0] == keep_alive_secs)
        script = self.scripts.get((keep_alive_secs, attempt), Script())
        return FakeFactory(keep_alive_secs, attempt, script, self)

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until ``predicate`` holds; re-checked whenever a fake connection changes."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_outcomes_are_classified_retried_and_every_connection_is_closed() -> None:
    factory = Scripted({
        (2, 1): Script(interrupt=CLOSED),  # not a ping timeout: says nothing about idleness, so it is retried
        (2, 2): Script(interrupt=PING_TIMEOUT, after=0.2),
        (3, 1): Script(refuse=True),
        (3, 2): Script(refuse=True),
    })
    progress: list[Progress] = []
    result = await run_experiment(
        factory, base_client_id="base", lo_limit=1, hi_limit=3, ping_timeout_ms=PING_MS, survive_cycles=1,
        retry_pause=0.01, on_progress=progress.append,
    )
    assert [(t.keep_alive_secs, t.attempt, t.outcome) for t in result.trials] == [
        (1, 1, "survived"), (2, 1, "inconclusive"), (2, 2, "dropped"), (3, 1, "inconclusive"), (3, 2, "inconclusive")
    ]
    assert (result.lower, result.upper, result.recommendation, result.rounds) == (1, 2, 1, 1)
    assert sorted(set(factory.calls)) == [(1, "base-ka1", PING_MS), (2, "base-ka2", PING_MS), (3, "base-ka3", PING_MS)]
    survived, closed, dropped, refused1, refused2 = (
        factory.made[key] for key in ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2))
    )
    assert survived.disconnected == 1 and survived.closed_now == 0  # a clean DISCONNECT after a survival
    for connection in (closed, dropped, refused1, refused2):
        assert connection.closed_now >= 1 and connection.disconnected == 0
    assert result.trials[0].idle_secs is not None and result.trials[0].idle_secs >= 1.1 - 0.02
    assert result.trials[2].idle_secs is not None and 0.18 <= result.trials[2].idle_secs < 0.5
    assert result.trials[3].idle_secs is None and result.trials[3].error == REFUSED
    assert [p.kind for p in progress] == ["round", "trial", "trial", "trial", "trial", "trial"]
    assert progress[0].keep_alives == (1, 2, 3)


async def test_a_survivor_whose_disconnect_fails_is_closed() -> None:
    factory = Scripted({(1, 1): Script(disconnect_ok=False)})
    result = await run_experiment(factory, base_client_id="b", rounds=1, parallel=1, lo_limit=1, hi_limit=2,
                                  ping_timeout_ms=PING_MS, survive_cycles=1)
    assert [t.outcome for t in result.trials] == ["survived"]
    assert factory.made[(1, 1)].disconnected == 1 and factory.made[(1, 1)].closed_now == 1


async def test_cancelling_while_trials_hold_closes_them_at_once() -> None:
    factory = Scripted()
    task = asyncio.create_task(run_experiment(factory, base_client_id="b", lo_limit=1, hi_limit=8,
                                              ping_timeout_ms=PING_MS))
    await factory.until(lambda: sum(1 for c in factory.made.values() if c.connected) == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [c.closed_now for c in factory.made.values()] == [1, 1, 1]


async def test_cancelling_during_connect_closes_once_the_connect_settles() -> None:
    release = asyncio.Event()
    factory = Scripted({(k, 1): Script(hang_connect=release) for k in (1, 3, 8)})
    task = asyncio.create_task(run_experiment(factory, base_client_id="b", lo_limit=1, hi_limit=8,
                                              ping_timeout_ms=PING_MS))
    await factory.until(lambda: len(factory.made) == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A close now would be refused by the CRT; it must wait for the connect to finish.
    assert all(c.closed_now == 0 for c in factory.made.values())
    release.set()  # CONNACKs arrive after the cancellation
    await factory.until(lambda: all(c.closed_now for c in factory.made.values()))
    assert all(c.connected and not c.closed_before_connected for c in factory.made.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo_limit": 1, "hi_limit": 8, "ping_timeout_ms": 1000}, "ping_timeout_ms"),
        ({"rounds": 0}, "rounds"),
        ({"base_client_id": "x" * 125}, "client id too long"),
        ({"parallel": 0}, "parallel"),
    ],
)
async def test_bad_arguments_are_refused_before_any_connection(kwargs: dict[str, Any], message: str) -> None:
    factory = Scripted()
    arguments: dict[str, Any] = {"base_client_id": "b", **kwargs}
    with pytest.raises(ValueError, match=message):
        await run_experiment(factory, **arguments)
    assert factory.calls == []


# ---------------------------------------------------------------------------------------------- the daemon's service


async def test_the_daemon_keeps_no_result_from_a_run_without_one_conclusive_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every trial refused (an IoT policy that admits only the daemon's own client id): "unknown" must not replace a
    good saved bracket nor the classifier's evidence; the run counts as inconclusive and is tried again later."""
    factory = Scripted({(k, a): Script(refuse=True) for k in (2, 3) for a in (1, 2)})
    brackets: list[tuple[int | None, int | None]] = []
    service = KeepAliveExperimentService(
        KeepAliveExperimentConfig(enabled=True, min_secs=2, max_secs=3, rounds=1, parallel=2, start_delay_secs=0,
                                  retry_delay_secs=3600),
        base_client_id="nwp500d-test", ping_timeout_ms=PING_MS, factory_for=factory, state_dir=tmp_path,
        on_result=brackets.append,
    )
    service.on_session_event(SessionEvent("connected", 0.0))
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.wait_until(lambda s: s.inconclusive + s.kept + s.failed >= 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (service.inconclusive, service.kept, service.failed) == (1, 0, 0)
    assert brackets == []
    assert not (tmp_path / EXPORTS_DIR / KEEPALIVE_RESULT).exists()
    assert len(factory.calls) == 4  # each keep-alive tried twice (a refusal is retried once), then given up
    warning = next(r.getMessage() for r in caplog.records if "inconclusive" in r.getMessage())
    assert "IoT policy may allow only the daemon's own client id" in warning
    assert "Recommended" not in warning  # the run recommends nothing worth acting on
