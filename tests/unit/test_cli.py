"""The command line: subcommands, help, honest placeholders, and `report` over a real state directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nwp500d.cli import main
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.state import EVENTS_DIR, stable_client_id
from nwp500d.store import EventStore
from tests.fakes import CrtLikeError, FakeClock


def make_state(state_dir: Path) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        collector = MqttDiagnosticsCollector(clock=clock)
        store = EventStore(state_dir / EVENTS_DIR, clock=clock)
        collector.on_record(store.append)
        await collector.record_connection_success()
        clock.advance(4000)
        await collector.record_connection_drop(error=CrtLikeError("AWS_ERROR_MQTT_UNEXPECTED_HANGUP", 5134))
        clock.advance(3)
        await collector.record_connection_success(event_type="rebuilt", attempt_number=1)
        store.close()

    asyncio.run(scenario())


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run([sys.executable, "-m", "nwp500d", "--help"], capture_output=True, text=True,
                            check=True, timeout=60)
    commands = ("run", "check-config", "report", "analyze", "demo", "sim", "probe")
    for command in commands:
        assert command in result.stdout
    for command in commands:
        sub = subprocess.run([sys.executable, "-m", "nwp500d", command, "--help"], capture_output=True,
                             text=True, check=False, timeout=60)
        assert sub.returncode == 0, command
        assert "usage: nwp500d" in sub.stdout


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 64
    assert main([]) == 64
    assert main(["demo", "--duration", "3"]) == 64
    assert "--duration 3: expected at least 10 seconds" in capsys.readouterr().err


def test_report_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_state(tmp_path)
    assert main(["report", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 records in 1 files, 0 skipped" in out
    assert "last state: connected since" in out
    assert "AWS_ERROR_MQTT_UNEXPECTED_HANGUP" in out
    assert "1h06m" in out  # the 4000 s session


def test_report_json_is_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_state(tmp_path)
    assert main(["report", "--state-dir", str(tmp_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metrics"]["total_connection_drops"] == 1
    assert data["metrics"]["connection_recovered"] == 1
    assert data["drops"][0]["duration_connected_seconds"] == 4000.0
    assert data["verdict"]["cause"] == "insufficient_data"  # one drop is not a pattern
    assert set(data["verdict"]) >= {"cause", "subcause", "confidence", "evidence", "recommendation"}


def test_report_html_and_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_state(tmp_path)
    assert main(["report", "--state-dir", str(tmp_path), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert main(["report", "--state-dir", str(tmp_path), "--since", "2030-01-01T00:00:00Z", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["drops"] == []
    assert main(["report", "--state-dir", str(tmp_path), "--since", "2026-01-01", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["drops"]) == 1
    assert main(["report", "--state-dir", str(tmp_path), "--since", "yesterday"]) == 64
    assert "--since 'yesterday': expected a span like 24h" in capsys.readouterr().err


def test_report_on_a_missing_state_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--state-dir", str(tmp_path / "nowhere")]) == 66
    err = capsys.readouterr().err
    assert "nowhere: no event log here" in err


def test_client_id_is_stable(tmp_path: Path) -> None:
    first = stable_client_id(tmp_path)
    assert first.startswith("nwp500d-")
    assert stable_client_id(tmp_path) == first
    assert (tmp_path / "client-id").stat().st_mode & 0o777 == 0o640
