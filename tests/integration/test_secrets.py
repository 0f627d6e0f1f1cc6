"""No secret leaves the daemon: every output of `nwp500d demo`, `nwp500d run` and `nwp500d report`, scanned.

The daemon and the demo run as a user runs them (real subprocesses against the NaviLink simulator). Their outputs are
then searched for the password, the e-mail, every token and key the fake NaviLink issued (``issued_secrets`` when the
simulator runs in this process; the token cache's own values for the demo, whose simulator runs in the child), AWS
key ids (``ASIA…``/``AKIA…``) and JWT-shaped strings (``eyJ…``), and the simulated device's MAC address (redacted by
default). Outputs: stdout, stderr, every file under the state directory (only the token cache may hold tokens, and it
must be 0600; every other file 0640, every directory 0750), the STATUS= lines sent to the notify socket, the
process's command line and thread names while it runs, and `nwp500d report` / `nwp500d analyze` in every format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

from nwp500d.daemon import TOKEN_CACHE
from nwp500d.sim.broker import find_mosquitto
from nwp500d.sim.demo import DEMO_EMAIL, DEMO_MAC, DEMO_PASSWORD, Simulator, simulator
from tests.notify import NotifySocket

try:
    find_mosquitto()
except Exception:  # noqa: BLE001 - without mosquitto there is no simulator to run against
    pytest.skip("mosquitto is not installed (make test installs it as root)", allow_module_level=True)

pytestmark = pytest.mark.timeout(180)

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")
AWS_KEY_ID = re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
MAC_FORMS = (DEMO_MAC, ":".join(DEMO_MAC[i:i + 2] for i in range(0, 12, 2)),
             "-".join(DEMO_MAC[i:i + 2] for i in range(0, 12, 2)))
TOKEN_FIELDS = ("id_token", "access_token", "refresh_token", "access_key_id", "secret_key", "session_token")
FILE_MODE, TOKEN_CACHE_MODE, DIR_MODE = 0o640, 0o600, 0o750
STOP_SECS = 30.0


# ------------------------------------------------------------------------------------------------ scanning


def identity_secrets(password: str = DEMO_PASSWORD) -> dict[str, str]:
    return {"the password": password, "the e-mail": DEMO_EMAIL}


def leaks(where: str, data: bytes, secrets: Mapping[str, str], *, tokens_allowed: bool = False) -> list[str]:
    """What ``data`` gives away, one line each (the value itself is not repeated: the report names what, not it)."""
    found = []
    lowered = data.lower()
    for label, secret in secrets.items():
        if tokens_allowed and label.startswith("token"):
            continue
        forms = {secret, quote(secret, safe=""), secret.replace("/", "\\/")}
        if any(form.encode() in data or (label == "the e-mail" and form.lower().encode() in lowered) for form in forms):
            found.append(f"{where}: contains {label}")
    if not tokens_allowed:
        for name, pattern in (("a JWT-shaped string", JWT), ("an AWS access key id", AWS_KEY_ID)):
            match = pattern.search(data)
            if match is not None:
                found.append(f"{where}: contains {name} ({match.group()[:8].decode()}…)")
    for form in MAC_FORMS:
        if form.encode() in lowered:
            found.append(f"{where}: contains the device MAC address ({form})")
    return found


def state_files(state: Path) -> Iterable[Path]:
    for directory, _dirs, files in os.walk(state):
        for name in files:
            yield Path(directory) / name


def state_problems(state: Path, secrets: Mapping[str, str]) -> list[str]:
    """Leaks in, and modes of, everything under the state directory."""
    problems = []
    directories = [state, *(Path(d) / n for d, dirs, _f in os.walk(state) for n in dirs)]
    for directory in directories:
        mode = directory.lstat().st_mode & 0o7777
        if mode != DIR_MODE:
            problems.append(f"{directory}: directory mode {mode:04o}, expected {DIR_MODE:04o}")
    for path in state_files(state):
        is_cache = path.name == TOKEN_CACHE and path.parent == state
        expected = TOKEN_CACHE_MODE if is_cache else FILE_MODE
        mode = path.lstat().st_mode & 0o7777
        if mode != expected:
            problems.append(f"{path}: mode {mode:04o}, expected {expected:04o}")
        problems += leaks(str(path), path.read_bytes(), secrets, tokens_allowed=is_cache)
    return problems


def token_cache_secrets(state: Path) -> dict[str, str]:
    """The tokens the daemon cached: what a child process's simulator issued last, known without its cooperation."""
    document = json.loads((state / TOKEN_CACHE).read_text())
    tokens = document["tokens"]
    return {f"token {name}": tokens[name] for name in TOKEN_FIELDS}


