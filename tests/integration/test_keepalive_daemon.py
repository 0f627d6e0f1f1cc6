"""The daemon runs the keep-alive experiment by itself (opt-in), beside its monitored session, on the simulator.

Scaled down: keep-alives 2-3 s and a 1 s ping timeout, so a one-round run holds its trials for 8 s. On loopback
nothing forgets idle connections, so every trial survives and the bracket is "above 3 s": what is under test here
is the daemon's side (when it runs, what it keeps, what it throws away), the search itself is tested through an
emulated NAT in test_keepalive_experiment.py and a kernel NAT in the netns lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nwp500d import logfields
from nwp500d.config import KeepAliveExperimentConfig, NetDiagConfig
from nwp500d.daemon import Daemon
from nwp500d.netdiag.experiment_service import KeepAliveExperimentService
from nwp500d.secrets import Secret
from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_PASSWORD, Simulator, simulator
from nwp500d.state import EXPORTS_DIR, KEEPALIVE_RESULT, save_keepalive_result

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

EXPERIMENT = KeepAliveExperimentConfig(enabled=True, min_secs=2, max_secs=3, rounds=1, parallel=2,
                                       start_delay_secs=0, repeat_days=30, retry_delay_secs=1)


@dataclass
class Running:
    sim: Simulator
    daemon: Daemon
    experiment: KeepAliveExperimentService
    state: Path

    def nat_bracket(self) -> tuple[int | None, int | None] | None:
        """What the classifier uses now (a method: it changes while the daemon runs)."""
        return self.daemon.classifier_settings.nat_bracket

    @property
    def saved(self) -> Path:
        return self.state / EXPORTS_DIR / KEEPALIVE_RESULT


@contextlib.asynccontextmanager
async def daemon_with_experiment(tmp_path: Path, experiment: KeepAliveExperimentConfig = EXPERIMENT
                                 ) -> AsyncIterator[Running]:
    async with simulator() as sim:
        config = sim.config(tmp_path / "state")
        config = dataclasses.replace(
            config, mqtt=dataclasses.replace(config.mqtt, ping_timeout_secs=1.0),
            netdiag=NetDiagConfig(link_events=False, keepalive_experiment=experiment),
        )
        daemon = Daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=tmp_path / "state")
        assert daemon.experiment is not None
        # The daemon waits keep-alive + ping timeout (31 s here) after a run for a late-noticed drop; the simulated
        # path cannot fail unnoticed, so the tests do not spend half a minute on each run.
        assert daemon.experiment.settle_secs == 31.0
        daemon.experiment.settle_secs = 0.5
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop=stop, install_signal_handlers=False))
        try:
            async with asyncio.timeout(90):
                yield Running(sim, daemon, daemon.experiment, tmp_path / "state")
        finally:
            stop.set()
            async with asyncio.timeout(30):
                assert await task == 0


def _ours(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "MESSAGE_ID", None) == logfields.MESSAGE_IDS[event]]


async def test_the_daemon_runs_the_experiment_beside_its_session_and_keeps_the_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_with_experiment(tmp_path) as running:
        await running.experiment.wait_until(lambda service: service.kept + service.discarded + service.failed >= 1)
        assert (running.experiment.kept, running.experiment.discarded, running.experiment.failed) == (1, 0, 0)
        # The classifier uses the new bracket at once, without a restart.
        assert running.nat_bracket() == (3, None)
        client_id = running.daemon.client_id
        broker_log = running.sim.broker.log_path.read_text(encoding="utf-8")
    saved = json.loads(running.saved.read_text())
    assert (saved["lower_secs"], saved["upper_secs"], saved["source"]) == (3, None, "daemon")
    assert [t["outcome"] for t in saved["trials"]] == ["survived", "survived"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", saved["finished_at"])
    # The monitored session was never disturbed: no drop, and no trial ever used its client id.
    assert running.daemon.collector.get_metrics().total_connection_drops == 0
    for keep_alive in (2, 3):
        assert re.search(rf"as {re.escape(client_id)}-ka{keep_alive} \(p2, c1, k{keep_alive}\b", broker_log)
    assert "already connected" not in broker_log
    assert len(_ours(caplog, "keepalive_experiment_started")) == 1
    finished = _ours(caplog, "keepalive_experiment_finished")
    assert len(finished) == 1
    assert vars(finished[0])["NWP_NAT_TIMEOUT"] == "(3, inf] s"
    assert vars(finished[0])["NWP_RECOMMENDED_KEEP_ALIVE"] == 3
    assert DEMO_PASSWORD not in caplog.text


async def test_a_run_spoiled_by_a_session_drop_is_discarded_then_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_with_experiment(tmp_path) as running:
        await running.experiment.wait_until(lambda service: service.rounds_started >= 1)
        async with asyncio.timeout(10):  # the monitored session and both trials are through the proxy
            await running.sim.proxy.wait_connections(lambda proxy: proxy.active_connections >= 3)
        # Every connection through the proxy is reset: the monitored session and the trials alike, as a real fault
        # on the path would. The trials' drops must not be taken for a NAT timeout.
        await running.sim.proxy.reset_all()
        await running.experiment.wait_until(lambda service: service.discarded + service.kept >= 1)
        assert running.experiment.discarded == 1
        assert not running.saved.exists()
        assert running.nat_bracket() is None
        # retry_delay_secs later the next run goes through, the session being up again.
        await running.experiment.wait_until(lambda service: service.kept >= 1)
        assert running.nat_bracket() == (3, None)
    assert json.loads(running.saved.read_text())["lower_secs"] == 3
    discarded = _ours(caplog, "keepalive_experiment_discarded")
    assert len(discarded) == 1
    assert vars(discarded[0])["NWP_DROPS"] >= 1
    assert running.daemon.collector.get_metrics().total_connection_drops >= 1


async def test_a_fresh_saved_result_is_not_measured_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # A result saved by `nwp500d experiment keepalive` a minute ago.
    a_minute_ago = datetime.now(UTC) - timedelta(minutes=1)
    save_keepalive_result(tmp_path / "state", {"lower_secs": None, "upper_secs": 40}, source="cli",
                          finished_at=a_minute_ago)
    async with daemon_with_experiment(tmp_path) as running:
        await running.experiment.wait_until(lambda service: service.next_run_in is not None)
        next_run_in = running.experiment.next_run_in
        assert next_run_in is not None
        assert 30 * 86400 - 120 < next_run_in < 30 * 86400 - 55
        assert running.experiment.rounds_started == 0
        assert running.nat_bracket() == (None, 40)  # read at start
    assert json.loads(running.saved.read_text())["source"] == "cli"
    assert not _ours(caplog, "keepalive_experiment_started")
