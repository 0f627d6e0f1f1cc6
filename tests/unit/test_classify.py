"""Classifier scenarios: each cause and sub-cause, mixed histories and noisy ones; the evidence names the facts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nwp500d.analysis.classify import Settings, classify
from nwp500d.clock import iso_utc
from nwp500d.model import ConnectionDropEvent

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(at: datetime, category: str, kind: str, message: str = "m", **fields: str) -> dict[str, Any]:
    return {"time": iso_utc(at), "category": category, "kind": kind, "message": message, "unit": None,
            "interface": "wlan0", "fields": fields}


def drop(at: datetime, *, duration: float = 3600.0, error: str = "AWS_ERROR_MQTT_TIMEOUT", idle: float | None = 30.0,
         host: list[dict[str, Any]] | None = None, rate: float | None = 0.01, keep_alive: int = 60,
         suspended: float | None = 0.0, published: int = 10, network: dict[str, Any] | None = None
         ) -> ConnectionDropEvent:
    return ConnectionDropEvent(
        timestamp=iso_utc(at), error_name=error, error_code=5129, duration_connected_seconds=duration,
        drop_id=f"d{at.timestamp():.0f}", session_id="s", correlation="done", host_events=host or [],
        messages_published_in_session=published, publish_rate_60s=rate, seconds_since_last_activity=idle,
        suspended_seconds=suspended, keep_alive_secs=keep_alive, network=network,
    )


def irregular_times(count: int, seed: int = 1) -> list[datetime]:
    rng = random.Random(seed)
    t, out = T0, []
    for _ in range(count):
        t += timedelta(seconds=rng.uniform(600, 30_000))
        out.append(t)
    return out


def verdict(drops: list[ConnectionDropEvent], **kwargs: Any) -> tuple[str, str | None, list[str]]:
    analysis = classify(drops, **kwargs)
    return analysis.verdict.cause, analysis.verdict.subcause, list(analysis.verdict.evidence)


def test_websocket_lifetime() -> None:
    times = [T0 + timedelta(seconds=86_400 * i + i * 7) for i in range(1, 5)]
    cause, sub, evidence = verdict([drop(t, duration=86_400 + 5 * i, error="AWS_ERROR_MQTT_UNEXPECTED_HANGUP")
                                    for i, t in enumerate(times)])
    assert (cause, sub) == ("server_timeout", "websocket_lifetime")
    assert any("24 h WebSocket limit" in line for line in evidence)


def test_steady_period_every_twenty_minutes_with_jitter() -> None:
    rng = random.Random(3)
    durations = [1200 * rng.uniform(0.97, 1.03) for _ in range(8)]
    times, t = [], T0
    for d in durations:
        t += timedelta(seconds=d + 2)
        times.append(t)
    cause, sub, evidence = verdict([drop(t, duration=d, error="AWS_ERROR_MQTT_UNEXPECTED_HANGUP")
                                    for t, d in zip(times, durations, strict=True)])
    assert (cause, sub) == ("server_timeout", None)
    assert any("8 drops at regular session ages of 19m56s" in line for line in evidence)


def test_credential_lifetime() -> None:
    times = [T0 + timedelta(seconds=3610 * i) for i in range(1, 6)]
    cause, sub, _ = verdict([drop(t, duration=3600 + i, error="AWS_ERROR_MQTT_UNEXPECTED_HANGUP")
                             for i, t in enumerate(times)])
    assert (cause, sub) == ("server_timeout", "credential_lifetime")


def test_irregular_network() -> None:
    rng = random.Random(5)
    drops = [drop(t, duration=rng.uniform(300, 30_000), error=rng.choice(["AWS_ERROR_MQTT_TIMEOUT",
                                                                          "AWS_IO_SOCKET_CLOSED"]))
             for t in irregular_times(8)]
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("network", None)
    assert any(line.startswith("irregular: intervals vary by") for line in evidence)


def test_nat_idle_timeout() -> None:
    rng = random.Random(6)
    drops = [drop(t, duration=rng.uniform(600, 9000), idle=rng.uniform(300, 600)) for t in irregular_times(6)]
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("network", "nat_idle_timeout")
    assert any("6 of 6 timeouts followed >= 240 s idle" in line for line in evidence)


def test_keep_alive_above_nat_timeouts_is_nat_suspect_even_without_idle_data() -> None:
    drops = [drop(t, duration=500 + 300 * i, idle=None, keep_alive=600) for i, t in enumerate(irregular_times(4))]
    assert verdict(drops)[:2] == ("network", "nat_idle_timeout")


@pytest.mark.parametrize(
    ("error", "network", "expected"),
    [
        ("AWS_IO_DNS_QUERY_AGAIN", None, ("network", "dns")),
        ("AWS_IO_SOCKET_NETWORK_DOWN", None, ("network", "link")),
        ("AWS_IO_SOCKET_TIMEOUT", {"netstat_session": {"RetransSegs": 40}}, ("network", "packet_loss")),
        ("AWS_ERROR_MQTT_TIMEOUT", {"netstat_last_minute": {"RetransSegs": 2, "TCPTimeouts": 4}},
         ("network", "packet_loss")),
        ("AWS_IO_SOCKET_CLOSED", {"probe": {"errors": {"dns": "resolution failed"}}}, ("network", "dns")),
    ],
)
def test_network_subcauses_from_errors_and_counters(error: str, network: dict[str, Any] | None,
                                                    expected: tuple[str, str]) -> None:
    drops = [drop(t, duration=700 + 1000 * i, error=error, network=network) for i, t in enumerate(irregular_times(4))]
    assert verdict(drops)[:2] == expected


def test_rate_limit_after_many_messages() -> None:
    rng = random.Random(8)
    drops = [drop(t, duration=rng.uniform(600, 8000), error="AWS_ERROR_MQTT_UNEXPECTED_HANGUP", rate=95.0)
             for t in irregular_times(4)]
    drops.append(drop(T0 + timedelta(days=9), duration=5000, rate=0.02))
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("rate_limit", None)
    assert any("95.0 publishes/s" in line for line in evidence)


@pytest.mark.parametrize(
    ("category", "kind", "fields"),
    [
        ("suspend", "suspend", {}),
        ("wifi", "disconnected", {}),
        ("link", "down", {}),
        ("network_manager", "state_change", {"old_state": "activated", "new_state": "failed"}),
        ("dhcp", "lease_lost", {}),
    ],
)
def test_system_events_in_the_causal_window(category: str, kind: str, fields: dict[str, str]) -> None:
    drops = []
    for i, t in enumerate(irregular_times(5)):
        host = [event(t - timedelta(seconds=40), category, kind, f"{category} {kind} #{i}", **fields),
                event(t + timedelta(seconds=20), "dhcp", "ack", "renewed after the drop")]
        drops.append(drop(t, duration=900 + 1000 * i, host=host))
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("system_event", category)
    assert any(f"{category} {kind} #" in line for line in evidence)  # the evidence quotes the journal line


def test_suspend_without_a_readable_journal() -> None:
    drops = [drop(t, duration=30_000, suspended=4 * 3600, host=[]) for t in irregular_times(3)]
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("system_event", "suspend")
    assert any("suspended for 4h00m" in line for line in evidence)


@pytest.mark.parametrize("category", ["cron", "time"])
def test_weak_events_that_accompany_most_drops(category: str) -> None:
    kind = "job" if category == "cron" else "time_changed"
    drops = [drop(t, duration=800 + 900 * i, host=[event(t - timedelta(seconds=20), category, kind)])
             for i, t in enumerate(irregular_times(6))]
    assert verdict(drops)[:2] == ("system_event", category)


def test_a_periodic_cron_job_near_a_few_drops_is_coincidence() -> None:
    times = irregular_times(10)
    drops = []
    for i, t in enumerate(times):
        host = [event(t - timedelta(seconds=15), "cron", "job", "(root) CMD (run-parts /etc/cron.hourly)")] \
            if i in (2, 7) else []
        drops.append(drop(t, duration=400 + 2100 * i, error="AWS_IO_SOCKET_CLOSED", host=host))
    analysis = classify(drops)
    assert (analysis.verdict.cause, analysis.verdict.subcause) == ("network", None)
    assert not [d for d in analysis.drops if d.cause == "system_event"]
    assert any("cron events are near only 2 of 10 drops: coincidence" in line
               for d in analysis.drops for line in d.evidence)


def test_unrelated_events_outside_the_causal_window_are_ignored() -> None:
    drops = []
    for i, t in enumerate(irregular_times(5)):
        host = [event(t - timedelta(minutes=10), "wifi", "disconnected"),  # long before the last good moment
                event(t + timedelta(seconds=30), "link", "down")]  # after the drop: an effect, not a cause
        drops.append(drop(t, duration=700 + 1300 * i, idle=20, host=host))
    assert verdict(drops)[0] == "network"


def test_duplicate_client_id_ping_pong() -> None:
    t = T0
    drops = []
    for i in range(6):
        t += timedelta(seconds=5 + i % 2)
        drops.append(drop(t, duration=2.0 + i % 3, error="AWS_IO_SOCKET_CLOSED"))
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("client_config", "duplicate_client_id")
    assert any("ping-pong takeover" in line for line in evidence)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"error": "AWS_ERROR_HTTP_WEBSOCKET_UPGRADE_FAILURE"}, "credentials"),
        ({"keep_alive": 3600}, "keep_alive"),
        ({"error": "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", "idle": 0.05, "published": 3}, "policy"),
    ],
)
def test_client_configuration(kwargs: dict[str, Any], expected: str) -> None:
    drops = [drop(t, duration=600 + 1700 * i, **kwargs) for i, t in enumerate(irregular_times(4))]
    assert verdict(drops)[:2] == ("client_config", expected)


def test_insufficient_data_says_how_much_longer() -> None:
    drops = [drop(T0 + timedelta(hours=2), duration=7200), drop(T0 + timedelta(hours=6), duration=14_000)]
    analysis = classify(drops, observed_hours=10.0)
    assert analysis.verdict.cause == "insufficient_data"
    assert "1 more drop needed, about 5 more hours at the current rate (0.20 drops/h)" in \
        analysis.verdict.recommendation
    assert analysis.secondary  # the hints are still there
    empty = classify([], observed_hours=3.0)
    assert empty.verdict.cause == "insufficient_data"
    assert "21 more hours" in empty.verdict.recommendation


def test_mixed_history_has_primary_and_secondary_with_shares() -> None:
    drops = []
    times = irregular_times(9)
    for i, t in enumerate(times):
        host = [event(t - timedelta(seconds=30), "suspend", "resume")] if i % 3 else []
        drops.append(drop(t, duration=600 + 1900 * i, host=host, error="AWS_IO_SOCKET_CLOSED"))
    analysis = classify(drops)
    assert (analysis.verdict.cause, analysis.verdict.subcause) == ("system_event", "suspend")
    assert analysis.verdict.share == pytest.approx(6 / 9)
    assert [(f.cause, round(f.share, 2)) for f in analysis.secondary] == [("network", 0.33)]
    data = analysis.to_dict()
    assert set(data) >= {"schema_version", "verdict", "secondary", "drops"}
    assert set(data["verdict"]) >= {"cause", "subcause", "confidence", "evidence", "recommendation"}
    assert set(data["drops"][0]) >= {"timestamp", "error_name", "cause", "subcause", "host_events"}


def test_upstream_export_without_extensions() -> None:
    times = [T0 + timedelta(seconds=86_400 * i) for i in range(1, 4)]
    drops = [ConnectionDropEvent(timestamp=iso_utc(t), error_name="AWS_ERROR_MQTT_UNEXPECTED_HANGUP",
                                 duration_connected_seconds=86_390.0) for t in times]
    assert verdict(drops)[:2] == ("server_timeout", "websocket_lifetime")


def test_deterministic() -> None:
    drops = [drop(t, duration=500 * (i + 1)) for i, t in enumerate(irregular_times(12))]
    assert classify(drops).to_dict() == classify(list(reversed(drops))).to_dict()


def test_settings_change_the_known_periods() -> None:
    times = [T0 + timedelta(seconds=905 * i) for i in range(1, 6)]
    drops = [drop(t, duration=900, error="AWS_ERROR_MQTT_UNEXPECTED_HANGUP") for t in times]
    assert verdict(drops, settings=Settings(credential_lifetime_secs=900))[:2] == \
        ("server_timeout", "credential_lifetime")


def test_report_on_a_state_directory_and_analyze_on_an_export_agree(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from nwp500d.cli import main
    from nwp500d.store import EventStore

    store = EventStore(tmp_path / "events")
    drops = []
    for i, t in enumerate(irregular_times(6)):
        host = [event(t - timedelta(seconds=40), "wifi", "disconnected", f"wlan0: CTRL-EVENT-DISCONNECTED #{i}")]
        drops.append(drop(t, duration=900 + 1000 * i, host=host))
    for d in drops:
        store.append({"kind": "drop", **d.to_dict()})
    store.close()
    assert main(["report", "--state-dir", str(tmp_path), "--format", "json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert (reported["verdict"]["cause"], reported["verdict"]["subcause"]) == ("system_event", "wifi")
    assert any("CTRL-EVENT-DISCONNECTED" in line for line in reported["verdict"]["evidence"])
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"metrics": {}, "recent_drops": [d.to_dict() for d in drops]}))
    assert main(["analyze", str(export), "--format", "json"]) == 0
    analyzed = json.loads(capsys.readouterr().out)
    assert analyzed["verdict"] == reported["verdict"]
    assert main(["analyze", str(export)]) == 0
    text = capsys.readouterr().out
    assert "system_event" in text
    assert "Wi-Fi" in text or "wifi" in text


def test_rtnetlink_link_loss_without_a_journal() -> None:
    drops = []
    for i, t in enumerate(irregular_times(4)):
        link = [{"time": iso_utc(t - timedelta(seconds=20)), "kind": "carrier_down", "interface": "eth0",
                 "detail": "eth0 carrier down"}]
        drops.append(drop(t, duration=800 + 900 * i, network={"link_events": link}))
    cause, sub, evidence = verdict(drops)
    assert (cause, sub) == ("system_event", "link")
    assert any("rtnetlink: carrier_down" in line for line in evidence)


def test_a_measured_nat_bracket_names_the_nat() -> None:
    drops = [drop(t, duration=900 + 700 * i, idle=50) for i, t in enumerate(irregular_times(4))]
    assert verdict(drops)[:2] == ("network", None)  # short idle, keep-alive 60: nothing points at a NAT
    cause, sub, evidence = verdict(drops, settings=Settings(nat_bracket=(40, 50)))
    assert (cause, sub) == ("network", "nat_idle_timeout")
    assert any("measured the NAT forgetting idle connections after 40-50 s" in line for line in evidence)


def test_nat_forgot_the_idle_connection_while_the_path_works() -> None:
    """What the real NAT lab records: only the ping for a keep-alive, its retransmissions, then a quick reconnect."""
    counters = {"netstat_last_minute": {"RetransSegs": 4, "TCPTimeouts": 4}}
    reachable = {**counters, "probe": {"ok": True, "tcp_seconds": 0.001, "errors": {}}}
    lossy = {**counters, "probe": {"ok": True, "tcp_seconds": 1.2, "errors": {}}}  # the SYN was retransmitted
    nat = [drop(t, duration=35.0, idle=35.0, keep_alive=30, network=reachable) for t in irregular_times(3)]
    assert verdict(nat)[:2] == ("network", "nat_idle_timeout")
    loss = [drop(t, duration=35.0, idle=35.0, keep_alive=30, network=lossy) for t in irregular_times(3)]
    assert verdict(loss)[:2] == ("network", "packet_loss")
