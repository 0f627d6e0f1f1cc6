"""The real daemon completes each drop with the host events of its window, from real .journal files."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nwp500d.config import Config, JournalConfig, MetricsConfig
from nwp500d.daemon import DaemonResult, run_daemon
from nwp500d.mqtt.session import SessionEvent
from nwp500d.secrets import Secret
from nwp500d.sim.broker import find_mosquitto, pick_free_ports
from nwp500d.sim.demo import DEMO_PASSWORD, Simulator, simulator
from nwp500d.store import EventStore
from tests.journal_fixtures import JournalBuilder, journal_remote_available, kernel, write_journal

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not journal_remote_available(), reason="systemd-journal-remote is not installed"),
]


@dataclass
class Running:
    sim: Simulator
    state: Path
    events: asyncio.Queue[SessionEvent] = field(default_factory=asyncio.Queue)
    result: DaemonResult | None = None

    async def wait_for(self, kind: str) -> SessionEvent:
        while (event := await self.events.get()).kind != kind:
            pass
        return event

    async def drop_and_recover(self) -> None:
        await self.wait_for("connected")
        await self.sim.proxy.reset_all()
        await self.wait_for("rebuilt")

    async def completed(self) -> dict[str, Any]:
        """The first drop_completed record; the window closes after_secs after the drop, so this polls a file."""
        store = EventStore(self.state / "events")
        while not (found := [r for r in store.load().records if r["kind"] == "drop_completed"]):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return found[0]


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, *, mqtt: dict[str, Any] | None = None, **sections: Any
                         ) -> AsyncIterator[Running]:
    """The real daemon against the simulator; ``sections`` replace config sections, ``mqtt`` some mqtt fields."""
    async with simulator() as sim:
        config: Config = dataclasses.replace(sim.config(tmp_path / "state"), **sections)
        if mqtt:
            config = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, **mqtt))
        running = Running(sim, tmp_path / "state")
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=running.state,
                                                stop=stop, on_session_event=running.events.put_nowait,
                                                install_signal_handlers=False))
        try:
            async with asyncio.timeout(60):
                yield running
        finally:
            stop.set()
            running.result = await daemon


def journal_with_link_down(tmp_path: Path, seconds_ago: float) -> tuple[JournalBuilder, Path]:
    builder = JournalBuilder(now=datetime.now(UTC) - timedelta(seconds=seconds_ago + 1))
    kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Down")
    path = tmp_path / "journal" / "system.journal"
    write_journal(path, builder.export_text(), 1)
    return builder, path


async def test_drop_is_completed_with_the_link_loss_just_before_it(tmp_path: Path) -> None:
    journal_with_link_down(tmp_path, seconds_ago=2)
    journal = JournalConfig(enabled=True, directory=str(tmp_path / "journal"), after_secs=0.5)
    async with running_daemon(tmp_path, journal=journal) as running:
        await running.drop_and_recover()
        completed = await running.completed()
    assert completed["correlation"] == "done"
    assert [(e["category"], e["kind"], e["interface"]) for e in completed["host_events"]] == [("link", "down", "eth0")]
    assert (completed["cause"], completed["subcause"]) == ("system_event", "link")
    assert running.result is not None
    recorded = running.result.collector.get_recent_drops(1)[0]
    assert recorded.host_events == completed["host_events"]
    assert recorded.network is not None
    assert "RetransSegs" in recorded.network["netstat_session"]  # kernel counters at the moment of the drop
    assert recorded.network["probe"]["ok"] is True  # the endpoint answered a probe right after the drop
    assert recorded.network["probe"]["tls_seconds"] is not None
    latest = (running.state / "exports" / "diagnostics-latest.json").read_text()
    assert '"cause": "insufficient_data"' in latest  # one drop is no pattern yet; the verdict says so


async def test_a_missing_journal_marks_drops_unavailable_never_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = JournalConfig(enabled=True, directory=str(tmp_path / "gone"), after_secs=0.1)
    async with running_daemon(tmp_path, journal=journal) as running:
        await running.drop_and_recover()
        completed = await running.completed()
    assert completed["correlation"] == "unavailable"
    assert completed["host_events"] is None
    assert "journal unavailable" in caplog.text


async def test_network_back_in_the_journal_cuts_the_backoff_short(tmp_path: Path) -> None:
    builder, journal_file = journal_with_link_down(tmp_path, seconds_ago=30)
    journal = JournalConfig(enabled=True, directory=str(tmp_path / "journal"), after_secs=0.1)
    slow_backoff = {"initial_reconnect_delay": 30.0, "max_reconnect_delay": 60.0}
    async with running_daemon(tmp_path, journal=journal, mqtt=slow_backoff) as running:
        await running.wait_for("connected")
        await running.sim.proxy.reset_all()
        await running.wait_for("interrupted")
        # The supervisor now waits 15-30 s before its first attempt; the link coming back ends that wait.
        builder.entries.clear()
        builder.now = datetime.now(UTC) - timedelta(seconds=1)
        kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None")
        appended = asyncio.get_running_loop().time()
        await asyncio.to_thread(write_journal, journal_file, builder.export_text(), 1)
        rebuilt = await running.wait_for("rebuilt")
        assert asyncio.get_running_loop().time() - appended < 5.0
        assert rebuilt.reconnect_seconds is not None
        assert rebuilt.reconnect_seconds < 10.0


async def test_prometheus_metrics_from_the_running_daemon(tmp_path: Path) -> None:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    (port,) = pick_free_ports(1)
    async with running_daemon(tmp_path, metrics=MetricsConfig(listen=f"127.0.0.1:{port}")) as running:
        await running.drop_and_recover()
        async with aiohttp.ClientSession() as http:
            while True:  # the first status round trip follows the session by a moment
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                           for family in text_string_to_metric_families(text) for s in family.samples}
                if samples.get(("nwp500d_status_round_trip_seconds_count", ()), 0) >= 1:
                    break
                await asyncio.sleep(0.1)
    assert samples[("nwp500d_connected", ())] == 1
    assert samples[("nwp500d_drops_total", (("cause", "pending"), ("error", "AWS_IO_SOCKET_CLOSED")))] == 1
    assert samples[("nwp500d_sessions_total", (("kind", "rebuilt"),))] == 1
    assert any(name == "nwp500d_credentials_expiry_timestamp_seconds" for name, _ in samples)
