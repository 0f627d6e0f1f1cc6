"""A userspace stand-in for a NAT that forgets idle connections: the loopback substitute for the netns lab's
conntrack expiry (reference/netns-lab.md §3), for tests that cannot have root.

Each accepted connection gets its own "mapping" with a last-activity time, refreshed by payload in either
direction. Like conntrack, expiry is decided when a packet arrives, not by a timer: the first chunk that finds the
mapping idle for ``idle_timeout`` seconds or more marks it expired, and from then on every byte in both directions
is silently discarded and neither side's close is passed on, so the client sees exactly what a home router gives it
(silence until its ping times out) and the broker only learns of it by its own keep-alive check. A new connection
is a new SYN and gets a fresh mapping, as a reconnect would through a real NAT.

Differences from a kernel NAT that the keep-alive experiment cannot observe: discarded bytes are still ACKed by the
loopback TCP stack (so the client's kernel does not retransmit; awscrt's ping timeout fires the same), and bare
TCP ACKs are invisible here, which moves a refresh by at most a delayed-ACK interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from nwp500d.sim.lifecycle import SimServer, wait_bounded

LISTEN_HOST = "127.0.0.1"
_CHUNK = 65536
_STOP_BOUND = 5.0


@dataclass
class Mapping:
    """One connection's NAT state, kept after the connection ends so a test can see what happened to it."""

    accepted_at: float
    last_activity: float
    expired_at: float | None = None
    dropped_bytes: int = 0
    forwarded_up: int = 0  # bytes client -> upstream before expiry
    forwarded_down: int = 0  # bytes upstream -> client before expiry
    client_open: bool = True
    upstream_open: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list, repr=False)


class IdleExpiringNat(SimServer):
    """Forward ``127.0.0.1:<port>`` to ``target``, blackholing any connection left idle for ``idle_timeout`` s."""

    _noun = "NAT"

    def __init__(self, target_host: str, target_port: int, idle_timeout: float, *, connect_timeout: float = 5.0):
        self.target_host = target_host
        self.target_port = target_port
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.mappings: list[Mapping] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        return int(self._running(self._server).sockets[0].getsockname()[1])

    @property
    def open_clients(self) -> int:
        return sum(1 for m in self.mappings if m.client_open)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait (bounded) until ``predicate`` holds; it is re-checked whenever a connection opens, expires or ends."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LISTEN_HOST, 0)

    async def stop(self) -> None:
        """Stop listening, abort every connection still open, and wait (bounded) for their handlers to end."""
        if self._server is not None:
            self._server.close()
        # Aborting the sockets ends the pumps by themselves. Cancelling a handler instead would make asyncio's stream
        # server log the cancellation as an error; that is kept for a handler still stuck connecting upstream.
        for mapping in self.mappings:
            for writer in mapping.writers:
                writer.transport.abort()
        await wait_bounded(self._handlers, _STOP_BOUND)
        for task in list(self._handlers):
            task.cancel()
        await wait_bounded(self._handlers, _STOP_BOUND)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _notify(self) -> None:
        self._changed.set()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        now = asyncio.get_running_loop().time()
        mapping = Mapping(accepted_at=now, last_activity=now)
        mapping.writers.append(client_writer)
        self.mappings.append(mapping)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            self._notify()
            async with asyncio.timeout(self.connect_timeout):
                upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
            mapping.writers.append(upstream_writer)
            mapping.upstream_open = True
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(mapping, client_reader, client_writer, upstream_writer, "client"))
                group.create_task(self._pump(mapping, upstream_reader, upstream_writer, client_writer, "upstream"))
        except (OSError, TimeoutError):
            pass  # upstream unreachable: the client's connection just ends
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.transport.abort()
            mapping.client_open = mapping.upstream_open = False
            self._handlers.discard(task)
            self._notify()

    async def _pump(
        self,
        mapping: Mapping,
        reader: asyncio.StreamReader,
        source: asyncio.StreamWriter,
        destination: asyncio.StreamWriter,
        side: str,
    ) -> None:
        """Copy one direction; after expiry, swallow it. Ends when its source closes, closing that socket."""
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(_CHUNK):
                now = loop.time()
                if mapping.expired_at is None and now - mapping.last_activity >= self.idle_timeout:
                    mapping.expired_at = now
                    self._notify()
                if mapping.expired_at is not None:
                    mapping.dropped_bytes += len(chunk)
                    continue
                mapping.last_activity = now
                if side == "client":
                    mapping.forwarded_up += len(chunk)
                else:
                    mapping.forwarded_down += len(chunk)
                self._notify()
                destination.write(chunk)
                await destination.drain()
        except OSError:
            pass  # a reset is an end like any other
        source.transport.abort()
        if side == "client":
            mapping.client_open = False
        else:
            mapping.upstream_open = False
        if mapping.expired_at is None:
            destination.transport.close()  # the mapping still exists: the close goes through like any packet
        self._notify()
