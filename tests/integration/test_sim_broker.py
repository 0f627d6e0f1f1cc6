"""The loopback mosquitto and its certificates, checked with hand-written MQTT and WebSocket bytes over real sockets.

Raw bytes rather than an MQTT library, so the test cannot pass because a client library papers over a broken
listener, and so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nwp500d.sim import broker as broker_module
from nwp500d.sim.broker import BrokerStartError, BrokerUnavailable, MosquittoBroker, find_mosquitto
from nwp500d.sim.certs import OpenSSLUnavailable, find_openssl, generate_certs

BOUND = 10.0  # generous ceiling for anything that should take milliseconds on loopback
SILENCE = 0.5  # how long "nothing arrives" is watched for
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
SIGV4_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261121%2Fus-east-1%2Fiotdevicegateway"
    "%2Faws4_request&X-Amz-Date=20261121T120000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=abc"
)


# -- wire helpers (also used by test_fault_proxy) --------------------------------------------------------------


def need_tools() -> None:
    try:
        find_mosquitto()
        find_openssl()
    except (BrokerUnavailable, OpenSSLUnavailable) as exc:
        pytest.skip(str(exc))


def mqtt_connect_packet(client_id: str, keep_alive: int = 30) -> bytes:
    """MQTT 3.1.1 CONNECT with clean session and no will, user or password."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT" + b"\x04" + b"\x02" + keep_alive.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    assert len(body) < 128, "one-byte remaining length keeps the encoder trivial"
    return bytes([0x10, len(body)]) + body


def client_tls(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@contextlib.asynccontextmanager
async def open_stream(
    port: int, *, tls: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(BOUND):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=server_hostname if tls else None
        )
    try:
        yield reader, writer
    finally:
        # abort, not close: a TLS close waits for the peer's close_notify, which a dead or silent peer never sends.
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def mqtt_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_id: str) -> bytes:
    writer.write(mqtt_connect_packet(client_id))
    async with asyncio.timeout(BOUND):
        await writer.drain()
        return await reader.readexactly(4)


