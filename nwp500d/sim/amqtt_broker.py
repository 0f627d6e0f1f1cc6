"""amqtt as the simulator's broker on a machine without mosquitto (``pip install 'nwp500d[sim]'``).

Same loopback contract as :class:`nwp500d.sim.broker.MosquittoBroker` for what the simulator needs: a plain TCP
listener (the simulated device) and a WebSocket+TLS listener (the daemon's production path, SigV4-signed upgrade
included; like mosquitto, amqtt accepts the signature without checking it), generated certificates, ephemeral ports,
a private temporary directory. It runs in a child process of its own, as mosquitto does, so a broker fault never
stalls the daemon's event loop. What it lacks (restart on the same ports, mosquitto's connection log that some
tests read) is why mosquitto stays the first choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from nwp500d.sim.broker import HOST, BrokerStartError, BrokerUnavailable, pick_free_ports
from nwp500d.sim.certs import CertPaths, generate_certs_async
from nwp500d.sim.lifecycle import SimServer

_PORT_ATTEMPTS = 5
_READY = "nwp500d-amqtt-ready"
_TAIL_CHARS = 2000

# The child: start the broker from the YAML file, say so on stdout, serve until SIGTERM/SIGINT or until its stdin
# (a pipe from the parent) ends, which is how it learns that the parent died without stopping it (SIGKILL), and
# shut down cleanly. A failed start (a port taken meanwhile) is a traceback on stderr and exit 1; the parent retries.
_CHILD = f"""
import asyncio, os, signal, sys, yaml
from amqtt.broker import Broker

async def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        broker = Broker(yaml.safe_load(handle))
    await broker.start()
    print({_READY!r}, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(0, lambda: os.read(0, 4096) or stop.set())
    await stop.wait()
    await broker.shutdown()

asyncio.run(main())
"""


def amqtt_installed() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def _config(certs: CertPaths, tcp_port: int, wss_port: int) -> dict[str, object]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{HOST}:{tcp_port}"},
            "wss": {"type": "ws", "bind": f"{HOST}:{wss_port}", "ssl": True,
                    "certfile": str(certs.cert_file), "keyfile": str(certs.key_file)},
        },
        # Anonymous, and nothing else: no $SYS publisher, no packet logger (the log would grow with every ping).
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class AmqttBroker(SimServer):
    """amqtt on loopback with a TCP and a WebSocket+TLS listener, in a child process."""

    name = "amqtt"
    host = HOST
    _noun = "broker"

    def __init__(self, *, tmp_root: Path | None = None, start_timeout: float = 20.0,
                 stop_timeout: float = 5.0) -> None:
        self._tmp_root = tmp_root
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir: Path | None = None
        self._certs: CertPaths | None = None
        self._ports: tuple[int, int] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def tcp_port(self) -> int:
        return self._running(self._ports)[0]

    @property
    def wss_port(self) -> int:
        return self._running(self._ports)[1]

    @property
    def certs(self) -> CertPaths:
        return self._running(self._certs)

    @property
    def ca_file(self) -> Path:
        return self.certs.ca_file

    @property
    def log_path(self) -> Path:
        return self._running(self._dir) / "amqtt.log"

    async def start(self) -> None:
        self._refuse_if_running(self._dir)
        if not amqtt_installed():
            raise BrokerUnavailable("neither mosquitto nor amqtt is installed (apt-get install mosquitto, or "
                                    "pip install 'nwp500d[sim]')")
        self._dir = Path(tempfile.mkdtemp(prefix="nwp500d-amqtt-", dir=self._tmp_root))
        try:
            self._certs = await generate_certs_async(self._dir / "tls")
            for _ in range(_PORT_ATTEMPTS):
                tcp_port, wss_port = pick_free_ports(2)
                if await self._launch(tcp_port, wss_port):
                    self._ports = (tcp_port, wss_port)
                    return
            raise BrokerStartError(f"amqtt found no free pair of loopback ports in {_PORT_ATTEMPTS} attempts; "
                                   f"its log: {self._log_tail()}")
        except BaseException:
            await self.stop()
            raise

    async def _launch(self, tcp_port: int, wss_port: int) -> bool:
        """Start the child; True once it is serving, False if it exited (a port was taken meanwhile)."""
        directory, certs = self._running(self._dir), self._running(self._certs)
        config = directory / "amqtt.yaml"
        config.write_text(yaml.safe_dump(_config(certs, tcp_port, wss_port)), encoding="utf-8")
        with (directory / "amqtt.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CHILD, str(config), stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.PIPE, start_new_session=True,
            )
        self._process = process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self._start_timeout):
                while line := await process.stdout.readline():  # until the marker, or EOF: the child exited
                    if line.decode(errors="replace").strip() == _READY:
                        return True
        except TimeoutError:
            raise BrokerStartError(f"amqtt did not start within {self._start_timeout:g} s; its log: "
                                   f"{self._log_tail()}") from None
        await self._end_process()
        return False

    async def stop(self) -> None:
        await self._end_process()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = self._certs = self._ports = None

    async def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self._stop_timeout):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if process.stdout is not None:
            process.stdout.feed_eof()  # nothing reads it any more; let its transport close with the process

    def _log_tail(self) -> str:
        if self._dir is None:
            return "(none)"
        try:
            text = (self._dir / "amqtt.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(unreadable)"
        return " | ".join(text[-_TAIL_CHARS:].splitlines()[-8:]) or "(empty)"
