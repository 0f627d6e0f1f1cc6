"""The simulator on a machine without mosquitto: amqtt carries the demo over the same WebSocket+TLS+SigV4 path.

Unlike the other simulator tests, these do not need mosquitto (the first one forces amqtt even where it is
installed), so they also run, and prove the fallback, on exactly the machines it exists for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nwp500d.sim.amqtt_broker import AmqttBroker, amqtt_installed
from nwp500d.sim.broker import MosquittoBroker
from nwp500d.sim.local_broker import CHOICE_VARIABLE, local_broker

pytestmark = pytest.mark.timeout(180)


@pytest.mark.skipif(not amqtt_installed(), reason="amqtt is not installed (make test installs the [sim] extra)")
def test_demo_runs_on_amqtt_where_mosquitto_is_missing(tmp_path: Path) -> None:
    """The fallback broker carries the same production path: WebSocket+TLS with a SigV4-signed upgrade."""
    state = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "nwp500d", "demo", "--duration", "20", "--state-dir", str(state), "--seed", "3"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, CHOICE_VARIABLE: "amqtt"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "local NaviLink simulator (amqtt over WebSocket+TLS with SigV4" in out
    assert "UP    connected" in out
    assert "UP    rebuilt" in out
    latest = json.loads((state / "exports" / "diagnostics-latest.json").read_text())
    assert latest["metrics"]["total_connection_drops"] >= 1
    assert latest["metrics"]["connection_recovered"] == latest["metrics"]["total_connection_drops"]
    assert "device status replies: 0" not in out  # the simulated heater answered through amqtt too


def test_a_bad_broker_choice_is_one_clear_line_and_exit_69(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nwp500d", "demo", "--duration", "10", "--state-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, CHOICE_VARIABLE: "hivemq"},
    )
    assert result.returncode == 69
    assert result.stderr.strip().splitlines() == [
        "nwp500d: NWP500D_SIM_BROKER='hivemq': expected one of auto, mosquitto, amqtt"]
    assert not (tmp_path / "demo").exists()


def test_auto_prefers_mosquitto_and_falls_back_to_amqtt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nwp500d.sim.local_broker._mosquitto_installed", lambda: True)
    assert isinstance(local_broker("auto"), MosquittoBroker)
    monkeypatch.setattr("nwp500d.sim.local_broker._mosquitto_installed", lambda: False)
    assert isinstance(local_broker("auto"), AmqttBroker)
    assert isinstance(local_broker("mosquitto"), MosquittoBroker)
