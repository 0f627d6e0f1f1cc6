"""Composition root: builds every part from the configuration and runs them as named tasks until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nwp500d import __version__, exitcodes
from nwp500d.clock import SystemClock, iso_utc
from nwp500d.config import Config, config_summary
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.monitor import DeviceMonitor
from nwp500d.mqtt.session import SessionEvent, SessionGaveUp, SessionSupervisor
from nwp500d.mqtt.transport import CrtFactory, init_crt_logging, settings_from_config
from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.navilink.errors import CredentialsRejected, NaviLinkUnavailable
from nwp500d.redact import Redactor
from nwp500d.secrets import Secret
from nwp500d.state import export_periodically, open_history, snapshot_exporter, stable_client_id
from nwp500d.store import ensure_directory

_log = logging.getLogger("nwp500d")

TOKEN_CACHE = "navilink-tokens.json"
TICK_SECS = 1.0


class RedactingFilter(logging.Filter):
    """Every log line passes through the redactor: no secret reaches the journal, whoever logs it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.text(record.getMessage())
        record.args = None
        return True


@dataclass
class DaemonResult:
    exit_code: int
    collector: MqttDiagnosticsCollector
    state_dir: Path


async def run_daemon(
    config: Config,
    password: Secret,
    *,
    state_dir: Path,
    stop: asyncio.Event | None = None,
    on_session_event: Callable[[SessionEvent], None] | None = None,
    install_signal_handlers: bool = True,
) -> DaemonResult:
    email = config.account.email or ""
    redactor = Redactor([password.value, email], redact_macs=config.exports.redact_mac_addresses)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(redactor))
    init_crt_logging(config.logging.crt_log_level)
    ensure_directory(state_dir)
    client_id = config.mqtt.client_id or stable_client_id(state_dir)
    collector = MqttDiagnosticsCollector(
        max_events_retained=config.exports.max_events_retained,
        enable_verbose_logging=config.logging.verbose_diagnostics,
        redactor=redactor,
        daemon_info={"version": __version__, "host": socket.gethostname(), "started": iso_utc(SystemClock().wall()),
                     "config": config_summary(config)},
    )
    history = open_history(state_dir, config, collector, persist=True)
    if history.loaded.records:
        _log.info("reloaded %d records from %s", len(history.loaded.records), state_dir)
    exporter = snapshot_exporter(state_dir, config)
    auth = NaviLinkClient(
        config.navilink.base_url, email, password.value, cache_path=state_dir / TOKEN_CACHE,
        refresh_margin_secs=config.navilink.token_refresh_margin_secs,
        request_timeout_secs=config.navilink.request_timeout_secs,
    )
    factory = CrtFactory(settings_from_config(config.mqtt, client_id), auth.aws_credentials)
    supervisor = SessionSupervisor(config=config.mqtt, factory=factory, credentials=auth, collector=collector)
    if on_session_event is not None:
        supervisor.on_event(on_session_event)
    first_up = asyncio.Event()
    supervisor.on_event(lambda event: first_up.set() if event.kind == "connected" else None)

    loop = asyncio.get_running_loop()
    if install_signal_handlers:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, supervisor.stop)
    helpers = [
        asyncio.create_task(_tick(collector), name="nwp500d.tick"),
        asyncio.create_task(export_periodically(history, exporter, config.exports.interval_secs),
                            name="nwp500d.export"),
        asyncio.create_task(_monitor(config, supervisor, auth, client_id, first_up), name="nwp500d.monitor"),
    ]
    if stop is not None:
        helpers.append(asyncio.create_task(_stop_when(stop, supervisor), name="nwp500d.stop"))
    session = asyncio.create_task(supervisor.run(), name="nwp500d.session")
    exit_code = exitcodes.OK
    try:
        await session
    except CredentialsRejected as exc:
        _log.error("%s", exc)
        exit_code = exitcodes.NOPERM
    except SessionGaveUp as exc:
        _log.error("giving up: %s", exc)
        exit_code = exitcodes.UNAVAILABLE
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        history.store.flush_pending()
        exporter.write(collector.export_json())  # the final snapshot
        history.store.close()
        await auth.close()
    return DaemonResult(exit_code, collector, state_dir)


async def _tick(collector: MqttDiagnosticsCollector) -> None:
    while True:
        collector.tick()
        await asyncio.sleep(TICK_SECS)


async def _stop_when(stop: asyncio.Event, supervisor: SessionSupervisor) -> None:
    await stop.wait()
    supervisor.stop()


async def _monitor(config: Config, supervisor: SessionSupervisor, auth: NaviLinkClient, client_id: str,
                   first_up: asyncio.Event) -> None:
    """Once the session is first up, find the devices and poll them for as long as the daemon runs."""
    await first_up.wait()
    delay = 5.0
    while True:
        try:
            devices = await auth.list_devices()
            break
        except NaviLinkUnavailable as exc:
            _log.warning("device list unavailable (%s); retrying in %.0f s", exc.reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 300.0)
    wanted = {mac.replace(":", "").replace("-", "").lower() for mac in config.monitor.devices}
    chosen = [d for d in devices if not wanted or d.mac_address.lower() in wanted]
    if not chosen:
        _log.warning("no devices to poll (%d on the account); the session is monitored without a round-trip probe",
                     len(devices))
        return
    monitor = DeviceMonitor(
        supervisor, chosen, client_id=client_id, session_id=os.urandom(16).hex(),
        interval_secs=config.monitor.status_interval_secs,
        reply_timeout_secs=min(config.mqtt.operation_timeout_secs, config.monitor.status_interval_secs / 2),
        deaf_after=config.monitor.deaf_after_timeouts,
    )
    await monitor.start()
    _log.info("polling %d device(s) every %g s", len(chosen), config.monitor.status_interval_secs)
    await monitor.run()


def run(config: Config, password: Secret, state_dir: Path) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_daemon(config, password, state_dir=state_dir)).exit_code
    return exitcodes.OK
