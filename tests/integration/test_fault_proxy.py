"""Every fault of the proxy, observed from a real client socket, with a real mosquitto (or a real echo server) behind.

Each test asserts what a client library would see (a reset, an EOF, silence, a late answer), because that is what the
daemon's diagnosis is built on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from nwp500d.sim.broker import MosquittoBroker
from nwp500d.sim.proxy import FaultProxy
from tests.integration.test_sim_broker import (
    BOUND,
    CONNACK_ACCEPTED,
    PINGREQ,
    PINGRESP,
    assert_silent,
    client_tls,
    mqtt_connect,
    mqtt_connect_packet,
    need_tools,
    open_stream,
    read_dropped,
    ws_upgrade,
    ws_upgrade_request,
)


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    need_tools()
    async with MosquittoBroker() as instance:
        yield instance


@contextlib.asynccontextmanager
async def running(proxy: FaultProxy) -> AsyncIterator[FaultProxy]:
    """Start and always stop; then collect garbage so an unclosed socket fails this test, not a later one."""
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
        assert proxy.active_connections == 0
        gc.collect()


@pytest.fixture
async def proxy(broker: MosquittoBroker) -> AsyncIterator[FaultProxy]:
    async with running(FaultProxy(broker.host, broker.tcp_port)) as instance:
        yield instance


def server_tls(broker: MosquittoBroker) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(broker.certs.cert_file, broker.certs.key_file)
    return context


async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(PINGREQ)
    async with asyncio.timeout(BOUND):
        await writer.drain()
        return await reader.readexactly(2)


async def wait_until_idle(proxy: FaultProxy) -> None:
    async with asyncio.timeout(BOUND):
        await proxy.wait_idle()


# -- pass-through and bookkeeping ---------------------------------------------------------------------------------


async def test_pass_through_carries_mqtt_and_counts_connections(proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-pass") == CONNACK_ACCEPTED
        assert await ping(reader, writer) == PINGRESP
        assert (proxy.connections_accepted, proxy.active_connections) == (1, 1)
    await wait_until_idle(proxy)
    assert (proxy.connections_accepted, proxy.active_connections) == (1, 0)


async def test_tls_passes_through_untouched(broker: MosquittoBroker) -> None:
    async with (
        running(FaultProxy(broker.host, broker.tls_port)) as proxy,
        open_stream(proxy.port, tls=client_tls(broker.ca_file), server_hostname="localhost") as (reader, writer),
    ):
        assert await mqtt_connect(reader, writer, "proxy-tls") == CONNACK_ACCEPTED


async def test_many_bytes_arrive_intact_and_in_order_while_the_delay_changes() -> None:
    """Back-pressure and ordering: 8 MiB through an echo server, with the latency cut mid-stream."""
    blob = bytes(range(256)) * (32 * 1024)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        target = int(server.sockets[0].getsockname()[1])
        async with running(FaultProxy("127.0.0.1", target)) as proxy, open_stream(proxy.port) as (reader, writer):
            proxy.delay(0.05)

            async def send() -> None:
                for offset in range(0, len(blob), 1 << 20):
                    writer.write(blob[offset : offset + (1 << 20)])
                    await writer.drain()
                    proxy.delay(0.0)  # later chunks are due sooner; they must still not overtake
                writer.write_eof()

            async with asyncio.timeout(BOUND * 3):
                sender = asyncio.create_task(send())
                received = await reader.read(-1)
                await sender
            assert received == blob
    finally:
        server.close()
        await server.wait_closed()


# -- connection-ending faults -------------------------------------------------------------------------------------


async def test_reset_all_gives_the_client_a_connection_reset(proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-rst") == CONNACK_ACCEPTED
        assert await proxy.reset_all() == 1
        assert proxy.active_connections == 0
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(BOUND):
                await reader.read(1)


async def test_fin_all_gives_the_client_a_clean_end_of_stream(proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-fin") == CONNACK_ACCEPTED
        assert await proxy.fin_all() == 1
        async with asyncio.timeout(BOUND):
            assert await reader.read(1) == b""


async def test_refuse_resets_new_connections_and_spares_existing_ones(proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (old_reader, old_writer):
        assert await mqtt_connect(old_reader, old_writer, "proxy-refuse-old") == CONNACK_ACCEPTED
        proxy.refuse(True)
        async with open_stream(proxy.port) as (reader, writer):
            writer.write(mqtt_connect_packet("proxy-refused"))
            assert await read_dropped(reader) == "reset"
        assert await ping(old_reader, old_writer) == PINGRESP
        proxy.refuse(False)
        async with open_stream(proxy.port) as (reader, writer):
            assert await mqtt_connect(reader, writer, "proxy-refuse-new") == CONNACK_ACCEPTED
    assert proxy.connections_accepted == 3


# -- silence ------------------------------------------------------------------------------------------------------


async def test_blackhole_silences_a_live_connection_and_delivers_late_when_lifted(proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-bh") == CONNACK_ACCEPTED
        proxy.blackhole(True)
        writer.write(PINGREQ)
        await assert_silent(reader)
        assert proxy.active_connections == 1
        proxy.blackhole(False)
        async with asyncio.timeout(BOUND):
            assert await reader.readexactly(2) == PINGRESP


async def test_blackhole_accepts_new_connections_but_forwards_nothing_until_lifted(proxy: FaultProxy) -> None:
    proxy.blackhole(True)
    async with open_stream(proxy.port) as (reader, writer):
        writer.write(mqtt_connect_packet("proxy-bh-new"))
        await assert_silent(reader)
        assert proxy.connections_accepted == 1
        proxy.blackhole(False)
        async with asyncio.timeout(BOUND):
            assert await reader.readexactly(4) == CONNACK_ACCEPTED


async def test_blackhole_hides_a_broker_crash_until_it_is_lifted(broker: MosquittoBroker, proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-bh-crash") == CONNACK_ACCEPTED
        proxy.blackhole(True)
        await broker.kill()
        await assert_silent(reader)
        proxy.blackhole(False)
        assert await read_dropped(reader) == "eof"


async def test_stall_upgrade_reads_the_request_and_never_answers(broker: MosquittoBroker) -> None:
    async with running(FaultProxy(broker.host, broker.tcp_port)) as proxy:
        proxy.stall_upgrade(True)
        async with open_stream(proxy.port) as (reader, writer):
            writer.write(ws_upgrade_request(proxy.port))
            await assert_silent(reader)
            assert proxy.active_connections == 1


async def test_stall_upgrade_with_tls_completes_the_handshake_then_never_answers(broker: MosquittoBroker) -> None:
    """The awscrt hazard: TCP and TLS succeed, the WebSocket upgrade never gets an HTTP answer."""
    tls = client_tls(broker.ca_file)
    async with running(FaultProxy(broker.host, broker.wss_port, stall_tls=server_tls(broker))) as proxy:
        proxy.stall_upgrade(True)
        async with open_stream(proxy.port, tls=tls, server_hostname="127.0.0.1") as (reader, writer):
            assert writer.get_extra_info("peercert") is not None  # the handshake completed and verified
            writer.write(ws_upgrade_request(proxy.port))
            await assert_silent(reader)
            proxy.stall_upgrade(False)  # affects new connections only
            await assert_silent(reader)
            async with open_stream(proxy.port, tls=tls, server_hostname="127.0.0.1") as (new_reader, new_writer):
                assert (await ws_upgrade(new_reader, new_writer, proxy.port)).startswith("HTTP/1.1 101")


# -- latency ------------------------------------------------------------------------------------------------------


async def test_delay_applies_to_each_direction(proxy: FaultProxy) -> None:
    delay = 0.5  # so that the undelayed round trip below has a wide margin (2 * delay) against a scheduling stall
    async with open_stream(proxy.port) as (reader, writer):
        proxy.delay(delay)
        started = time.monotonic()
        assert await mqtt_connect(reader, writer, "proxy-delay") == CONNACK_ACCEPTED
        assert time.monotonic() - started >= 2 * delay
        proxy.pass_through()
        started = time.monotonic()
        assert await ping(reader, writer) == PINGRESP
        assert time.monotonic() - started < 2 * delay  # a round trip still delayed each way would take at least this


# -- the broker behind it -----------------------------------------------------------------------------------------


async def test_broker_kill_and_restart_seen_through_the_proxy(broker: MosquittoBroker, proxy: FaultProxy) -> None:
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-kill") == CONNACK_ACCEPTED
        await broker.kill()
        assert await read_dropped(reader) in {"eof", "reset"}
    async with open_stream(proxy.port) as (reader, writer):
        # The proxy accepts, cannot reach the broker, and resets: what a refused connect looks like to a client.
        assert await read_dropped(reader) == "reset"
    await broker.restart()
    async with open_stream(proxy.port) as (reader, writer):
        assert await mqtt_connect(reader, writer, "proxy-kill") == CONNACK_ACCEPTED


async def test_stop_closes_every_kind_of_connection(broker: MosquittoBroker) -> None:
    proxy = FaultProxy(broker.host, broker.tcp_port)
    async with running(proxy), open_stream(proxy.port) as (live_reader, live_writer):
        assert await mqtt_connect(live_reader, live_writer, "proxy-stop") == CONNACK_ACCEPTED
        proxy.stall_upgrade(True)
        async with open_stream(proxy.port) as (stalled_reader, stalled_writer):
            stalled_writer.write(ws_upgrade_request(proxy.port))
            proxy.stall_upgrade(False)
            proxy.blackhole(True)
            async with open_stream(proxy.port) as (held_reader, held_writer):
                held_writer.write(mqtt_connect_packet("proxy-held"))
                await assert_silent(held_reader)
                assert proxy.active_connections == 3
                await proxy.stop()
                for reader in (live_reader, stalled_reader, held_reader):
                    assert await read_dropped(reader) in {"eof", "reset"}
    with pytest.raises(RuntimeError):
        _ = proxy.port
