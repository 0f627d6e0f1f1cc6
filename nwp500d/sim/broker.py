"""A real mosquitto on loopback, so MQTT tests exercise a real broker over TCP, TLS and WebSocket+TLS.

The production path is MQTT over WebSocket over TLS with a SigV4-signed upgrade; mosquitto ignores the query string,
so the daemon's own connection code can point at it unchanged. Everything the broker needs (config, certificates,
log) lives in a private temporary directory that :meth:`MosquittoBroker.stop` removes.

Readiness is event-driven: mosquitto writes its log unbuffered to stderr, a reader thread watches for the line it
prints once every listener is bound ("mosquitto version X running"), and process exit is reported by the same
thread; one MQTT CONNECT over TCP then proves the broker's loop is serving (see :func:`_probe_mqtt` for why).
A thread rather than the event loop drains that pipe because ``log_type all`` is chatty: if the owner's loop were
blocked for a while (a synchronous ``.result()`` on a CRT future, say) a loop-driven reader would let the pipe fill
and freeze the broker mid-test.

The broker runs as the invoking user (as root, ``user root`` keeps mosquitto from switching users), so that its
private directory and 0600 key stay readable and the parent-death signal set through ``setpriv`` is not cleared by
a setuid. That signal makes a SIGKILLed test run take its broker with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nwp500d.sim.certs import CertPaths, generate_certs_async
from nwp500d.sim.lifecycle import SimServer, wait_bounded

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5
_RESTART_BIND_WINDOW = 5.0
_TAIL_LINES = 40
_RUNNING = re.compile(r"mosquitto version \S+ running")
_OPENING = re.compile(r"Opening (?:ipv4|websockets) listen socket on port (\d+)\.")
_BIND_FAILURES = ("Address already in use", "Unable to create websockets listener")
_PROBE_ID = b"nwp500d-sim-ready"
# CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, client id. Then the accepting CONNACK, DISCONNECT.
_PROBE_BODY = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(_PROBE_ID).to_bytes(2, "big") + _PROBE_ID
_PROBE_CONNECT = bytes([0x10, len(_PROBE_BODY)]) + _PROBE_BODY
_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
_DISCONNECT = b"\xe0\x00"


class BrokerUnavailable(RuntimeError):
    """mosquitto is not installed (Debian package ``mosquitto``); tests skip on this."""


class BrokerStartError(RuntimeError):
    """mosquitto did not come up; the message ends with the tail of its log."""


class _PortsTaken(Exception):
    """A listener could not bind: someone else got the port between our probe and mosquitto's bind."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise BrokerUnavailable("mosquitto is not installed (Debian package: mosquitto)")
    return found


def pick_free_ports(count: int, host: str = HOST) -> list[int]:
    """Ports the kernel just handed out as free; all sockets stay bound until every port is known, so no duplicates.

    Another process can still take one before mosquitto binds it; the caller retries on that.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _config_text(log_path: Path, certs: CertPaths, ports: tuple[int, int, int], extra: Sequence[str]) -> str:
    tls = [f"cafile {certs.ca_file}", f"certfile {certs.cert_file}", f"keyfile {certs.key_file}"]
    lines = [
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        *(["user root"] if os.geteuid() == 0 else []),
        f"log_dest file {log_path}",
        "log_dest stderr",
        "log_type all",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
        *extra,
        f"listener {ports[0]} {HOST}",
        f"listener {ports[1]} {HOST}",
        *tls,
        f"listener {ports[2]} {HOST}",
        "protocol websockets",
        # Without it the websockets listener binds every address family and interface, not just loopback.
        "socket_domain ipv4",
        *tls,
    ]
    return "\n".join(lines) + "\n"


class _Process:
    """One mosquitto process: its stderr reader thread, a ``ready`` and an ``exited`` future, race-free signalling."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.opened_ports: set[int] = set()
        self._popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
            start_new_session=True,
        )
        self.pid = self._popen.pid
        # Signals go through a pidfd: once the reader thread has reaped the child, its pid may name someone else.
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self.pid)
        self._thread = threading.Thread(target=self._read, name=f"mosquitto-{self.pid}-stderr", daemon=True)
        self._thread.start()

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone; nobody is waiting any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _read(self) -> None:
        stream = self._popen.stderr
        assert stream is not None
        seen_running = False
        try:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                self.tail.append(line)
                if match := _OPENING.search(line):
                    self.opened_ports.add(int(match.group(1)))
                if not seen_running and _RUNNING.search(line):
                    seen_running = True
                    self._post(self._resolve, self.ready, None)
        finally:
            stream.close()
            code = self._popen.wait()
            self._post(self._on_exit, code)

    @staticmethod
    def _resolve(future: asyncio.Future[None], value: None) -> None:
        if not future.done():
            future.set_result(value)

    def _on_exit(self, code: int) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not self.exited.done():
            self.exited.set_result(code)

    def send(self, sig: signal.Signals) -> None:
        if self.exited.done():
            return
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                self._popen.send_signal(sig)

    async def wait_exit(self, bound: float) -> bool:
        return not await wait_bounded((self.exited,), bound)

    async def end(self, sig: signal.Signals, bound: float) -> None:
        """Send ``sig``; escalate to SIGKILL if it is still there after ``bound`` seconds."""
        self.send(sig)
        if await self.wait_exit(bound) or sig == signal.SIGKILL:
            return
        self.send(signal.SIGKILL)
        if not await self.wait_exit(bound):
            raise RuntimeError(f"mosquitto pid {self.pid} survived SIGKILL for {bound} s")

    def log_tail(self) -> str:
        return "\n".join(self.tail) or "(mosquitto wrote nothing)"


