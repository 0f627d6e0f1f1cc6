"""Composition root: builds every part from the configuration and runs them as named tasks until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nwp500d import __version__, exitcodes, logfields
from nwp500d.analysis.classify import Settings as ClassifierSettings
from nwp500d.analysis.classify import classify
from nwp500d.clock import SystemClock, iso_utc
from nwp500d.config import DEFAULT_CONFIG_PATH, Config, ConfigError, config_summary, load_config
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.journal.correlator import Correlator
from nwp500d.journal.events import network_came_back
from nwp500d.journal.reader import JournalUnavailable, SystemdJournal, system_journal_problem
from nwp500d.metrics import DaemonMetrics, MetricsListenError, MetricsServer, aws_credentials_expiry, serve_metrics
from nwp500d.model import ConnectionDropEvent, HostEvent
from nwp500d.monitor import DeviceMonitor
from nwp500d.mqtt.session import SessionEvent, SessionGaveUp, SessionSupervisor
from nwp500d.mqtt.transport import CrtFactory, init_crt_logging, settings_from_config
from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.navilink.errors import CredentialsRejected, NaviLinkUnavailable
from nwp500d.netdiag.counters import CounterSampler
from nwp500d.netdiag.experiment_service import KeepAliveExperimentService
from nwp500d.netdiag.keepalive import crt_trial_factory
from nwp500d.netdiag.link import LinkEvent, LinkMonitor, LinkMonitorUnavailable
from nwp500d.netdiag.link import describe as describe_link_event
from nwp500d.netdiag.probes import EndpointProber, ProbeResult
from nwp500d.redact import Redactor
from nwp500d.secrets import Secret
from nwp500d.state import export_periodically, load_nat_bracket, open_history, snapshot_exporter, stable_client_id
from nwp500d.status_reporter import StatusReporter
from nwp500d.store import ensure_directory
from nwp500d.systemd import Notifier, setup_logging, watchdog_interval, watchdog_loop

_log = logging.getLogger("nwp500d")

TOKEN_CACHE = "navilink-tokens.json"
TICK_SECS = 1.0
COUNTER_EVERY_TICKS = 10
UP_KINDS = ("connected", "rebuilt", "deep_reconnected")
LINK_EVENTS_KEPT = 32
READY_AFTER_SECS = 45.0  # below the unit's TimeoutStartSec=90s: an unreachable cloud must not fail the boot
WEDGED_SLACK_SECS = 60.0
SESSION_SECTIONS = ("account", "navilink", "mqtt")
LATER_SECTIONS = ("monitor", "journal", "netdiag", "exports", "metrics")


@dataclass
class DaemonResult:
    exit_code: int
    collector: MqttDiagnosticsCollector
    state_dir: Path


def make_redactor(config: Config, password: Secret) -> Redactor:
    return Redactor([password.value, config.account.email or ""], redact_macs=config.exports.redact_mac_addresses)


class Daemon:
    """Every part of one running daemon, built from one configuration; ``run`` drives them as named tasks."""

    def __init__(
        self,
        config: Config,
        password: Secret,
        *,
        state_dir: Path,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.state_dir = state_dir
        self.redactor = make_redactor(config, password)
        self.notifier = notifier or Notifier(redactor=self.redactor)
        init_crt_logging(config.logging.crt_log_level)
        ensure_directory(state_dir)
        self.client_id = config.mqtt.client_id or stable_client_id(state_dir)
        self.collector = MqttDiagnosticsCollector(
            max_events_retained=config.exports.max_events_retained,
            enable_verbose_logging=config.logging.verbose_diagnostics,
            redactor=self.redactor,
            daemon_info={"version": __version__, "host": socket.gethostname(),
                         "started": iso_utc(SystemClock().wall()), "config": config_summary(config)},
        )
        self.history = open_history(state_dir, config, self.collector, persist=True)
        if self.history.loaded.records:
            _log.info("reloaded %d records from %s", len(self.history.loaded.records), state_dir)
        self.exporter = snapshot_exporter(state_dir, config)
        self.auth = NaviLinkClient(
            config.navilink.base_url, config.account.email or "", password.value,
            cache_path=state_dir / TOKEN_CACHE,
            refresh_margin_secs=config.navilink.token_refresh_margin_secs,
            request_timeout_secs=config.navilink.request_timeout_secs,
        )
        self.counters = CounterSampler() if config.netdiag.enabled else None
        self.prober = EndpointProber(config.mqtt.endpoint, config.mqtt.effective_port, ca_file=config.mqtt.ca_file,
                                     tls=config.mqtt.transport != "tcp", timeout=config.netdiag.probe_timeout_secs)
        self._probes: dict[str, asyncio.Task[ProbeResult]] = {}
        self.link_events: deque[dict[str, str | None]] = deque(maxlen=LINK_EVENTS_KEPT)
        self.link_monitor = LinkMonitor(self._on_link_event) if config.netdiag.link_events else None
        self.supervisor = SessionSupervisor(
            config=config.mqtt, factory=self._factory(config), credentials=self.auth, collector=self.collector,
            network_evidence=self._network_evidence if config.netdiag.enabled else None,
        )
        if self.counters is not None:
            counters = self.counters
            self.supervisor.on_event(
                lambda event: counters.session_started() if event.kind in UP_KINDS else None
            )
            self.collector.on_connection_drop(self._probe_at_drop)
        self.journal = self._journal_source(config)
        self.classifier_settings = ClassifierSettings(keep_alive_secs=config.mqtt.keep_alive_secs,
                                                      ping_timeout_secs=config.mqtt.ping_timeout_secs,
                                                      nat_bracket=load_nat_bracket(state_dir))
        self.correlator = Correlator(
            self.collector, self.journal, config.journal, ping_timeout_secs=config.mqtt.ping_timeout_secs,
            explain=self.explain, enrich=self._probe_result,
            without_source="unavailable" if config.journal.enabled else "disabled",
        )
        self.metrics_server: MetricsServer | None = None
        self.collector.on_connection_drop(self.correlator.on_drop)
        self.metrics = DaemonMetrics(credentials_expiry=aws_credentials_expiry(self.auth))
        self.supervisor.on_event(self.metrics.on_session_event)
        self.collector.on_connection_drop(self.metrics.on_drop)
        self.collector.on_record(self._on_record)
        self.experiment = self._experiment_service(config)
        self.reporter = StatusReporter(self.notifier, self.supervisor, self.collector)
        self.supervisor.on_event(self.reporter.on_session_event)
        self.first_up = asyncio.Event()
        self.supervisor.on_event(lambda event: self.first_up.set() if event.kind == "connected" else None)

    def _experiment_service(self, config: Config) -> KeepAliveExperimentService | None:
        """The opt-in keep-alive experiment, on client ids derived from the monitored session's (never equal)."""
        if not (config.netdiag.enabled and config.netdiag.keepalive_experiment.enabled):
            return None
        base_client_id = config.mqtt.client_id or self.client_id
        service = KeepAliveExperimentService(
            config.netdiag.keepalive_experiment, base_client_id=base_client_id,
            ping_timeout_ms=int(config.mqtt.ping_timeout_secs * 1000),
            factory_for=crt_trial_factory(settings_from_config(config.mqtt, base_client_id), self.auth.aws_credentials),
            state_dir=self.state_dir, on_result=self._use_nat_bracket, refresh_credentials=self.auth.ensure_valid,
            connect_timeout=config.mqtt.connect_timeout_secs,
            settle_secs=config.mqtt.keep_alive_secs + config.mqtt.ping_timeout_secs,
        )
        self.supervisor.on_event(service.on_session_event)
        return service

    def _use_nat_bracket(self, bracket: tuple[int | None, int | None]) -> None:
        """A new experiment result is evidence for every drop from now on, and for the verdict right away."""
        self.classifier_settings = dataclasses.replace(self.classifier_settings, nat_bracket=bracket)
        self.explain(None)

    def _network_evidence(self) -> dict[str, Any]:
        """At the moment of a drop: kernel counters, and the link/route changes seen in the last minutes."""
        evidence = self.counters.evidence() if self.counters is not None else {}
        if self.link_events:
            evidence["link_events"] = list(self.link_events)
        return evidence

    def _on_link_event(self, event: LinkEvent) -> None:
        """rtnetlink: kept as drop evidence; a network that comes back cuts the reconnect backoff short."""
        self.link_events.append({"time": iso_utc(SystemClock().wall()), "kind": event.kind,
                                 "interface": event.interface, "detail": describe_link_event(event)})
        level = logging.INFO if event.kind in ("carrier_down", "default_route_lost") else logging.DEBUG
        _log.log(level, "network: %s", describe_link_event(event))
        if self.link_monitor is not None and not self.supervisor.is_connected \
                and self.link_monitor.network_is_back(event):
            _log.info("network is back (%s): reconnecting now", describe_link_event(event))
            self.supervisor.wake()

    def _start_link_monitor(self) -> None:
        if self.link_monitor is None:
            return
        try:
            self.link_monitor.start(asyncio.get_running_loop())
        except LinkMonitorUnavailable as exc:
            _log.warning("link and route events unavailable (%s); drops are still detected by the MQTT ping", exc)
            self.link_monitor = None

    def _probe_at_drop(self, drop: ConnectionDropEvent) -> None:
        """Probe the endpoint right away (the result joins the drop when its journal window closes)."""
        if drop.drop_id is not None:
            self._probes[drop.drop_id] = asyncio.create_task(self.prober.probe(), name="nwp500d.probe")

    async def _probe_result(self, drop: ConnectionDropEvent) -> dict[str, Any] | None:
        task = self._probes.pop(drop.drop_id or "", None)
        if task is None:
            return None
        try:
            async with asyncio.timeout(4 * self.prober.timeout):
                result = await task
        except TimeoutError:
            return None
        return {"probe": result.to_dict()}

    async def _baseline_probes(self) -> None:
        """A probe between drops, so a drop's timings can be compared with normal ones."""
        while True:
            result = await self.prober.probe()
            if self.collector.daemon_info is not None:
                self.collector.daemon_info["network_baseline"] = result.to_dict()
            _log.debug("baseline probe: %s", result.line())
            await asyncio.sleep(self.config.netdiag.probe_interval_secs)

    def _on_record(self, record: dict[str, object]) -> None:
        if record.get("kind") == "drop_completed":
            self.metrics.on_correlation(str(record.get("correlation")))
            drop_id, cause = record.get("drop_id"), record.get("cause")
            if isinstance(drop_id, str):
                self.metrics.on_drop_classified(drop_id, cause if isinstance(cause, str) else None)

    def explain(self, completed: ConnectionDropEvent | None) -> tuple[str | None, str | None]:
        """Re-classify the whole retained history (cheap: ~25 µs a drop) with ``completed`` in it; keep the verdict
        for snapshots and STATUS, and return the completed drop's own cause."""
        drops = self.collector.get_recent_drops(self.collector.max_events_retained)
        if completed is not None:
            drops = [completed if d.drop_id == completed.drop_id else d for d in drops]
        connections = self.collector.get_recent_connections(self.collector.max_events_retained)
        analysis = classify(drops, connections=connections, settings=self.classifier_settings)
        self.collector.verdict = {**analysis.verdict.to_dict(),
                                  "secondary": [finding.to_dict() for finding in analysis.secondary]}
        self.metrics.set_verdict(analysis.verdict.cause, analysis.verdict.subcause)
        if completed is None:
            return None, None
        mine = next((v for v in analysis.drops if v.drop_id == completed.drop_id), None)
        return (mine.cause, mine.subcause) if mine is not None else (None, None)

    @staticmethod
    def _journal_source(config: Config) -> SystemdJournal | None:
        """The journal to correlate with, or None (said once, with the reason and the fix)."""
        if not config.journal.enabled:
            return None
        directory = Path(config.journal.directory) if config.journal.directory else None
        problem = None if directory is not None else system_journal_problem()
        source = None
        if problem is None:
            try:
                source = SystemdJournal(directory)
            except JournalUnavailable as exc:
                problem = str(exc)
        if problem is not None:
            _log.warning("journal unavailable, drops will be recorded without host events: %s", problem,
                         extra=logfields.event("journal_unavailable", NWP_CAUSE=problem))
        return source

    def _on_host_event(self, event: HostEvent) -> None:
        """Live journal: a network that just came back cuts the reconnect backoff short."""
        _log.debug("host event: %s %s %s", event.category, event.kind, event.message)
        if not self.supervisor.is_connected and network_came_back(event):
            self.supervisor.wake()

    def _factory(self, config: Config) -> CrtFactory:
        return CrtFactory(settings_from_config(config.mqtt, config.mqtt.client_id or self.client_id),
                          self.auth.aws_credentials)

    def request_stop(self) -> None:
        _log.info("stopping: closing the MQTT session", extra=logfields.event("stopping"))
        self.notifier.stopping("stopping: closing the MQTT session")
        self.supervisor.stop()

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is refused (one log line) and the running one kept."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path or DEFAULT_CONFIG_PATH)
        except ConfigError as exc:
            _log.error("reload refused, keeping the running configuration: %s", exc,
                       extra=logfields.event("reload_rejected"))
            self.notifier.reloaded(self.reporter.line())
            return
        old, self.config = self.config, new
        logging.getLogger().setLevel(new.logging.level.upper())
        changed = [name for name in SESSION_SECTIONS if getattr(old, name) != getattr(new, name)]
        later = [name for name in LATER_SECTIONS if getattr(old, name) != getattr(new, name)]
        if "mqtt" in changed:
            self.supervisor.replace_settings(new.mqtt, self._factory(new))
        detail = f"changed: {', '.join(changed + later)}" if changed or later else "nothing changed"
        if later or {"account", "navilink"} & set(changed):
            detail += "; changes other than to mqtt and logging apply at the next start"
        _log.info("configuration reloaded (%s)", detail, extra=logfields.event("reloaded"))
        self.notifier.reloaded(self.reporter.line())

    async def _complete_pending(self) -> None:
        completed = await self.correlator.complete_pending()
        if completed:
            _log.info("correlated %d drops left pending by the previous run", completed)

    def _follow_journal(self) -> Callable[[], None] | None:
        if self.journal is None:
            return None
        try:
            return self.journal.follow(asyncio.get_running_loop(), self._on_host_event)
        except (OSError, JournalUnavailable) as exc:
            _log.warning("cannot follow the journal live (%s); drops are still correlated afterwards", exc)
            return None

    async def _monitor(self) -> None:
        """Once the session is first up, find the devices and poll them for as long as the daemon runs."""
        await self.first_up.wait()
        config, supervisor, auth = self.config, self.supervisor, self.auth
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
            supervisor, chosen, client_id=self.client_id, session_id=os.urandom(16).hex(),
            interval_secs=config.monitor.status_interval_secs,
            reply_timeout_secs=min(config.mqtt.operation_timeout_secs, config.monitor.status_interval_secs / 2),
            deaf_after=config.monitor.deaf_after_timeouts,
            on_round_trip=self.metrics.on_round_trip,
        )
        await monitor.start()
        _log.info("polling %d device(s) every %g s", len(chosen), config.monitor.status_interval_secs)
        await monitor.run()

    def _signals(self, install: bool) -> list[int]:
        if not install:
            return []
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        return [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

    def _helpers(self, session: asyncio.Task[None], stop: asyncio.Event | None,
                 ready_after_secs: float) -> list[asyncio.Task[None]]:
        config = self.config
        helpers = [
            asyncio.create_task(self.reporter.run(ready_after_secs), name="nwp500d.status"),
            asyncio.create_task(_tick(self.collector, self.counters), name="nwp500d.tick"),
            asyncio.create_task(self._complete_pending(), name="nwp500d.correlate-pending"),
            asyncio.create_task(export_periodically(self.history, self.exporter, config.exports.interval_secs),
                                name="nwp500d.export"),
            asyncio.create_task(self._monitor(), name="nwp500d.monitor"),
        ]
        if stop is not None:
            helpers.append(asyncio.create_task(_stop_when(stop, self.request_stop), name="nwp500d.stop"))
        if config.netdiag.enabled:
            helpers.append(asyncio.create_task(self._baseline_probes(), name="nwp500d.baseline-probe"))
        if self.experiment is not None:
            helpers.append(asyncio.create_task(self.experiment.run(), name="nwp500d.keepalive-experiment"))
        interval = watchdog_interval()
        if interval is not None:
            limit = config.mqtt.connect_timeout_secs + config.mqtt.max_reconnect_delay + WEDGED_SLACK_SECS
            helpers.append(asyncio.create_task(
                watchdog_loop(self.notifier, interval, lambda: _unhealthy(session, self.supervisor, limit)),
                name="nwp500d.watchdog",
            ))
        return helpers

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        install_signal_handlers: bool = True,
        ready_after_secs: float = READY_AFTER_SECS,
    ) -> int:
        installed = self._signals(install_signal_handlers)
        config = self.config
        _log.info("nwp500d %s started; state directory %s", __version__, self.state_dir,
                  extra=logfields.event("started", NWP_STATE_DIRECTORY=str(self.state_dir),
                                        NWP_ENDPOINT=f"{config.mqtt.endpoint}:{config.mqtt.effective_port}"))
        self.explain(None)  # a verdict from the reloaded history, before anything new happens
        if config.metrics.listen:
            try:
                self.metrics_server = await serve_metrics(self.metrics, config.metrics.listen)
            except MetricsListenError as exc:
                _log.error("%s; continuing without /metrics", exc)
        session = asyncio.create_task(self.supervisor.run(), name="nwp500d.session")
        helpers = self._helpers(session, stop, ready_after_secs)
        stop_following = self._follow_journal()
        self._start_link_monitor()
        try:
            await session
        except CredentialsRejected as exc:
            _log.error("%s", exc, extra=logfields.event("credentials_rejected"))
            self.notifier.stopping(f"stopped: {exc}")
            return exitcodes.NOPERM
        except SessionGaveUp as exc:
            _log.error("giving up: %s", exc, extra=logfields.event("gave_up"))
            self.notifier.stopping(f"stopped: {exc}")
            return exitcodes.UNAVAILABLE
        finally:
            for task in [*helpers, *self._probes.values()]:
                task.cancel()
            await asyncio.gather(*helpers, *self._probes.values(), return_exceptions=True)
            await self.correlator.close()  # windows still open stay "pending"; the next start completes them
            if stop_following is not None:
                stop_following()
            if self.link_monitor is not None:
                self.link_monitor.stop()
            if self.metrics_server is not None:
                await self.metrics_server()
            loop = asyncio.get_running_loop()
            for signum in installed:
                loop.remove_signal_handler(signum)
            self.history.store.flush_pending()
            self.exporter.write(self.collector.export_json())  # the final snapshot
            self.history.store.close()
            await self.auth.close()
        return exitcodes.OK


