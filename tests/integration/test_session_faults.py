"""The supervisor on the production path (MQTT over WebSocket+TLS with SigV4) and over TCP, against real faults.

Every fault must be detected, recorded once with the right error name, and recovered from.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from nwp500d.config import MqttConnectionConfig
from nwp500d.mqtt.backoff import Backoff
from nwp500d.mqtt.transport import CrtFactory, TransportSettings
from nwp500d.navilink.errors import CredentialsRejected
from nwp500d.sim.broker import find_mosquitto
from tests.integration.session_harness import harness

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - any reason mosquitto cannot be found means these tests cannot run here
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(180)


async def test_wss_sigv4_session_publishes_receives_and_stops_cleanly(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        received: asyncio.Queue[bytes] = asyncio.Queue()
        await h.supervisor.subscribe("nwp500d/test/#", lambda _topic, payload: received.put_nowait(payload))
        h.start()
        up = await h.next_event("connected")
        assert up.attempt == 1
        assert h.signings >= 1  # the WebSocket upgrade was SigV4-signed from the credentials cache
        assert await h.supervisor.publish("nwp500d/test/echo", b"hello")
        async with asyncio.timeout(10):
            assert await received.get() == b"hello"
        await h.stop()
        metrics = h.collector.get_metrics()
        assert (metrics.total_connections, metrics.total_connection_drops, metrics.total_disconnects) == (1, 0, 1)
        assert (metrics.messages_published, metrics.messages_received) == (1, 1)
        assert h.navilink.sign_ins == 1


@pytest.mark.parametrize("kind", ["wss-sigv4", "tcp"])
@pytest.mark.parametrize("fault", ["rst", "fin"])
async def test_reset_and_close_are_recorded_once_and_recovered(tmp_path: Path, kind: str, fault: str) -> None:
    async with harness(tmp_path, kind=kind) as h:  # type: ignore[arg-type]
        h.start()
        await h.next_event("connected")
        if fault == "rst":
            await h.proxy.reset_all()
        else:
            await h.proxy.fin_all()
        down = await h.next_event("interrupted", timeout=10)
        assert down.error is not None
        assert down.error.name == "AWS_IO_SOCKET_CLOSED"
        back = await h.next_event("rebuilt", timeout=15)
        assert back.reconnect_seconds is not None
        assert back.reconnect_seconds < 5
        drops = h.collector.get_recent_drops(10)
        assert [d.error_name for d in drops] == ["AWS_IO_SOCKET_CLOSED"]
        assert drops[0].keep_alive_secs == 4
        assert drops[0].credentials_age_seconds is not None


async def test_broker_kill_refused_reconnects_then_restart(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        got: asyncio.Queue[bytes] = asyncio.Queue()
        await h.supervisor.subscribe("nwp500d/test/x", lambda _t, p: got.put_nowait(p))
        h.start()
        await h.next_event("connected")
        await h.broker.kill()
        down = await h.next_event("interrupted", timeout=10)
        assert down.error is not None
        assert down.error.name == "AWS_IO_SOCKET_CLOSED"
        failed = await h.next_event("failed", timeout=15)  # the proxy cannot reach the dead broker
        assert failed.error is not None
        await h.broker.restart()
        back = await h.next_event("rebuilt", timeout=20)
        assert back.session_present is False  # no persistence: the broker forgot us, so we resubscribed
        assert await h.supervisor.publish("nwp500d/test/x", b"after-restart")
        async with asyncio.timeout(10):
            assert await got.get() == b"after-restart"
        assert h.collector.get_metrics().total_connection_drops == 1
        assert h.collector.get_metrics().total_reconnect_attempts >= 1


async def test_blackhole_is_detected_within_keepalive_plus_ping_timeout(tmp_path: Path) -> None:
    async with harness(tmp_path, keep_alive_secs=3, ping_timeout_ms=1000) as h:
        h.start()
        await h.next_event("connected")
        started = time.monotonic()
        h.proxy.blackhole(True)
        down = await h.next_event("interrupted", timeout=15)
        detected = time.monotonic() - started
        assert down.error is not None
        assert down.error.name == "AWS_ERROR_MQTT_TIMEOUT"
        assert detected <= 3 + 1 + 1.0  # K + P + slack
        h.proxy.blackhole(False)
        await h.next_event("rebuilt", timeout=20)
        assert [d.error_name for d in h.collector.get_recent_drops(10)] == ["AWS_ERROR_MQTT_TIMEOUT"]


async def test_stalled_websocket_upgrade_is_abandoned_and_replaced(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        h.start()
        await h.next_event("connected")
        h.proxy.stall_upgrade(True)
        await h.proxy.reset_all()
        await h.next_event("interrupted", timeout=10)
        failed = await h.next_event("failed", timeout=20)
        assert failed.error is not None
        assert failed.error.name == "NWP500D_CONNECT_DEADLINE"
        h.proxy.stall_upgrade(False)
        await h.next_event("rebuilt", "deep_reconnected", timeout=30)
        assert h.collector.get_metrics().total_connection_drops == 1


async def test_a_wake_during_a_failing_attempt_ends_the_backoff_after_it(tmp_path: Path) -> None:
    """The network comes back while an attempt is still failing on the old state (the link came up, the route a
    moment later): that wake must end the backoff after the attempt, not be forgotten when the backoff starts."""
    slow = MqttConnectionConfig(initial_reconnect_delay=30.0, max_reconnect_delay=60.0, connect_timeout_secs=5.0,
                                operation_timeout_secs=5.0, stable_session_secs=3.0)
    async with harness(tmp_path, config=slow) as h:
        h.start()
        await h.next_event("connected")
        h.proxy.stall_upgrade(True)
        await h.proxy.reset_all()
        await h.next_event("interrupted", timeout=10)
        accepted = h.proxy.connections_accepted
        h.supervisor.wake()  # ends the first 15-30 s backoff: an attempt starts and stalls in the upgrade
        async with asyncio.timeout(10):
            await h.proxy.wait_connections(lambda proxy: proxy.connections_accepted > accepted)
        loop = asyncio.get_running_loop()
        woken = loop.time()
        h.supervisor.wake()  # during the attempt, which still fails at its deadline
        h.proxy.stall_upgrade(False)
        failed = await h.next_event("failed", timeout=10)
        assert failed.error is not None and failed.error.name == "NWP500D_CONNECT_DEADLINE"
        await h.next_event("rebuilt", "deep_reconnected", timeout=20)
        # Deadline (5 s) and the 1 CONNECT/s floor, not the 30-60 s backoff step that would follow the failure.
        assert loop.time() - woken < 10.0


async def test_expired_aws_credentials_mid_session_force_a_full_sign_in(tmp_path: Path) -> None:
    async with harness(tmp_path, navilink_options={"aws_lifetime_secs": 900, "jwt_lifetime_secs": 3600}) as h:
        h.start()
        await h.next_event("connected")
        assert h.navilink.sign_ins == 1
        h.auth_clock.advance(700)  # inside the 300 s margin of the 900 s AWS credentials
        await h.proxy.reset_all()
        await h.next_event("interrupted", timeout=10)
        await h.next_event("rebuilt", timeout=15)
        assert h.navilink.sign_ins == 2
        assert h.navilink.refreshes == 0
        drop = h.collector.get_recent_drops(1)[0]
        assert drop.credentials_age_seconds == pytest.approx(700, abs=5)
        rebuilt = h.collector.get_recent_connections(1)[0]
        assert rebuilt.event_type == "rebuilt"
        assert rebuilt.credentials_age_seconds == pytest.approx(0, abs=5)  # fresh from the new sign-in


async def test_auth_api_down_then_up(tmp_path: Path) -> None:
    async with harness(tmp_path, navilink_options={"aws_lifetime_secs": 900}) as h:
        h.start()
        await h.next_event("connected")
        h.navilink.mode = "http_503"
        h.auth_clock.advance(700)
        await h.proxy.reset_all()
        await h.next_event("interrupted", timeout=10)
        failed = await h.next_event("failed", timeout=15)
        assert failed.error is not None
        assert failed.error.name == "NAVILINK_HTTP_503"
        h.navilink.mode = "ok"
        await h.next_event("rebuilt", "deep_reconnected", timeout=20)
        assert h.supervisor.is_connected


async def test_rejected_password_is_fatal(tmp_path: Path) -> None:
    async with harness(tmp_path, navilink_options={"aws_lifetime_secs": 900}) as h:
        h.start()
        await h.next_event("connected")
        h.navilink.reject_password(True)
        h.auth_clock.advance(700)
        await h.proxy.reset_all()
        assert h.task is not None
        with pytest.raises(CredentialsRejected) as caught:
            async with asyncio.timeout(15):
                await h.task
        assert "correct-horse" not in str(caught.value)
        assert "owner@example.com" not in str(caught.value)


async def test_duplicate_client_id_takeover_is_seen_as_a_drop(tmp_path: Path) -> None:
    async with harness(tmp_path, kind="tcp") as h:
        h.start()
        await h.next_event("connected")
        intruder_settings = TransportSettings(kind="tcp", host=h.broker.host, port=h.broker.tcp_port,
                                              client_id="nwp500d-test", keep_alive_secs=30)
        intruder = CrtFactory(intruder_settings, lambda: None).new_connection(asyncio.get_running_loop(),
                                                                             lambda _e: None)
        await intruder.connect(10)
        down = await h.next_event("interrupted", timeout=10)
        assert down.error is not None
        assert down.error.name == "AWS_IO_SOCKET_CLOSED"
        intruder.close_now()
        await h.next_event("rebuilt", timeout=15)


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_hundred_forced_rebuilds_leak_no_threads_or_descriptors(tmp_path: Path) -> None:
    from nwp500d.errors import ErrorInfo

    async with harness(tmp_path, kind="tcp", backoff=Backoff(initial=0.01, cap=0.01, floor=0.0)) as h:
        h.start()
        await h.next_event("connected")
        threads_before = threading.active_count()
        fds_before = open_descriptors()
        for _ in range(100):
            h.supervisor.force_rebuild(ErrorInfo("NWP500D_DEVICE_DEAF", None, "test"))
            await h.next_event("rebuilt", timeout=15)
        await asyncio.sleep(0)  # let the last close callbacks run
        assert h.collector.get_metrics().total_connection_drops == 100
        assert threading.active_count() <= threads_before + 1
        assert open_descriptors() <= fds_before + 4
        assert h.proxy.active_connections <= 2


async def test_device_monitor_measures_round_trips_and_rebuilds_a_deaf_session(tmp_path: Path) -> None:
    from nwp500d.monitor import DeviceMonitor
    from nwp500d.sim.device import SimulatedDevice

    async with harness(tmp_path) as h:
        device_settings = TransportSettings(kind="tcp", host=h.broker.host, port=h.broker.tcp_port,
                                            client_id="sim-device", keep_alive_secs=30)
        device = SimulatedDevice(device_settings, mac_address="04786332fca0", additional_value="5322")
        await device.start()
        try:
            monitor = DeviceMonitor(h.supervisor, [device], client_id="nwp500d-test", session_id="s1",
                                    interval_secs=3600, reply_timeout_secs=1.0, deaf_after=2)
            await monitor.start()
            h.start()
            await h.next_event("connected")
            rtt = await monitor.poll(device)
            assert rtt is not None
            assert 0 < rtt < 1.0
            assert monitor.health["04786332fca0"].last_status == {
                "dhwTemperature": 120, "dhwTemperatureSetting": 120, "operationMode": 64,
                "dhwOperationSetting": 3, "errorCode": 0, "wifiRssi": -52,
            }
            device.silent = True
            assert await monitor.poll(device) is None
            assert await monitor.poll(device) is None
            down = await h.next_event("interrupted", timeout=10)
            assert down.error is not None
            assert down.error.name == "NWP500D_DEVICE_DEAF"
            await h.next_event("rebuilt", timeout=15)
            device.silent = False
            assert await monitor.poll(device) is not None  # subscriptions were renewed on the new connection
        finally:
            await device.stop()
