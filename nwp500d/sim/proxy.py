"""A loopback TCP proxy that injects the network faults a NaviLink session meets: RST, FIN, silence, refusal,
an unanswered WebSocket upgrade and latency, each switchable while connections are live.

It sits between the MQTT client and the broker and never looks inside the byte stream, so it works the same for
MQTT over TCP, TLS and WebSocket+TLS. Built on asyncio protocols and loop timers rather than stream tasks: latency is
then exact per chunk (chunks are not serialised behind each other's delay), back-pressure is the transports' own, and
stop() has no per-connection task to chase.

Semantics worth knowing:

* ``blackhole(True)`` *withholds* rather than drops: bytes, half-closes and closes that arrive during it are kept (up
  to a bound, then reading pauses, as a full TCP window would) and delivered in order once it is lifted, as TCP
  retransmission would after a path recovers. The stream is never corrupted, and the client sees pure silence: not
  even the broker closing its side reaches it. Connections accepted during it are not connected upstream (the "SYN"
  is lost); if their client has gone by the time it is lifted, they are dropped without ever reaching the broker.
* ``stall_upgrade(True)`` sends new connections to a silent sink inside the proxy. Against a TLS port, a sink
  without TLS stalls the *TLS handshake* (awscrt gives up after 10 s); to model the hazard that matters (TLS done,
  WebSocket upgrade never answered, no timeout at all in awscrt), give the proxy ``stall_tls`` so the sink completes
  the handshake first.
* ``delay(s)`` applies ``s`` to each direction, so a request/response round trip gains ``2 * s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Final

from nwp500d.sim.lifecycle import SimServer, wait_bounded

LISTEN_HOST: Final = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT = 5.0
_TEARDOWN_BOUND = 5.0
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_RST_LINGER = struct.pack("ii", 1, 0)


def _abort_with_rst(transport: asyncio.Transport) -> None:
    """Close so the peer gets a TCP RST, not a FIN: with SO_LINGER (on, 0) the kernel discards and resets."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    transport.abort()


class _Eof:
    """The source half-closed: pass the FIN on."""


class _Close:
    """The source is gone: close the destination, with a RST if the source was reset."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset


_EOF = _Eof()
_Item = bytes | _Eof | _Close


class _End(asyncio.Protocol):
    """One socket of a proxied connection; every event goes to the link that owns it."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.link.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.link.flow_from(self).push(data)

    def eof_received(self) -> bool:
        self.link.flow_from(self).push(_EOF)
        return True  # keep our sending half open until the other side is done too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.on_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.link.flow_into(self).update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.link.flow_into(self).update_reading()