async def run_daemon(
    config: Config,
    password: Secret,
    *,
    state_dir: Path,
    stop: asyncio.Event | None = None,
    on_session_event: Callable[[SessionEvent], None] | None = None,
    install_signal_handlers: bool = True,
    config_path: Path | None = None,
    notifier: Notifier | None = None,
    ready_after_secs: float = READY_AFTER_SECS,
) -> DaemonResult:
    daemon = Daemon(config, password, state_dir=state_dir, config_path=config_path, notifier=notifier)
    if on_session_event is not None:
        daemon.supervisor.on_event(on_session_event)
    code = await daemon.run(stop=stop, install_signal_handlers=install_signal_handlers,
                            ready_after_secs=ready_after_secs)
    return DaemonResult(code, daemon.collector, state_dir)


async def _tick(collector: MqttDiagnosticsCollector, counters: CounterSampler | None) -> None:
    ticks = 0
    while True:
        collector.tick()
        if counters is not None and ticks % COUNTER_EVERY_TICKS == 0:
            counters.sample()
        ticks += 1
        await asyncio.sleep(TICK_SECS)


async def _stop_when(stop: asyncio.Event, request_stop: Callable[[], None]) -> None:
    await stop.wait()
    request_stop()


def _unhealthy(session: asyncio.Task[None], supervisor: SessionSupervisor, limit: float) -> str | None:
    """Why the watchdog must not be pinged, or None. The loop running this at all proves it is not blocked."""
    if session.done():
        return "the session supervisor has stopped"
    stuck = supervisor.stuck_seconds()
    if stuck > limit:
        return f"the session supervisor made no progress for {stuck:.0f} s (limit {limit:.0f} s)"
    return None


def run(config: Config, password: Secret, state_dir: Path, config_path: Path | None = None) -> int:
    """The `nwp500d run` entry point: journald-native logging, faulthandler, then the daemon until stopped."""
    faulthandler.enable()  # a watchdog abort (SIGABRT) then leaves every thread's stack in the journal
    setup_logging(config.logging.level, make_redactor(config, password))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_daemon(config, password, state_dir=state_dir, config_path=config_path)).exit_code
    return exitcodes.OK
