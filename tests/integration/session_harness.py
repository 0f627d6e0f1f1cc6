"""A real SessionSupervisor against a real mosquitto (through a fault proxy) and the fake NaviLink REST API."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.mqtt.backoff import Backoff
from nwp500d.mqtt.session import SessionEvent, SessionSupervisor
from nwp500d.mqtt.transport import CrtFactory, TransportKind, TransportSettings
from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.navilink.tokens import AwsCredentials
from nwp500d.sim.broker import MosquittoBroker
from nwp500d.sim.proxy import FaultProxy
from nwp500d.sim.rest import FakeNaviLink
from tests.fakes import FakeClock

EMAIL = "owner@example.com"
PASSWORD = "correct-horse-battery-staple"


@dataclass
class Harness:
    broker: MosquittoBroker
    proxy: FaultProxy
    navilink: FakeNaviLink
    auth: NaviLinkClient
    auth_clock: FakeClock
    supervisor: SessionSupervisor
    collector: MqttDiagnosticsCollector
    factory: CrtFactory
    events: asyncio.Queue[SessionEvent] = field(default_factory=asyncio.Queue)
    signings: int = 0
    task: asyncio.Task[None] | None = None

    async def next_event(self, *kinds: str, timeout: float = 30.0) -> SessionEvent:
        """The next session event of one of ``kinds``, skipping others; bounded."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.kind in kinds:
                    return event

    def start(self) -> None:
        self.task = asyncio.create_task(self.supervisor.run(), name="test.session")

    async def stop(self) -> None:
        self.supervisor.stop()
        if self.task is not None:
            async with asyncio.timeout(30):
                await asyncio.gather(self.task, return_exceptions=True)


def server_tls_context(broker: MosquittoBroker) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(broker.certs.cert_file), str(broker.certs.key_file))
    return context


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path,
    *,
    kind: TransportKind = "wss-sigv4",
    keep_alive_secs: int = 4,
    ping_timeout_ms: int = 1000,
    client_id: str = "nwp500d-test",
    config: MqttConnectionConfig | None = None,
    backoff: Backoff | None = None,
    navilink_options: dict[str, Any] | None = None,
) -> AsyncIterator[Harness]:
    config = config or MqttConnectionConfig(
        initial_reconnect_delay=0.2, max_reconnect_delay=2.0, connect_timeout_secs=5.0,
        operation_timeout_secs=5.0, stable_session_secs=3.0, deep_reconnect_threshold=3,
    )
    auth_clock = FakeClock()
    async with MosquittoBroker() as broker:
        target = {"wss-sigv4": broker.wss_port, "tls": broker.tls_port, "tcp": broker.tcp_port}[kind]
        async with FaultProxy(broker.host, target, stall_tls=server_tls_context(broker)) as proxy, \
                FakeNaviLink(email=EMAIL, password=PASSWORD, clock=auth_clock, **(navilink_options or {})) as sim:
            auth = NaviLinkClient(sim.base_url, EMAIL, PASSWORD, cache_path=tmp_path / "tokens.json",
                                  clock=auth_clock)
            holder: list[Harness] = []

            def read_credentials() -> AwsCredentials | None:
                holder[0].signings += 1  # CRT thread; an int increment is atomic enough for a counter
                return auth.aws_credentials()

            settings = TransportSettings(
                kind=kind, host=broker.host, port=proxy.port, client_id=client_id,
                ca_file=str(broker.ca_file), keep_alive_secs=keep_alive_secs, ping_timeout_ms=ping_timeout_ms,
                operation_timeout_ms=5000, tcp_connect_timeout_ms=3000,
            )
            factory = CrtFactory(settings, read_credentials)
            collector = MqttDiagnosticsCollector()
            supervisor = SessionSupervisor(config=config, factory=factory, credentials=auth, collector=collector,
                                           backoff=backoff)
            h = Harness(broker, proxy, sim, auth, auth_clock, supervisor, collector, factory)
            holder.append(h)
            supervisor.on_event(h.events.put_nowait)
            try:
                yield h
            finally:
                await h.stop()
                await auth.close()