def issued_secrets(sim: Simulator) -> dict[str, str]:
    issued = sim.navilink.issued_secrets
    assert len(issued) >= 6, "the simulator issued no tokens: nothing to look for"
    return {f"token #{index} issued by the fake NaviLink ({_kind(secret)})": secret
            for index, secret in enumerate(issued)}


def _kind(secret: str) -> str:
    if secret.startswith("eyJ"):
        return "a JWT"
    if secret.startswith(("ASIA", "AKIA")):
        return "an AWS access key id"
    return "an AWS secret key or session token"


def process_identity(pid: int) -> bytes:
    """The command line, the process title and every thread's name, as `ps` and `top` show them to any user."""
    proc = Path(f"/proc/{pid}")
    parts = [(proc / "cmdline").read_bytes(), (proc / "comm").read_bytes()]
    with contextlib.suppress(FileNotFoundError):
        for task in (proc / "task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                parts.append((task / "comm").read_bytes())
    return b"\n".join(parts)


def reports(state: Path) -> dict[str, bytes]:
    """`nwp500d report` in every format, and `nwp500d analyze` on the newest snapshot in every format."""
    outputs = {}
    snapshot = state / "exports" / "diagnostics-latest.json"
    for fmt in ("text", "json", "html"):
        for command in (["report", "--state-dir", str(state)], ["analyze", str(snapshot)]):
            result = subprocess.run([sys.executable, "-m", "nwp500d", *command, "--format", fmt],
                                    capture_output=True, timeout=60, check=False)
            assert result.returncode == 0, result.stderr.decode(errors="replace")
            outputs[f"`nwp500d {command[0]} --format {fmt}`"] = result.stdout + result.stderr
    return outputs


def assert_clean(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ the demo


def test_demo_outputs_hold_no_secrets(tmp_path: Path, notify_socket: NotifySocket) -> None:
    state = tmp_path / "demo"
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.path}
    # umask 0: the modes must be the daemon's own choice, not inherited from a careful shell.
    process = subprocess.Popen(
        [sys.executable, "-m", "nwp500d", "demo", "--duration", "20", "--state-dir", str(state), "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, umask=0o000,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state / TOKEN_CACHE).exists():  # signed in: the password has been used by now
            assert process.poll() is None, "the demo ended before signing in"
            assert time.monotonic() < deadline, "the demo did not sign in within 30 s"
            time.sleep(0.1)
        identity = process_identity(process.pid)
        out, err = process.communicate(timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"UP    connected" in out and b"DOWN" in out, out.decode(errors="replace")

    secrets = {**identity_secrets(), **token_cache_secrets(state)}
    problems = leaks("demo stdout", out, secrets) + leaks("demo stderr", err, secrets)
    problems += leaks(f"/proc/{process.pid} (cmdline, comm, thread names)", identity, secrets)
    problems += leaks("STATUS= lines", "\n".join(notify_socket.lines()).encode(), secrets)
    problems += state_problems(state, secrets)
    for where, output in reports(state).items():
        problems += leaks(where, output, secrets)
    assert_clean(problems)
    assert any(line.startswith("STATUS=") for line in notify_socket.lines()), "the notify socket saw no STATUS"


# ------------------------------------------------------------------------------------------------ the daemon


class Running:
    """A `nwp500d run` child with its stdout and stderr collected as they arrive."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out = bytearray()
        self.err = bytearray()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [asyncio.create_task(self._pump(process.stdout, self.out)),
                         asyncio.create_task(self._pump(process.stderr, self.err))]

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, sink: bytearray) -> None:
        while chunk := await stream.read(65536):
            sink += chunk

    async def wait_for(self, text: str, timeout: float = 30.0) -> None:
        needle = text.encode()
        deadline = time.monotonic() + timeout
        while needle not in self.err and needle not in self.out:
            assert self.process.returncode is None, f"exited {self.process.returncode} before {text!r}"
            assert time.monotonic() < deadline, \
                f"{text!r} not logged within {timeout:g} s; stderr ends: {bytes(self.err[-600:])!r}"
            await asyncio.sleep(0.05)

    def cancel_readers(self) -> None:
        for reader in self._readers:
            reader.cancel()

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_SECS):
            code = await self.process.wait()
            await asyncio.gather(*self._readers)
        return code


@contextlib.asynccontextmanager
async def daemon(sim: Simulator, tmp_path: Path, notify: NotifySocket, *, password: str = DEMO_PASSWORD,
                 extra_config: str = "") -> AsyncIterator[Running]:
    config = tmp_path / "nwp500d.yaml"
    config.write_text(sim.config_yaml(tmp_path / "state") + extra_config)
    env = {**os.environ, "NAVIEN_PASSWORD": password, "NOTIFY_SOCKET": notify.path}
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nwp500d", "run", "--config", str(config), env=env, umask=0o022,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    running = Running(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await process.wait()
        running.cancel_readers()


VERBOSE = "logging:\n  level: debug\n  verbose_diagnostics: true\n"


async def test_run_outputs_hold_no_secrets(tmp_path: Path, notify_socket: NotifySocket) -> None:
    state = tmp_path / "state"
    async with simulator() as sim, daemon(sim, tmp_path, notify_socket, extra_config=VERBOSE) as running:
        await running.wait_for("MQTT session up")
        await running.wait_for("polling 1 device")  # the device (its MAC in every topic) is in use
        identity = process_identity(running.process.pid)
        await sim.proxy.reset_all()  # a drop, so that drop records, STATUS with an error and a rebuild exist
        await running.wait_for("MQTT session back")
        deadline = time.monotonic() + 15
        while not any("1 drop/24h" in line for line in notify_socket.lines()):
            assert time.monotonic() < deadline, notify_socket.lines()[-5:]
            await asyncio.sleep(0.05)
        code = await running.stop()
        secrets = {**identity_secrets(), **issued_secrets(sim)}
    assert code == 0, bytes(running.err[-2000:]).decode(errors="replace")
    assert b"clean DISCONNECT" in running.err

    cached = (state / TOKEN_CACHE).read_bytes()
    assert any(secret.encode() in cached for secret in secrets.values()), "the scan would not see a cached token"
    problems = leaks("stdout", bytes(running.out), secrets) + leaks("stderr", bytes(running.err), secrets)
    problems += leaks(f"/proc/{running.process.pid} (cmdline, comm, thread names)", identity, secrets)
    problems += leaks("STATUS= lines", "\n".join(notify_socket.lines()).encode(), secrets)
    problems += state_problems(state, secrets)
    for where, output in reports(state).items():
        problems += leaks(where, output, secrets)
    assert_clean(problems)


async def test_a_rejected_password_leaks_neither_it_nor_the_email(tmp_path: Path,
                                                                  notify_socket: NotifySocket) -> None:
    wrong = "wrong-Password-4711"
    async with simulator() as sim, daemon(sim, tmp_path, notify_socket, password=wrong,
                                          extra_config=VERBOSE) as running:
        async with asyncio.timeout(STOP_SECS):
            code = await running.process.wait()
        await running.stop()
    assert code == 77, bytes(running.err).decode(errors="replace")
    secrets = identity_secrets(wrong)
    problems = leaks("stdout", bytes(running.out), secrets) + leaks("stderr", bytes(running.err), secrets)
    problems += leaks("STATUS= lines", "\n".join(notify_socket.lines()).encode(), secrets)
    problems += state_problems(tmp_path / "state", secrets)
    assert_clean(problems)
    assert any("rejected" in line for line in notify_socket.lines()), notify_socket.lines()


def test_crt_debug_logging_is_refused_because_it_would_leak_the_signed_url(tmp_path: Path) -> None:
    """awscrt's debug/trace log goes straight to fd 2 with the presigned WebSocket URL (STS session token) in it,
    past the redacting filter; the configuration therefore refuses those levels (exit 78), rather than leak."""
    from nwp500d.cli import main

    config = tmp_path / "c.yaml"
    for level in ("debug", "trace"):
        config.write_text(f"logging:\n  crt_log_level: {level}\n")
        assert main(["check-config", "--config", str(config)]) == 78