class _Flow:
    """One direction of a link: an ordered outbox released chunk by chunk when due, unless blackholed."""

    def __init__(self, proxy: FaultProxy, src: _End, dst: _End) -> None:
        self.proxy = proxy
        self.src = src
        self.dst = dst
        self.outbox: collections.deque[tuple[float, _Item]] = collections.deque()
        self.queued = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.eof_sent = False

    def push(self, item: _Item) -> None:
        if self.src.link.finished:
            return
        now = self.proxy.loop.time()
        # Never earlier than the previous chunk: a shorter delay set mid-stream must not reorder bytes.
        due = max(now + self.proxy.delay_seconds, self.last_due)
        self.last_due = due
        self.outbox.append((due, item))
        if isinstance(item, bytes):
            self.queued += len(item)
        self.pump()

    def pump(self) -> None:
        loop = self.proxy.loop
        while self.outbox and not self.proxy.blackholed and self.dst.transport is not None:
            due, item = self.outbox[0]
            if due > loop.time():
                if self.timer is None:
                    self.timer = loop.call_at(due, self._on_timer)
                break
            self.outbox.popleft()
            self._deliver(item)
        self.update_reading()

    def _on_timer(self) -> None:
        self.timer = None
        self.pump()

    def _deliver(self, item: _Item) -> None:
        transport = self.dst.transport
        assert transport is not None
        if isinstance(item, bytes):
            self.queued -= len(item)
            if not transport.is_closing():
                transport.write(item)
        elif isinstance(item, _Eof):
            self.eof_sent = True
            if not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()
            self.src.link.on_eof_delivered()
        elif not transport.is_closing():
            if item.reset:
                _abort_with_rst(transport)
            else:
                transport.close()

    def update_reading(self) -> None:
        transport = self.src.transport
        if transport is None or self.src.lost:
            return
        should_pause = self.queued > _HIGH_WATER or self.dst.write_paused
        if should_pause and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif self.reading_paused and not self.dst.write_paused and self.queued < _LOW_WATER:
            self.reading_paused = False
            transport.resume_reading()

    def discard(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.outbox.clear()
        self.queued = 0


class _Link:
    """A client connection and its upstream connection, with the per-connection mode fixed at accept time."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _End(self)
        self.upstream = _End(self)
        self.up = _Flow(proxy, self.client, self.upstream)
        self.down = _Flow(proxy, self.upstream, self.client)
        self.refused = False
        self.stalled = False
        self.deferred = False  # accepted during a blackhole; connect upstream when it is lifted
        self.connecting: asyncio.Task[None] | None = None
        self.finished = False  # torn down by the proxy: ignore further events
        self.done: asyncio.Future[None] = proxy.loop.create_future()

    def flow_from(self, end: _End) -> _Flow:
        return self.up if end is self.client else self.down

    def flow_into(self, end: _End) -> _Flow:
        return self.down if end is self.client else self.up

    def on_made(self, end: _End) -> None:
        if end is self.upstream:
            if self.finished:
                assert end.transport is not None
                end.transport.abort()
                return
            self.up.pump()
            return
        proxy = self.proxy
        proxy._accepted += 1
        proxy._links.add(self)
        proxy._connections_changed()
        assert end.transport is not None
        if proxy._closing:
            self.finish()
        elif proxy.refusing:
            self.refused = True
            self.finished = True
            _abort_with_rst(end.transport)
        else:
            self.stalled = proxy.stalling
            if proxy.blackholed:
                self.deferred = True
            else:
                self.connect()

    def connect(self) -> None:
        self.deferred = False
        if self.client.lost:
            # Gave up while the "SYN" was lost in the blackhole: the broker never hears of this connection.
            self.up.discard()
            self.check_done()
            return
        self.connecting = self.proxy.loop.create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        host, port = proxy._sink_address if self.stalled else (proxy.target_host, proxy.target_port)
        try:
            async with asyncio.timeout(proxy.connect_timeout):
                await proxy.loop.create_connection(lambda: self.upstream, host, port)
        except (OSError, TimeoutError):
            # Upstream unreachable (broker down): the client sees its connection reset, like a refused connect.
            self.up.discard()
            if self.client.transport is not None and not self.client.lost:
                _abort_with_rst(self.client.transport)
        finally:
            self.connecting = None
            self.check_done()

    def on_eof_delivered(self) -> None:
        if self.up.eof_sent and self.down.eof_sent:
            for end in (self.client, self.upstream):
                if end.transport is not None and not end.lost:
                    end.transport.close()

    def on_lost(self, end: _End, exc: Exception | None) -> None:
        if not self.finished:
            self.flow_into(end).discard()
            self.flow_from(end).push(_Close(reset=exc is not None))
        self.check_done()

    def finish(self, how: str = "abort") -> None:
        """Tear down now: ``rst``, ``fin`` (graceful close) or ``abort``; queued and withheld bytes are dropped."""
        self.finished = True
        self.deferred = False
        if self.connecting is not None:
            self.connecting.cancel()
        self.up.discard()
        self.down.discard()
        for end in (self.client, self.upstream):
            transport = end.transport
            if transport is None or end.lost:
                continue
            if how == "rst":
                _abort_with_rst(transport)
            elif how == "fin":
                transport.close()
            else:
                transport.abort()
        self.check_done()

    def check_done(self) -> None:
        if self.done.done() or self.connecting is not None or self.deferred:
            return
        ends_open = [end for end in (self.client, self.upstream) if end.transport is not None and not end.lost]
        if not ends_open:
            self.done.set_result(None)
            self.proxy._links.discard(self)
            self.proxy._connections_changed()


class _Sink(asyncio.Protocol):
    """Where stalled connections go: it accepts, reads everything, and never answers.

    With a TLS context it first completes the server side of the handshake (through memory BIOs, so each raw socket
    stays ours to track and close: a server created with ``ssl=`` hides sockets still in their handshake).
    """

    def __init__(self, proxy: FaultProxy, tls: ssl.SSLContext | None) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = proxy.loop.create_future()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = tls.wrap_bio(self._incoming, self._outgoing, server_side=True) if tls is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._sinks.add(self)
        if self.proxy._closing:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._tls is None or self.transport is None:
            return
        self._incoming.write(data)
        try:
            self._tls.do_handshake()
            while self._tls.read(65536):
                pass  # the upgrade request (or anything else): read, never answered
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass  # needs more bytes, or the client said close_notify: either way, stay silent
        except ssl.SSLError:
            self.transport.abort()
            return
        if pending := self._outgoing.read():
            self.transport.write(pending)  # handshake records (and TLS 1.3 tickets), never application data

    def eof_received(self) -> bool:
        return False  # the client gave up; closing is what a real server would do too

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._sinks.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)


class FaultProxy(SimServer):
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults switchable at any time."""

    _noun = "proxy"

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        stall_tls: ssl.SSLContext | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self._stall_tls = stall_tls
        self.blackholed = False
        self.refusing = False
        self.stalling = False
        self.delay_seconds = 0.0
        self._closing = False
        self._accepted = 0
        self._changed = asyncio.Event()
        self._links: set[_Link] = set()
        self._sinks: set[_Sink] = set()
        self._sink_address: tuple[str, int] = (LISTEN_HOST, 0)
        self._server: asyncio.Server | None = None
        self._sink: asyncio.Server | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._running(self._loop)

    @property
    def port(self) -> int:
        return self._running(self._port)

    @property
    def connections_accepted(self) -> int:
        """Every connection accepted since start, including refused ones."""
        return self._accepted

    @property
    def active_connections(self) -> int:
        """Connections currently open (or withheld in a blackhole); refused ones never count."""
        return sum(1 for link in self._links if not link.refused)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._refuse_if_running(self._server)
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            self._sink = await self._loop.create_server(lambda: _Sink(self, self._stall_tls), LISTEN_HOST, 0)
            self._sink_address = (LISTEN_HOST, int(self._sink.sockets[0].getsockname()[1]))
            self._server = await self._loop.create_server(self._new_link, LISTEN_HOST, 0)
            self._port = int(self._server.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise

    def _new_link(self) -> asyncio.Protocol:
        return _Link(self).client

    async def stop(self) -> None:
        """Close the listener and every connection (abort), and wait until each socket is really closed."""
        self._closing = True
        for server in (self._server, self._sink):
            if server is not None:
                server.close()
        await self._finish_all("abort")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_TEARDOWN_BOUND):
                # Loops, because a connection accepted just before close() can still surface while we wait.
                await self.wait_idle()
                while self._sinks:
                    for sink in list(self._sinks):
                        if sink.transport is not None:
                            sink.transport.abort()
                    await asyncio.wait([sink.closed for sink in self._sinks])
        for server in (self._server, self._sink):
            if server is not None:
                await server.wait_closed()
        self._server = self._sink = None
        self._port = None

    async def wait_connections(self, predicate: Callable[[FaultProxy], bool]) -> None:
        """Until ``predicate(self)`` holds, re-checked whenever a connection is accepted or ends (the caller bounds
        the wait): lets a test act once clients are through, e.g. ``lambda p: p.active_connections >= 3``."""
        while not predicate(self):
            await self._changed.wait()

    def _connections_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_idle(self) -> None:
        """Return once no connection is left, so a test can await the proxy noticing that a client went away."""
        while self._links:
            await asyncio.wait([link.done for link in self._links])

    # -- faults --------------------------------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Clear every mode: forward immediately, accept normally. Withheld bytes are delivered now."""
        self.refuse(False)
        self.stall_upgrade(False)
        self.delay(0.0)
        self.blackhole(False)

    async def reset_all(self) -> int:
        """RST both sides of every current connection; returns how many there were."""
        return await self._finish_all("rst")

    async def fin_all(self) -> int:
        """Close every current connection cleanly (FIN to both sides); returns how many there were."""
        return await self._finish_all("fin")

    def blackhole(self, on: bool) -> None:
        self.blackholed = on
        if on:
            return
        for link in list(self._links):
            if link.deferred:
                link.connect()
            link.up.pump()
            link.down.pump()

    def refuse(self, on: bool) -> None:
        """New connections are accepted and reset at once (as a failed connect looks); existing ones are untouched."""
        self.refusing = on

    def stall_upgrade(self, on: bool) -> None:
        """New connections go to the silent sink: whatever they send is read and never answered."""
        self.stalling = on

    def delay(self, seconds: float) -> None:
        """One-way latency added to every chunk forwarded from now on, in both directions."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        self.delay_seconds = seconds

    async def _finish_all(self, how: str) -> int:
        links = [link for link in self._links if not link.finished]
        for link in links:
            link.finish(how)
        if await wait_bounded([link.done for link in self._links], _TEARDOWN_BOUND):
            # A graceful close waits for the peer to take our buffered bytes; one that never reads is aborted.
            for link in list(self._links):
                link.finish("abort")
            await wait_bounded([link.done for link in self._links], _TEARDOWN_BOUND)
        return len(links)
