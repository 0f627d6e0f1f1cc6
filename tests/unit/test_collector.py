"""Collector semantics, including each defect of the upstream collector that this one must not have."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from nwp500d import ConnectionDropEvent, ConnectionEvent, MqttDiagnosticsCollector, MqttMetrics
from nwp500d.redact import Redactor
from tests.fakes import CrtLikeError, FakeClock
from tests.unit.guide_snippet import analyze_diagnostics

HANGUP = CrtLikeError("AWS_ERROR_MQTT_UNEXPECTED_HANGUP", 5134, "The connection was closed unexpectedly.")
TIMEOUT = CrtLikeError("AWS_ERROR_MQTT_TIMEOUT", 5129, "Time limit between request and response has been exceeded.")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def collector(clock: FakeClock) -> MqttDiagnosticsCollector:
    return MqttDiagnosticsCollector(clock=clock)


async def test_durations_use_the_monotonic_clock(clock: FakeClock, collector: MqttDiagnosticsCollector) -> None:
    await collector.record_connection_success()
    clock.advance(100)
    clock.step_wall(-3600)  # NTP steps the wall clock back an hour mid-session
    drop = await collector.record_connection_drop(error=HANGUP)
    assert drop.duration_connected_seconds == pytest.approx(100)
    clock.advance(5)
    clock.step_wall(7200)
    success = await collector.record_connection_success(event_type="resumed")
    assert success.time_to_reconnect_seconds == pytest.approx(5)


async def test_back_to_back_drops_do_not_report_growing_durations(
    clock: FakeClock, collector: MqttDiagnosticsCollector
) -> None:
    await collector.record_connection_success()
    clock.advance(300)
    first = await collector.record_connection_drop(error=HANGUP)
    clock.advance(60)
    second = await collector.record_connection_drop(error=HANGUP)
    assert first.duration_connected_seconds == pytest.approx(300)
    assert second.duration_connected_seconds == 0.0
    assert second.session_id is None
    metrics = collector.get_metrics()
    assert metrics.total_connection_drops == 2
    # Only the real session counts in the session statistics.
    assert metrics.shortest_session_seconds == pytest.approx(300)
    assert metrics.average_session_seconds == pytest.approx(300)
    assert json.loads(collector.export_json())["session_history_summary"]["total_sessions"] == 1


async def test_drop_before_any_connection(collector: MqttDiagnosticsCollector) -> None:
    drop = await collector.record_connection_drop(error=TIMEOUT)
    assert drop.duration_connected_seconds == 0.0
    assert collector.get_metrics().to_dict()["shortest_session_seconds"] is None


@pytest.mark.parametrize("event_type", ["resumed", "rebuilt", "deep_reconnected"])
async def test_every_success_path_is_recorded(
    clock: FakeClock, collector: MqttDiagnosticsCollector, event_type: str
) -> None:
    await collector.record_connection_success(event_type="connected")
    clock.advance(50)
    await collector.record_connection_drop(error=HANGUP)
    clock.advance(7)
    event = await collector.record_connection_success(event_type=event_type, session_present=True, attempt_number=3)
    assert event.event_type == event_type
    assert event.time_to_reconnect_seconds == pytest.approx(7)
    clock.advance(20)
    metrics = collector.get_metrics()
    assert metrics.total_connections == 2
    assert metrics.connection_recovered == 1
    assert metrics.current_session_uptime_seconds == pytest.approx(20)
    assert metrics.reconnection_attempts_distribution == {"2-5": 1}
    assert collector.is_connected


async def test_unknown_event_type_is_refused_and_initial_is_accepted(collector: MqttDiagnosticsCollector) -> None:
    with pytest.raises(ValueError, match="event_type must be one of"):
        await collector.record_connection_success(event_type="reconnected")
    event = await collector.record_connection_success(event_type="initial")
    assert event.event_type == "connected"


async def test_message_counters_count(clock: FakeClock, collector: MqttDiagnosticsCollector) -> None:
    collector.record_publish(queued=True)
    await collector.record_connection_success()
    for _ in range(120):
        collector.record_publish()
        clock.advance(0.5)  # 2 publishes per second for a minute
        collector.tick()
    for _ in range(7):
        collector.record_message_received()
    clock.advance(3)
    drop = await collector.record_connection_drop(error=HANGUP)
    assert drop.messages_published_in_session == 120
    assert drop.messages_received_in_session == 7
    assert drop.publish_rate_60s == pytest.approx(114 / 60, abs=0.05)  # the last 3 s were quiet
    assert drop.seconds_since_last_activity == pytest.approx(3.0)
    metrics = collector.get_metrics()
    assert (metrics.messages_published, metrics.messages_queued, metrics.messages_received) == (120, 1, 7)
    # A new session starts its own counts; totals keep growing.
    await collector.record_connection_success(event_type="resumed")
    collector.record_publish()
    clock.advance(1)
    drop = await collector.record_connection_drop(error=HANGUP)
    assert drop.messages_published_in_session == 1
    assert collector.get_metrics().messages_published == 121


async def test_publish_rate_covers_the_last_minute(clock: FakeClock, collector: MqttDiagnosticsCollector) -> None:
    await collector.record_connection_success()
    for _ in range(600):
        collector.record_publish()
    for _ in range(120):  # two quiet minutes, ticked once a second
        clock.advance(1)
        collector.tick()
    collector.record_publish()
    drop = await collector.record_connection_drop()
    assert drop.publish_rate_60s == pytest.approx(1 / 60, abs=1e-3)


async def test_publish_rate_of_a_young_session_without_ticks(
    clock: FakeClock, collector: MqttDiagnosticsCollector
) -> None:
    await collector.record_connection_success()
    for _ in range(50):
        collector.record_publish()
    clock.advance(10)
    assert (await collector.record_connection_drop()).publish_rate_60s == pytest.approx(5.0)
    await collector.record_connection_success(event_type="resumed")
    clock.advance(3600)  # an hour and nobody ticked: no honest one-minute figure
    assert (await collector.record_connection_drop()).publish_rate_60s is None


async def test_clean_disconnect_and_attempts(clock: FakeClock, collector: MqttDiagnosticsCollector) -> None:
    await collector.record_connection_success()
    clock.advance(10)
    collector.record_disconnect()
    collector.record_disconnect()  # no session open: nothing to end
    collector.record_reconnect_attempt(1, HANGUP)
    collector.record_reconnect_attempt(2)
    metrics = collector.get_metrics()
    assert metrics.total_disconnects == 1
    assert metrics.total_connection_drops == 0
    assert metrics.total_reconnect_attempts == 2
    assert not collector.is_connected


async def test_error_shapes(collector: MqttDiagnosticsCollector) -> None:
    await collector.record_connection_drop(error=RuntimeError("5131 (AWS_ERROR_MQTT_NOT_CONNECTED): not connected"))
    await collector.record_connection_drop(error=TimeoutError())
    await collector.record_connection_drop(error=MemoryError())
    await collector.record_connection_drop(error=None)
    names = [d.error_name for d in collector.get_recent_drops(10)]
    assert names == ["AWS_ERROR_MQTT_NOT_CONNECTED", "TIMEOUT", "MemoryError", None]
    assert collector.get_recent_drops(10)[0].error_code == 5131
    assert json.loads(collector.export_json())["aws_error_counts"] == {
        "AWS_ERROR_MQTT_NOT_CONNECTED": 1, "TIMEOUT": 1, "MemoryError": 1,
    }


async def test_retention_and_recent(clock: FakeClock) -> None:
    collector = MqttDiagnosticsCollector(max_events_retained=3, clock=clock)
    for _ in range(5):
        await collector.record_connection_success(event_type="resumed")
        clock.advance(1)
        await collector.record_connection_drop(error=HANGUP)
    assert len(collector.get_recent_drops(10)) == 3
    assert len(collector.get_recent_drops(2)) == 2
    assert collector.get_recent_drops(0) == []
    assert len(collector.get_recent_connections(10)) == 3
    assert collector.get_metrics().total_connection_drops == 5  # totals are not limited by retention


async def test_listeners_sync_async_and_failing(collector: MqttDiagnosticsCollector,
                                                caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(_event: ConnectionDropEvent) -> None:
        raise RuntimeError("listener bug")

    async def async_listener(event: ConnectionDropEvent) -> None:
        seen.append(f"async:{event.error_name}")

    collector.on_connection_drop(broken)
    collector.on_connection_drop(lambda event: seen.append(f"sync:{event.error_name}"))
    collector.on_connection_drop(async_listener)
    await collector.record_connection_drop(error=HANGUP)
    assert seen == ["sync:AWS_ERROR_MQTT_UNEXPECTED_HANGUP", "async:AWS_ERROR_MQTT_UNEXPECTED_HANGUP"]
    assert "drop listener" in caplog.text


async def test_get_metrics_is_a_snapshot(collector: MqttDiagnosticsCollector) -> None:
    before = collector.get_metrics()
    await collector.record_connection_drop(error=HANGUP)
    assert before.total_connection_drops == 0
    assert before.connection_drops_by_error == {}
    assert isinstance(collector.get_metrics(), MqttMetrics)


async def test_history_round_trip_spans_restarts(clock: FakeClock, collector: MqttDiagnosticsCollector) -> None:
    records: list[dict[str, Any]] = []
    collector.on_record(records.append)
    await collector.record_connection_success()
    collector.record_publish()
    collector.record_message_received()
    clock.advance(120)
    drop = await collector.record_connection_drop(error=HANGUP)
    collector.record_reconnect_attempt(1, TIMEOUT)
    clock.advance(3)
    await collector.record_connection_success(event_type="rebuilt", attempt_number=2)
    collector.complete_drop(drop.drop_id or "", correlation="done", host_events=[{"category": "suspend"}],
                            cause="system_event", subcause="suspend")
    clock.advance(40)
    collector.record_publish()
    collector.record_disconnect()
    assert [r["kind"] for r in records] == ["connection", "drop", "attempt", "connection",
                                            "drop_completed", "disconnect"]

    restored = MqttDiagnosticsCollector(clock=FakeClock())
    assert restored.restore(json.loads(json.dumps(records))) == len(records)
    expected = collector.get_metrics().to_dict()
    actual = restored.get_metrics().to_dict()
    assert actual == expected
    back = restored.get_recent_drops(1)[0]
    assert (back.cause, back.subcause, back.correlation) == ("system_event", "suspend", "done")
    assert back.host_events == [{"category": "suspend"}]


async def test_export_keys_and_values(clock: FakeClock) -> None:
    collector = MqttDiagnosticsCollector(clock=clock, daemon_info={"version": "0.1.0"})
    await collector.record_connection_success()
    clock.advance(90)
    await collector.record_connection_drop(error=HANGUP, keep_alive_secs=60, credentials_age_seconds=1800.0)
    data = json.loads(collector.export_json())
    assert {"schema_version", "timestamp", "daemon", "metrics", "recent_drops", "recent_connections",
            "aws_error_counts", "session_history_summary", "verdict"} <= set(data)
    assert data["schema_version"] == 1
    assert set(MqttMetrics().to_dict()) <= set(data["metrics"])
    drop = data["recent_drops"][0]
    guide_keys = {"timestamp", "error_name", "error_message", "error_code", "reconnect_attempt",
                  "duration_connected_seconds", "active_subscriptions", "queued_commands"}
    extensions = {"session_id", "cause", "host_events", "network", "messages_published_in_session",
                  "messages_received_in_session", "publish_rate_60s", "credentials_age_seconds",
                  "suspended_seconds", "keep_alive_secs"}
    assert guide_keys | extensions <= set(drop)
    assert drop["keep_alive_secs"] == 60
    assert drop["timestamp"].endswith("Z")
    assert set(ConnectionEvent(timestamp="x").to_dict()) <= set(data["recent_connections"][0])
    assert data["session_history_summary"] == {"total_sessions": 1, "sample_durations": [90.0]}


async def test_guide_analysis_snippet_runs_unchanged_on_our_export(
    clock: FakeClock, collector: MqttDiagnosticsCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await collector.record_connection_drop(error=TIMEOUT)  # a drop before any session still prints
    await collector.record_connection_success()
    clock.advance(1234)
    await collector.record_connection_drop(error=HANGUP)
    await collector.record_connection_success(event_type="resumed")
    clock.advance(30)
    export = tmp_path / "diagnostics.json"
    export.write_text(collector.export_json())
    analyze_diagnostics(str(export))
    out = capsys.readouterr().out
    assert "Total Drops: 2" in out
    assert "Successful Reconnections: 1" in out
    assert "Current Uptime: 30s" in out
    assert "AWS_ERROR_MQTT_UNEXPECTED_HANGUP (duration: 1234s)" in out
    assert "AWS_ERROR_MQTT_TIMEOUT: 1" in out


async def test_export_is_redacted(collector: MqttDiagnosticsCollector) -> None:
    collector.redactor = Redactor(["s3cr3t-pass"])
    error = CrtLikeError("AWS_ERROR_HTTP_WEBSOCKET_UPGRADE_FAILURE", 2065,
                         "upgrade for owner@example.com with s3cr3t-pass on navilink-04786332fca0 failed")
    await collector.record_connection_drop(error=error, network={"macAddress": "04:78:63:32:fc:a0"})
    text = collector.export_json()
    for secret in ("owner@example.com", "s3cr3t-pass", "04786332fca0", "04:78:63:32:fc:a0"):
        assert secret not in text
    assert not math.isnan(json.loads(text)["metrics"]["average_session_seconds"])


async def test_print_summary_goes_to_stdout_and_the_log(
    clock: FakeClock, collector: MqttDiagnosticsCollector, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await collector.record_connection_success()
    clock.advance(3 * 3600 + 12 * 60)
    await collector.record_connection_drop(error=HANGUP)
    with caplog.at_level(logging.INFO, logger="nwp500d.diagnostics"):
        collector.print_summary()
    out = capsys.readouterr().out
    assert "drops" in out
    assert "3h12m" in out
    assert "AWS_ERROR_MQTT_UNEXPECTED_HANGUP" in out
    assert "3h12m" in caplog.text


async def test_verbose_logging(collector: MqttDiagnosticsCollector, caplog: pytest.LogCaptureFixture) -> None:
    collector.enable_verbose_logging = True
    with caplog.at_level(logging.INFO, logger="nwp500d.diagnostics"):
        await collector.record_connection_success()
        await collector.record_connection_drop(error=HANGUP)
    assert "connection success recorded" in caplog.text
    assert "connection drop recorded: error=AWS_ERROR_MQTT_UNEXPECTED_HANGUP" in caplog.text


def test_constructor_defaults() -> None:
    collector = MqttDiagnosticsCollector()
    assert collector.max_events_retained == 1000
    assert collector.enable_verbose_logging is False
    with pytest.raises(ValueError, match="max_events_retained"):
        MqttDiagnosticsCollector(max_events_retained=0)
