"""`nwp500d demo` and `nwp500d run` end to end, as a user runs them: real processes, real simulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_PASSWORD, simulator

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(180)


def test_demo_runs_records_drops_and_leaves_exports(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "nwp500d", "demo", "--duration", "25", "--state-dir", str(state), "--seed", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "UP    connected" in out
    assert "DOWN  AWS_IO_SOCKET_CLOSED" in out
    assert "UP    rebuilt" in out
    latest = json.loads((state / "exports" / "diagnostics-latest.json").read_text())
    assert latest["metrics"]["total_connection_drops"] >= 2
    assert latest["metrics"]["connection_recovered"] == latest["metrics"]["total_connection_drops"]
    assert DEMO_PASSWORD not in out + result.stderr
    report = subprocess.run([sys.executable, "-m", "nwp500d", "report", "--state-dir", str(state)],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "AWS_IO_SOCKET_CLOSED" in report.stdout


async def run_cli(args: list[str], env: dict[str, str], *, stop_after: asyncio.Event | None = None,
                  timeout: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nwp500d", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            async for raw in process.stdout:
                line = raw.decode()
                lines.append(line)
                if stop_after is not None and "MQTT session up" in line:
                    process.send_signal(signal.SIGTERM)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, "".join(lines)


async def test_run_connects_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    async with simulator() as sim:
        config = tmp_path / "nwp500d.yaml"
        config.write_text(sim.config_yaml(tmp_path / "state") + "logging:\n  level: info\n")
        env = {**os.environ, "NAVIEN_PASSWORD": DEMO_PASSWORD}
        code, output = await run_cli(["run", "--config", str(config)], env, stop_after=asyncio.Event())
        assert code == 0, output
        assert "MQTT session up" in output
        assert "clean DISCONNECT" in output
        assert DEMO_PASSWORD not in output
        assert (tmp_path / "state" / "exports" / "diagnostics-latest.json").exists()


async def test_run_with_a_rejected_password_exits_77_with_one_clear_line(tmp_path: Path) -> None:
    async with simulator() as sim:
        config = tmp_path / "nwp500d.yaml"
        config.write_text(sim.config_yaml(tmp_path / "state"))
        env = {**os.environ, "NAVIEN_PASSWORD": "wrong-password-123"}
        code, output = await run_cli(["run", "--config", str(config)], env)
        assert code == 77, output
        errors = [line for line in output.splitlines() if "ERROR" in line]
        assert len(errors) == 1
        assert "wrong-password-123" not in output
        assert "demo@nwp500d.invalid" not in output