async def _probe_mqtt(port: int) -> None:
    """One MQTT CONNECT/CONNACK/DISCONNECT over TCP: proof that the main loop serves, not just that sockets exist.

    mosquitto logs "running" just before entering its main loop and (re)arms its stop flag there, so a SIGTERM sent
    in that gap is lost and the broker lives on (seen on the first start of a process). Serving a client can only
    happen inside the loop. The probe shows up in the log as client ``nwp500d-sim-ready``.
    """
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(_PROBE_CONNECT)
        await writer.drain()
        answer = await reader.readexactly(4)
        if answer != _CONNACK_ACCEPTED:
            raise BrokerStartError(f"the readiness probe got {answer!r} instead of an accepting CONNACK")
        writer.write(_DISCONNECT)
        await writer.drain()
    except asyncio.IncompleteReadError as exc:
        raise BrokerStartError("mosquitto closed the readiness probe without a CONNACK") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class MosquittoBroker(SimServer):
    """mosquitto on 127.0.0.1 with MQTT/TCP, MQTT/TLS and MQTT/WebSocket+TLS listeners on ephemeral ports.

    ``start()`` → ``kill()``/``restart()`` as often as a test likes (same ports, same CA) → ``stop()``, which removes
    everything. ``extra_config`` lines go into the global section (e.g. ``max_keepalive 60``). ``tmp_root`` is where
    the private directory is made (default: the system temp dir).
    """

    name = "mosquitto"
    host = HOST
    _noun = "broker"

    def __init__(
        self,
        *,
        executable: str | None = None,
        extra_config: Sequence[str] = (),
        tmp_root: Path | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self._executable = executable
        self._extra = tuple(extra_config)
        self._tmp_root = tmp_root
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir: Path | None = None
        self._certs: CertPaths | None = None
        self._ports: tuple[int, int, int] | None = None
        self._proc: _Process | None = None

    # -- properties ----------------------------------------------------------------------------------------------

    @property
    def tcp_port(self) -> int:
        return self._running(self._ports)[0]

    @property
    def tls_port(self) -> int:
        return self._running(self._ports)[1]

    @property
    def wss_port(self) -> int:
        return self._running(self._ports)[2]

    @property
    def certs(self) -> CertPaths:
        return self._running(self._certs)

    @property
    def ca_file(self) -> Path:
        return self.certs.ca_file

    @property
    def directory(self) -> Path:
        return self._running(self._dir)

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The running process, or None while it is killed or stopped."""
        if self._proc is None or self._proc.exited.done():
            return None
        return self._proc.pid

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._refuse_if_running(self._dir, hint="; use restart()")
        executable = self._executable or find_mosquitto()
        if not os.access(executable, os.X_OK):
            raise BrokerUnavailable(f"{executable} is not an executable file")
        self._dir = Path(tempfile.mkdtemp(prefix="nwp500d-mosquitto-", dir=self._tmp_root))
        try:
            if any(ch.isspace() for ch in str(self._dir)):
                raise BrokerStartError(f"mosquitto.conf cannot name paths with whitespace: {self._dir}")
            self._certs = await generate_certs_async(self._dir / "tls")
            for _ in range(_PORT_ATTEMPTS):
                free = pick_free_ports(3)
                self._ports = (free[0], free[1], free[2])
                with contextlib.suppress(_PortsTaken):
                    await self._launch(executable)
                    return
            raise BrokerStartError(f"no free set of 3 loopback ports after {_PORT_ATTEMPTS} attempts")
        except BaseException:
            await self._teardown()
            raise

    async def restart(self) -> None:
        """Stop the process if it runs (SIGTERM), then start it again on the same ports with the same certificates.

        A port can stay busy for a moment after a kill; binding is retried for a few seconds before giving up.
        """
        if self._dir is None:
            raise RuntimeError("restart() needs a started broker")
        if self._proc is not None:
            await self._proc.end(signal.SIGTERM, self._stop_timeout)
            self._proc = None
        executable = self._executable or find_mosquitto()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RESTART_BIND_WINDOW
        pause = 0.05
        while True:
            try:
                await self._launch(executable)
                return
            except _PortsTaken as exc:
                if loop.time() + pause > deadline:
                    raise BrokerStartError(f"ports {self._ports} still busy after {_RESTART_BIND_WINDOW} s") from exc
            # No event tells us when the kernel lets a port go; a short, bounded back-off is the only option.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def kill(self) -> None:
        """SIGKILL, as a crash would: clients see their sockets close without a DISCONNECT or TLS close_notify."""
        if self._proc is not None:
            await self._proc.end(signal.SIGKILL, self._stop_timeout)
            self._proc = None

    async def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), then remove the private directory. Safe to call more than once."""
        await self._teardown()

    # -- internals -----------------------------------------------------------------------------------------------

    async def _launch(self, executable: str) -> None:
        directory, certs, ports = self.directory, self.certs, self._running(self._ports)
        config = directory / "mosquitto.conf"
        config.write_text(_config_text(self.log_path, certs, ports, self._extra), encoding="utf-8")
        argv = [executable, "-c", str(config)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        proc = _Process(argv, directory)
        self._proc = proc
        try:
            await self._wait_ready(proc)
        except BaseException:
            await proc.end(signal.SIGKILL, self._stop_timeout)
            self._proc = None
            raise

    async def _wait_ready(self, proc: _Process) -> None:
        try:
            async with asyncio.timeout(self._start_timeout):
                either: list[asyncio.Future[Any]] = [proc.ready, proc.exited]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if proc.ready.done():
                    self._check_opened(proc)
                    await _probe_mqtt(self.tcp_port)
        except TimeoutError:
            raise BrokerStartError(
                f"mosquitto was not ready within {self._start_timeout} s; log tail:\n{proc.log_tail()}"
            ) from None
        except OSError as exc:
            raise BrokerStartError(f"mosquitto did not answer MQTT: {exc!r}; log tail:\n{proc.log_tail()}") from exc
        if not proc.ready.done():
            # It exited first; the reader thread posts the exit only after the last line, so the tail is complete.
            if any(marker in line for line in proc.tail for marker in _BIND_FAILURES):
                raise _PortsTaken()
            raise BrokerStartError(
                f"mosquitto exited with status {proc.exited.result()} before it was ready; log tail:\n"
                f"{proc.log_tail()}"
            )

    def _check_opened(self, proc: _Process) -> None:
        missing = set(self._running(self._ports)) - proc.opened_ports
        if missing:
            raise BrokerStartError(f"mosquitto did not open ports {sorted(missing)}; log tail:\n{proc.log_tail()}")

    async def _teardown(self) -> None:
        try:
            if self._proc is not None:
                await self._proc.end(signal.SIGTERM, self._stop_timeout)
        finally:
            self._proc = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._certs = None
            self._ports = None