async def assert_silent(reader: asyncio.StreamReader) -> None:
    """Nothing arrives for SILENCE seconds and the stream is still open (no EOF, no reset)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(SILENCE):
            await reader.read(1)
    assert not reader.at_eof()


async def read_dropped(reader: asyncio.StreamReader) -> str:
    """Wait (bounded) for the connection to end; say how: 'eof' or 'reset'."""
    async with asyncio.timeout(BOUND):
        try:
            while await reader.read(4096):
                pass
        except ConnectionResetError:
            return "reset"
    return "eof"


def ws_upgrade_request(port: int, path: str = f"/mqtt?{SIGV4_QUERY}") -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    ).encode()


def ws_client_frame(payload: bytes) -> bytes:
    """A masked binary frame, as RFC 6455 requires of clients."""
    assert len(payload) < 126
    mask = secrets.token_bytes(4)
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_ws_frame(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(BOUND):
        head = await reader.readexactly(2)
        assert head[0] == 0x82, f"expected a final binary frame, got {head!r}"
        assert head[1] < 126, "the broker does not mask and our answers are short"
        return await reader.readexactly(head[1])


async def ws_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> str:
    writer.write(ws_upgrade_request(port))
    async with asyncio.timeout(BOUND):
        await writer.drain()
        return (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def current_pid(instance: MosquittoBroker) -> int | None:
    """Read the property afresh (mypy would otherwise keep an earlier narrowing across awaits)."""
    return instance.pid


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text``: how a test proves nothing it started is still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel prints them) of LISTEN sockets on ``port``, IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port_hex = fields[1].rsplit(":", 1)
                if int(port_hex, 16) == port and fields[3] == "0A":
                    found.add(address)
    return found


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    need_tools()
    instance = MosquittoBroker(tmp_root=tmp_path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
def fake_mosquitto(tmp_path: Path) -> Iterator[Path]:
    """An 'mosquitto' that runs but never gets ready: the config path stays in its command line for the /proc scan."""
    script = tmp_path / "fake-mosquitto"
    script.write_text('#!/bin/sh\nexec python3 -c "import time; time.sleep(600)" "$@"\n')
    script.chmod(0o755)
    yield script


# -- certificates -------------------------------------------------------------------------------------------------


def test_certs_are_written_with_private_key_modes_and_the_ca_key_is_gone(tmp_path: Path) -> None:
    try:
        paths = generate_certs(tmp_path / "tls")
    except OpenSSLUnavailable as exc:
        pytest.skip(str(exc))
    assert entries(tmp_path / "tls") == ["ca.pem", "server.key", "server.pem"]
    assert stat.S_IMODE(paths.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.cert_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(paths.ca_file.stat().st_mode) == 0o644
    context = client_tls(paths.ca_file)  # parses as a CA under strict verification
    assert context.cert_store_stats()["x509_ca"] == 1


# -- the three listeners ------------------------------------------------------------------------------------------


async def test_mqtt_connect_over_tcp(broker: MosquittoBroker) -> None:
    async with open_stream(broker.tcp_port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "sim-tcp") == CONNACK_ACCEPTED


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "::1", "localhost"])
async def test_mqtt_connect_over_tls_verifies_every_loopback_name(
    broker: MosquittoBroker, server_hostname: str
) -> None:
    tls = client_tls(broker.ca_file)
    async with open_stream(broker.tls_port, tls=tls, server_hostname=server_hostname) as (reader, writer):
        assert await mqtt_connect(reader, writer, "sim-tls") == CONNACK_ACCEPTED


async def test_tls_refuses_a_name_the_certificate_does_not_carry(broker: MosquittoBroker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|not valid"):
        async with open_stream(broker.tls_port, tls=client_tls(broker.ca_file), server_hostname="example.com"):
            pass


async def test_wss_upgrade_with_sigv4_query_is_accepted_and_carries_mqtt(broker: MosquittoBroker) -> None:
    async with open_stream(broker.wss_port, tls=client_tls(broker.ca_file), server_hostname="127.0.0.1") as (
        reader,
        writer,
    ):
        head = await ws_upgrade(reader, writer, broker.wss_port)
        status, *headers = head.split("\r\n")
        assert status.startswith("HTTP/1.1 101"), head
        assert "sec-websocket-protocol: mqtt" in [h.lower() for h in headers], head
        writer.write(ws_client_frame(mqtt_connect_packet("sim-wss")))
        assert await read_ws_frame(reader) == CONNACK_ACCEPTED


async def test_listeners_are_bound_to_ipv4_loopback_only(broker: MosquittoBroker) -> None:
    for port in (broker.tcp_port, broker.tls_port, broker.wss_port):
        assert listening_addresses(port) == {"0100007F"}, port


async def test_log_file_records_clients_by_id(broker: MosquittoBroker) -> None:
    async with open_stream(broker.tcp_port) as (reader, writer):
        await mqtt_connect(reader, writer, "sim-log-probe")
    # mosquitto writes "New client connected ... as <id>" before it sends the CONNACK, and flushes each line.
    text = broker.log_path.read_text()
    assert "mosquitto version" in text
    assert "as sim-log-probe (p2, c1, k30)" in text


# -- kill, restart, stop ------------------------------------------------------------------------------------------


async def test_kill_drops_every_transport_and_restart_serves_the_same_ports(broker: MosquittoBroker) -> None:
    ports = (broker.tcp_port, broker.tls_port, broker.wss_port)
    old_pid = broker.pid
    tls = client_tls(broker.ca_file)
    async with (
        open_stream(broker.tcp_port) as (tcp_reader, tcp_writer),
        open_stream(broker.tls_port, tls=tls, server_hostname="localhost") as (tls_reader, tls_writer),
    ):
        assert await mqtt_connect(tcp_reader, tcp_writer, "sim-kill-tcp") == CONNACK_ACCEPTED
        assert await mqtt_connect(tls_reader, tls_writer, "sim-kill-tls") == CONNACK_ACCEPTED
        await broker.kill()
        assert broker.pid is None
        assert await read_dropped(tcp_reader) in {"eof", "reset"}
        assert await read_dropped(tls_reader) in {"eof", "reset"}
    with pytest.raises(ConnectionRefusedError):
        async with open_stream(broker.tcp_port):
            pass

    await broker.restart()
    assert (broker.tcp_port, broker.tls_port, broker.wss_port) == ports
    assert current_pid(broker) not in (None, old_pid)
    async with open_stream(broker.tcp_port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "sim-after-restart") == CONNACK_ACCEPTED
    async with open_stream(broker.wss_port, tls=tls, server_hostname="localhost") as (reader, writer):
        assert (await ws_upgrade(reader, writer, broker.wss_port)).startswith("HTTP/1.1 101")


async def test_restart_of_a_running_broker_replaces_the_process(broker: MosquittoBroker) -> None:
    async with open_stream(broker.tcp_port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "sim-restart") == CONNACK_ACCEPTED
        old_pid = broker.pid
        await broker.restart()
        assert await read_dropped(reader) in {"eof", "reset"}
    assert broker.pid not in (None, old_pid)
    async with open_stream(broker.tcp_port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "sim-restart") == CONNACK_ACCEPTED


async def test_sigterm_right_after_start_is_honoured(tmp_path: Path) -> None:
    """mosquitto loses a SIGTERM that lands between its "running" line and its main loop; start() must not return
    inside that gap, or a quick restart()/stop() hangs until the SIGKILL escalation. The gap is tiny: without the
    readiness probe this failed in 3 of 9 tries on a loaded machine and rarely on an idle one."""
    need_tools()
    async with MosquittoBroker(tmp_root=tmp_path, stop_timeout=60.0) as instance:
        async with asyncio.timeout(BOUND):
            await instance.restart()  # SIGTERM to a process whose start() has just returned
        text = instance.log_path.read_text()
        assert text.count(" running") == 2
        assert text.count(" terminating") == 1, "the first process died by SIGKILL, not by its SIGTERM handler"


async def test_stop_leaves_no_process_directory_or_listener(tmp_path: Path) -> None:
    need_tools()
    instance = MosquittoBroker(tmp_root=tmp_path)
    async with instance:
        directory, port = instance.directory, instance.tcp_port
        assert processes_mentioning(str(directory))
    assert not directory.exists()
    assert entries(tmp_path) == []
    assert not processes_mentioning(str(tmp_path))
    assert instance.pid is None
    with pytest.raises(ConnectionRefusedError):
        async with open_stream(port):
            pass
    await instance.stop()  # a second stop is harmless


# -- failures -----------------------------------------------------------------------------------------------------


async def test_missing_executable_is_reported_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BrokerUnavailable):
        await MosquittoBroker(executable=str(tmp_path / "no-such-mosquitto"), tmp_root=tmp_path).start()
    assert entries(tmp_path) == []


async def test_broker_that_exits_at_start_reports_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    need_tools()
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(BrokerStartError, match=r"(?s)exited with status 3.*Unknown configuration variable"):
        await MosquittoBroker(extra_config=["no_such_option 1"], tmp_root=root).start()
    assert entries(root) == []
    assert not processes_mentioning(str(root))


async def test_broker_that_never_gets_ready_is_killed_after_the_bound(tmp_path: Path, fake_mosquitto: Path) -> None:
    need_tools()
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(BrokerStartError, match=r"not ready within 1\.0 s"):
        await MosquittoBroker(executable=str(fake_mosquitto), tmp_root=root, start_timeout=1.0).start()
    assert entries(root) == []
    assert not processes_mentioning(str(root))


async def test_cancelled_start_leaves_nothing(tmp_path: Path, fake_mosquitto: Path) -> None:
    need_tools()
    root = tmp_path / "root"
    root.mkdir()
    instance = MosquittoBroker(executable=str(fake_mosquitto), tmp_root=root, start_timeout=60.0)
    with pytest.raises(TimeoutError):
        # Long enough for the certificates (RSA) and the spawn; the fake then holds start() until it is cancelled.
        async with asyncio.timeout(3.0):
            await instance.start()
    assert entries(root) == []
    assert not processes_mentioning(str(root))


async def test_a_port_taken_between_probe_and_bind_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tools()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        real_pick = broker_module.pick_free_ports
        picks = iter([[taken, *real_pick(2)]])
        monkeypatch.setattr(broker_module, "pick_free_ports", lambda count: next(picks, None) or real_pick(count))
        async with MosquittoBroker(tmp_root=tmp_path) as instance:
            assert taken not in (instance.tcp_port, instance.tls_port, instance.wss_port)
            async with open_stream(instance.tcp_port) as (reader, writer):
                assert await mqtt_connect(reader, writer, "sim-retry") == CONNACK_ACCEPTED


async def test_sigkill_of_the_test_process_takes_the_broker_with_it(tmp_path: Path) -> None:
    """The parent-death signal: a test run killed by CI must not leave a broker listening."""
    need_tools()
    script = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from nwp500d.sim.broker import MosquittoBroker\n"
        "async def main():\n"
        f"    b = MosquittoBroker(tmp_root=Path({str(tmp_path)!r}))\n"
        "    await b.start()\n"
        "    print(b.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    loop = asyncio.get_running_loop()
    pidfd = -1
    try:
        assert child.stdout is not None
        async with asyncio.timeout(BOUND):
            broker_pid = int(await child.stdout.readline())
        pidfd = os.pidfd_open(broker_pid)  # readable once that process has exited: an event, not a poll
        broker_gone: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not broker_gone.done():
                broker_gone.set_result(None)

        loop.add_reader(pidfd, exited)
        child.send_signal(signal.SIGKILL)
        async with asyncio.timeout(BOUND):
            await child.wait()
            await broker_gone
        assert not processes_mentioning(str(tmp_path))
    finally:
        if pidfd >= 0:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        if child.returncode is None:
            child.kill()
            await child.wait()
