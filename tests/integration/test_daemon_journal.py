"""The real daemon completes each drop with the host events of its window, from real .journal files."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nwp500d.config import JournalConfig
from nwp500d.daemon import run_daemon
from nwp500d.model import ConnectionDropEvent
from nwp500d.mqtt.session import SessionEvent
from nwp500d.secrets import Secret
from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_PASSWORD, simulator
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


async def test_drop_is_completed_with_the_link_loss_just_before_it(tmp_path: Path) -> None:
    builder = JournalBuilder(now=datetime.now(UTC) - timedelta(seconds=3))
    kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Down")  # one second before "now"
    write_journal(tmp_path / "journal" / "system.journal", builder.export_text(), 1)
    async with simulator() as sim:
        config = sim.config(tmp_path / "state")
        config = dataclasses.replace(
            config, journal=JournalConfig(enabled=True, directory=str(tmp_path / "journal"), after_secs=0.5)
        )
        events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=tmp_path / "state",
                                                stop=stop, on_session_event=events.put_nowait,
                                                install_signal_handlers=False))
        try:
            async with asyncio.timeout(30):
                while (await events.get()).kind != "connected":
                    pass
                await sim.proxy.reset_all()
                while (await events.get()).kind != "rebuilt":
                    pass
                store = EventStore(tmp_path / "state" / "events")
                while not [r for r in store.load().records if r["kind"] == "drop_completed"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # the window closes after_secs after the drop: a file, not an event
        finally:
            stop.set()
            result = await daemon
        completed = next(r for r in EventStore(tmp_path / "state" / "events").load().records
                         if r["kind"] == "drop_completed")
        assert completed["correlation"] == "done"
        assert [(e["category"], e["kind"], e["interface"]) for e in completed["host_events"]] == [
            ("link", "down", "eth0")
        ]
        assert (completed["cause"], completed["subcause"]) == ("system_event", "link")
        latest = (tmp_path / "state" / "exports" / "diagnostics-latest.json").read_text()
        assert '"cause": "insufficient_data"' in latest  # one drop is no pattern yet; the verdict says so
        drop: ConnectionDropEvent = result.collector.get_recent_drops(1)[0]
        assert drop.host_events == completed["host_events"]


async def test_a_missing_journal_marks_drops_unavailable_never_empty(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    async with simulator() as sim:
        config = dataclasses.replace(sim.config(tmp_path / "state"),
                                     journal=JournalConfig(enabled=True, directory=str(tmp_path / "gone"),
                                                           after_secs=0.1))
        events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=tmp_path / "state",
                                                stop=stop, on_session_event=events.put_nowait,
                                                install_signal_handlers=False))
        try:
            async with asyncio.timeout(30):
                while (await events.get()).kind != "connected":
                    pass
                await sim.proxy.reset_all()
                while (await events.get()).kind != "rebuilt":
                    pass
                store = EventStore(tmp_path / "state" / "events")
                while not [r for r in store.load().records if r["kind"] == "drop_completed"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await daemon
    completed = next(r for r in EventStore(tmp_path / "state" / "events").load().records
                     if r["kind"] == "drop_completed")
    assert completed["correlation"] == "unavailable"
    assert completed["host_events"] is None
    assert "journal unavailable" in caplog.text


async def test_network_back_in_the_journal_cuts_the_backoff_short(tmp_path: Path) -> None:
    builder = JournalBuilder(now=datetime.now(UTC) - timedelta(seconds=30))
    kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Down")
    journal_file = tmp_path / "journal" / "system.journal"
    write_journal(journal_file, builder.export_text(), 1)
    async with simulator() as sim:
        base = sim.config(tmp_path / "state")
        config = dataclasses.replace(
            base,
            journal=JournalConfig(enabled=True, directory=str(tmp_path / "journal"), after_secs=0.1),
            mqtt=dataclasses.replace(base.mqtt, initial_reconnect_delay=30.0, max_reconnect_delay=60.0),
        )
        events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=tmp_path / "state",
                                                stop=stop, on_session_event=events.put_nowait,
                                                install_signal_handlers=False))
        try:
            async with asyncio.timeout(60):
                while (await events.get()).kind != "connected":
                    pass
                await sim.proxy.reset_all()
                while (await events.get()).kind != "interrupted":
                    pass
                # The supervisor now waits 15-30 s before its first attempt; the link coming back ends that wait.
                builder.entries.clear()
                builder.now = datetime.now(UTC) - timedelta(seconds=1)
                kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None")
                appended = asyncio.get_running_loop().time()
                await asyncio.to_thread(write_journal, journal_file, builder.export_text(), 1)
                while (event := await events.get()).kind != "rebuilt":
                    pass
                assert asyncio.get_running_loop().time() - appended < 5.0
                assert event.reconnect_seconds is not None
                assert event.reconnect_seconds < 10.0
        finally:
            stop.set()
            await daemon


async def test_prometheus_metrics_from_the_running_daemon(tmp_path: Path) -> None:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from nwp500d.config import MetricsConfig
    from nwp500d.sim.broker import pick_free_ports

    (port,) = pick_free_ports(1)
    async with simulator() as sim:
        config = dataclasses.replace(sim.config(tmp_path / "state"),
                                     metrics=MetricsConfig(listen=f"127.0.0.1:{port}"))
        events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, Secret(DEMO_PASSWORD, "test"), state_dir=tmp_path / "state",
                                                stop=stop, on_session_event=events.put_nowait,
                                                install_signal_handlers=False))
        try:
            async with asyncio.timeout(30):
                while (await events.get()).kind != "connected":
                    pass
                await sim.proxy.reset_all()
                while (await events.get()).kind != "rebuilt":
                    pass
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
        finally:
            stop.set()
            await daemon
    assert samples[("nwp500d_connected", ())] == 1
    assert samples[("nwp500d_drops_total", (("cause", "pending"), ("error", "AWS_IO_SOCKET_CLOSED")))] == 1
    assert samples[("nwp500d_sessions_total", (("kind", "rebuilt"),))] == 1
    assert any(name == "nwp500d_credentials_expiry_timestamp_seconds" for name, _ in samples)
