"""``nwp500d demo`` and ``nwp500d sim``: the real daemon against a local NaviLink stand-in, with scripted faults.

Everything the cloud would be runs on loopback: the fake REST API, mosquitto (or amqtt where mosquitto is not
installed) with a WebSocket+TLS listener (the production path, SigV4-signed upgrade included), a fault proxy between
daemon and broker, and a simulated water heater connected straight to the broker. No credentials, no root, no
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nwp500d.config import (
    AccountConfig,
    Config,
    CrtLogLevel,
    ExportsConfig,
    JournalConfig,
    LoggingConfig,
    MonitorConfig,
    MqttConnectionConfig,
    NaviLinkConfig,
)
from nwp500d.daemon import run_daemon
from nwp500d.mqtt.session import SessionEvent
from nwp500d.mqtt.transport import TransportSettings
from nwp500d.secrets import Secret
from nwp500d.sim.device import SimulatedDevice
from nwp500d.sim.local_broker import LocalBroker, local_broker
from nwp500d.sim.proxy import FaultProxy
from nwp500d.sim.rest import FakeNaviLink
from nwp500d.summary import format_duration

DEMO_EMAIL = "demo@nwp500d.invalid"
DEMO_PASSWORD = "demo-password-not-secret"
DEMO_MAC = "0478aa55cc01"


@dataclass
class Simulator:
    navilink: FakeNaviLink
    broker: LocalBroker
    proxy: FaultProxy
    device: SimulatedDevice

    def config(self, state_dir: Path, *, crt_log_level: CrtLogLevel = "warn") -> Config:
        return Config(
            account=AccountConfig(email=DEMO_EMAIL),
            navilink=NaviLinkConfig(base_url=self.navilink.base_url, request_timeout_secs=5.0),
            mqtt=MqttConnectionConfig(
                endpoint=self.broker.host, port=self.proxy.port, transport="wss-sigv4",
                ca_file=str(self.broker.ca_file), keep_alive_secs=30, ping_timeout_secs=5.0,
                connect_timeout_secs=10.0, operation_timeout_secs=5.0, initial_reconnect_delay=0.5,
                max_reconnect_delay=4.0, stable_session_secs=2.0,
            ),
            monitor=MonitorConfig(status_interval_secs=10.0),
            journal=JournalConfig(enabled=False),
            exports=ExportsConfig(state_directory=str(state_dir), interval_secs=10.0),
            logging=LoggingConfig(crt_log_level=crt_log_level),
        )

    def config_yaml(self, state_dir: Path) -> str:
        return (
            f"account:\n  email: {DEMO_EMAIL}\n"
            f"navilink:\n  base_url: {self.navilink.base_url}\n"
            f"mqtt:\n  endpoint: {self.broker.host}\n  port: {self.proxy.port}\n  transport: wss-sigv4\n"
            f"  ca_file: {self.broker.ca_file}\n"
            f"journal:\n  enabled: false\n"
            f"exports:\n  state_directory: {state_dir}\n"
        )


@contextlib.asynccontextmanager
async def simulator(*, aws_lifetime_secs: int = 3600) -> AsyncIterator[Simulator]:
    async with local_broker() as broker:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(str(broker.certs.cert_file), str(broker.certs.key_file))
        devices = [{"deviceInfo": {"homeSeq": 1, "macAddress": DEMO_MAC, "additionalValue": "5322",
                                   "deviceType": 52, "deviceName": "NWP500 (simulated)", "connected": 2}}]
        async with FaultProxy(broker.host, broker.wss_port, stall_tls=tls) as proxy, \
                FakeNaviLink(email=DEMO_EMAIL, password=DEMO_PASSWORD, aws_lifetime_secs=aws_lifetime_secs,
                             devices=devices) as navilink:
            device = SimulatedDevice(
                TransportSettings(kind="tcp", host=broker.host, port=broker.tcp_port, client_id="sim-nwp500",
                                  keep_alive_secs=30),
                mac_address=DEMO_MAC, additional_value="5322",
            )
            await device.start()
            try:
                yield Simulator(navilink, broker, proxy, device)
            finally:
                await device.stop()


def _printer(out: TextIO, started: float) -> Callable[[SessionEvent], None]:
    def show(event: SessionEvent) -> None:
        at = f"{time.monotonic() - started:6.1f}s"
        if event.kind in ("connected", "rebuilt", "deep_reconnected"):
            after = "" if event.reconnect_seconds is None else f" after {event.reconnect_seconds:.1f} s down"
            print(f"{at}  UP    {event.kind}{after} (attempt {event.attempt})", file=out, flush=True)
        elif event.kind == "interrupted" and event.error is not None:
            lived = format_duration(event.session_seconds)
            print(f"{at}  DOWN  {event.error.name} after a {lived} session", file=out, flush=True)
        elif event.kind == "failed" and event.error is not None:
            print(f"{at}  ....  attempt {event.attempt} failed: {event.error.name}", file=out, flush=True)
    return show


async def _faults(sim: Simulator, duration: float, out: TextIO, rng: random.Random) -> None:
    """Scripted schedule: a server hangup every 20 s, a few random network cuts, one brief broker outage."""
    started = time.monotonic()
    cuts = sorted(rng.uniform(5, duration - 10) for _ in range(2))
    outage_at = min(duration * 0.6, duration - 14)  # over, and recovered from, well before the end
    # Nothing in the last 10 s, so the run ends on a recovered session.
    plan: list[tuple[float, str]] = [(t, "hangup") for t in range(20, int(duration) - 10, 20)]
    plan += [(t, "cut") for t in cuts] + [(outage_at, "outage")]
    for at, what in sorted(plan):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        stamp = f"{time.monotonic() - started:6.1f}s"
        if what == "hangup":
            print(f"{stamp}  fault: the server closes the connection", file=out, flush=True)
            await sim.proxy.fin_all()
        elif what == "cut":
            print(f"{stamp}  fault: network cut (TCP reset)", file=out, flush=True)
            await sim.proxy.reset_all()
        else:
            print(f"{stamp}  fault: broker unreachable for 4 s", file=out, flush=True)
            sim.proxy.refuse(True)
            await sim.proxy.reset_all()
            await asyncio.sleep(4)
            sim.proxy.refuse(False)


async def run_demo(duration: float, state_dir: Path, out: TextIO = sys.stdout, seed: int | None = None) -> int:
    rng = random.Random(seed)
    # AWS credentials that expire mid-demo (inside the 300 s refresh margin after duration/2): the daemon must
    # sign in again for fresh ones on a reconnect, as it would against the real cloud.
    async with simulator(aws_lifetime_secs=int(300 + duration / 2)) as sim:
        print(f"nwp500d demo: {duration:.0f} s against a local NaviLink simulator ({sim.broker.name} over "
              f"WebSocket+TLS with SigV4, fake REST API, simulated NWP500)", file=out, flush=True)
        stop = asyncio.Event()
        started = time.monotonic()
        daemon = asyncio.create_task(run_daemon(
            sim.config(state_dir, crt_log_level="off"), Secret(DEMO_PASSWORD, "demo"), state_dir=state_dir, stop=stop,
            on_session_event=_printer(out, started), install_signal_handlers=False,
        ))
        faults = asyncio.create_task(_faults(sim, duration, out, rng))
        try:
            await asyncio.wait({daemon}, timeout=duration)
        finally:
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
            stop.set()
        result = await daemon
        print("", file=out)
        print(result.collector.summary_text(), file=out)
        print(f"\nsign-ins: {sim.navilink.sign_ins}, device status replies: {sim.device.answered}", file=out)
        print(f"exports: {state_dir / 'exports'}  events: {state_dir / 'events'}", file=out)
        print(f"read them again with: nwp500d report --state-dir {state_dir}", file=out, flush=True)
        return result.exit_code


async def run_sim(state_dir: Path, out: TextIO = sys.stdout) -> int:
    async with simulator() as sim:
        print("# NaviLink simulator running; point the daemon at it with this config (Ctrl-C stops):", file=out)
        print(sim.config_yaml(state_dir), file=out)
        print(f"# password: NAVIEN_PASSWORD={DEMO_PASSWORD}", file=out, flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    return 0
