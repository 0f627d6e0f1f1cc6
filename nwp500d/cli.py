"""``nwp500d`` command line: one subcommand per job, each with ``--help``; errors are one line and a sysexits code."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nwp500d import __version__, exitcodes
from nwp500d.analysis.classify import Settings as ClassifierSettings
from nwp500d.analysis.classify import classify
from nwp500d.analysis.report import render_html, render_text
from nwp500d.clock import iso_utc, parse_since
from nwp500d.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config, render_config
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.redact import REDACTED, Redactor
from nwp500d.secrets import Secret, load_password
from nwp500d.state import EVENTS_DIR, load_nat_bracket, open_history

PROG = "nwp500d"
REPORT_RETAINED = 10_000_000


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, metavar="PATH",
        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep one NaviLink MQTT session open, record every drop and explain why it happened.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the monitoring daemon (what the systemd unit starts)")
    _add_config(run)

    check = commands.add_parser("check-config", help="validate the configuration and print it, secrets redacted")
    _add_config(check)

    report = commands.add_parser("report", help="summarise the drops recorded in the state directory")
    _add_config(report)
    report.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="state directory (default: from the config, $STATE_DIRECTORY, /var/lib/nwp500)")
    report.add_argument("--format", choices=("text", "json", "html"), default="text",
                        help="output format (default: text; html is one self-contained page)")
    report.add_argument("--since", metavar="WHEN", help="only drops since WHEN: 24h, 7d, 90m or an ISO date/time")

    analyze = commands.add_parser(
        "analyze", help="re-correlate the drops of an exported diagnostics file with a journal, offline"
    )
    analyze.add_argument("export", type=Path, metavar="EXPORT.json")
    journal = analyze.add_mutually_exclusive_group()
    journal.add_argument("--journal-dir", type=Path, metavar="DIR", help="a directory of .journal files")
    journal.add_argument("--journal-export", type=Path, metavar="FILE",
                         help="a `journalctl -o export` file (what a bug report attaches)")
    analyze.add_argument("--before", type=float, default=120.0, metavar="SECS",
                         help="look back this far before the last good moment (default 120)")
    analyze.add_argument("--after", type=float, default=30.0, metavar="SECS",
                         help="look this far past the detection (default 30)")
    analyze.add_argument("--format", choices=("text", "json", "html"), default="text",
                         help="output format (default: text; html is one self-contained page)")

    experiment = commands.add_parser(
        "experiment", help="estimate the NAT idle timeout on the path to the cloud (keep-alive experiment)")
    kinds = experiment.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    keepalive = kinds.add_parser("keepalive", help="hold idle sessions at several keep-alives; bracket the NAT timeout")
    _add_config(keepalive)
    keepalive.add_argument("--rounds", type=int, default=3, help="bisection rounds (default 3; each takes up to "
                                                                "2 x (keep-alive + ping timeout))")
    keepalive.add_argument("--parallel", type=int, default=3, help="sessions held at once per round (default 3)")
    keepalive.add_argument("--min", dest="lo", type=int, default=30, help="smallest keep-alive to try (default 30)")
    keepalive.add_argument("--max", dest="hi", type=int, default=1200, help="largest keep-alive to try (default 1200)")
    keepalive.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")

    demo = commands.add_parser("demo", help="run the real daemon against a local NaviLink simulator with faults")
    demo.add_argument("--duration", type=float, default=60.0, metavar="SECS", help="how long (default 60)")
    demo.add_argument("--state-dir", type=Path, default=Path("nwp500d-demo"), metavar="DIR",
                      help="where the exports are left (default ./nwp500d-demo)")
    demo.add_argument("--seed", type=int, default=None, help="fix the random fault times")

    sim = commands.add_parser("sim", help="start only the NaviLink simulator and print a config for `run`")
    sim.add_argument("--state-dir", type=Path, default=Path("nwp500d-sim"), metavar="DIR",
                     help="state directory to put in the printed config (default ./nwp500d-sim)")
    probe = commands.add_parser("probe", help="check the configured endpoint: DNS, TCP connect and TLS handshake times")
    _add_config(probe)
    probe.add_argument("--count", type=int, default=1, metavar="N", help="probes to run (default 1)")
    probe.add_argument("--interval", type=float, default=5.0, metavar="SECS", help="between probes (default 5)")
    probe.add_argument("--endpoint", metavar="HOST:PORT", help="probe this instead of the configured endpoint")
    probe.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    return parser


def _config(path: Path | None, *, required: bool) -> Config:
    """Load the configuration. Without --config a missing default file means defaults, unless ``required``."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists() and not required:
            return Config()
        path = DEFAULT_CONFIG_PATH
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc), exitcodes.CONFIG) from None


def _config_and_password(path: Path | None) -> tuple[Config, Secret | None]:
    config = _config(path, required=True)
    try:
        return config, load_password(config)
    except ConfigError as exc:
        raise CliError(str(exc), exitcodes.CONFIG) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config, password = _config_and_password(args.config)
    shown = render_config(config, redact=True)
    print(f"# {args.config or DEFAULT_CONFIG_PATH}: valid")
    print(f"# state directory: {config.state_directory()}")
    if password is None:
        print("# password: not found here ($CREDENTIALS_DIRECTORY/navien-password, $NAVIEN_PASSWORD or "
              "account.password_file); the service needs one")
    else:
        print(f"# password: {REDACTED} (from {password.source})")
    print(shown, end="")
    return exitcodes.OK


def cmd_report(args: argparse.Namespace) -> int:
    config = _config(args.config, required=args.config is not None)
    state_dir: Path = args.state_dir or config.state_directory()
    if not (state_dir / EVENTS_DIR).is_dir():
        raise CliError(
            f"{state_dir}: no event log here (expected {state_dir / EVENTS_DIR}/); "
            "is the daemon installed, or pass --state-dir DIR",
            exitcodes.NOINPUT,
        )
    collector = MqttDiagnosticsCollector(
        max_events_retained=REPORT_RETAINED,  # the whole event log, not the daemon's in-memory window
        redactor=Redactor(redact_macs=config.exports.redact_mac_addresses),
    )
    history = open_history(state_dir, config, collector, persist=False)
    now = datetime.now(UTC)
    drops = collector.get_recent_drops(REPORT_RETAINED)
    connections = collector.get_recent_connections(REPORT_RETAINED)
    if args.since:
        try:
            since = iso_utc(parse_since(args.since, now))
        except ValueError as exc:
            raise CliError(str(exc), exitcodes.USAGE) from None
        drops = [d for d in drops if d.timestamp >= since]
        connections = [c for c in connections if c.timestamp >= since]
    analysis = classify(drops, connections=connections, settings=_classifier_settings(config, state_dir))
    title = f"nwp500d report: {state_dir}"
    if args.format == "json":
        print(json.dumps({**analysis.to_dict(), "metrics": collector.get_metrics().to_dict()}, indent=2))
    elif args.format == "html":
        print(render_html(analysis, connections=connections, title=title, generated_at=iso_utc(now)))
    else:
        print(f"state directory: {state_dir} ({len(history.loaded.records)} records "
              f"in {history.loaded.files} files, {len(history.loaded.skipped)} skipped)")
        print(f"last state: {_last_state(history.loaded.records)}")
        print(collector.summary_text())
        print()
        print(render_text(analysis, title=title))
    return exitcodes.OK


def _classifier_settings(config: Config, state_dir: Path | None = None) -> ClassifierSettings:
    return ClassifierSettings(keep_alive_secs=config.mqtt.keep_alive_secs,
                              ping_timeout_secs=config.mqtt.ping_timeout_secs,
                              nat_bracket=load_nat_bracket(state_dir) if state_dir is not None else None)


def _last_state(records: Sequence[dict[str, Any]]) -> str:
    for record in reversed(records):
        kind = record.get("kind")
        if kind == "connection":
            return f"connected since {record.get('timestamp')} ({record.get('event_type')})"
        if kind == "drop":
            return f"dropped at {record.get('timestamp')} ({record.get('error_name') or 'unknown error'})"
        if kind == "disconnect":
            return f"stopped cleanly at {record.get('timestamp')}"
    return "no sessions recorded yet"


def cmd_run(args: argparse.Namespace) -> int:
    config, password = _config_and_password(args.config)
    if not config.account.email:
        raise CliError(f"{args.config or DEFAULT_CONFIG_PATH}: account.email: not set; expected the NaviLink "
                       "sign-in e-mail", exitcodes.CONFIG)
    if password is None:
        raise CliError("no NaviLink password: set LoadCredential=navien-password:..., $NAVIEN_PASSWORD or "
                       "account.password_file", exitcodes.CONFIG)
    from nwp500d.daemon import run

    return run(config, password, config.state_directory(), args.config or DEFAULT_CONFIG_PATH)


def cmd_analyze(args: argparse.Namespace) -> int:
    from nwp500d.analyze import ExportError, analyze, load_export, to_json, to_text
    from nwp500d.journal.export_format import ExportFormatError
    from nwp500d.journal.reader import ExportFile, HostEventSource, JournalUnavailable, SystemdJournal

    try:
        data, drops = load_export(args.export)
    except ExportError as exc:
        raise CliError(str(exc), exitcodes.DATAERR) from None
    source: HostEventSource | None = None
    try:
        if args.journal_dir is not None:
            source = SystemdJournal(args.journal_dir)
        elif args.journal_export is not None:
            source = ExportFile(args.journal_export)
        analyzed = analyze(data, drops, source, before_secs=args.before, after_secs=args.after)
    except ExportFormatError as exc:
        raise CliError(str(exc), exitcodes.DATAERR) from None
    except JournalUnavailable as exc:
        raise CliError(str(exc), exitcodes.NOINPUT) from None
    completed = [dataclasses.replace(item.drop, host_events=item.host_events, correlation=item.correlation)
                 for item in analyzed]
    analysis = classify(completed)
    title = f"nwp500d analyze: {args.export.name}"
    if args.format == "json":
        print(json.dumps({**analysis.to_dict(), "windows": to_json(analyzed)["drops"]}, indent=2))
    elif args.format == "html":
        print(render_html(analysis, title=title, generated_at=iso_utc(datetime.now(UTC))))
    else:
        print(render_text(analysis, title=title))
        print()
        print(to_text(analyzed))
    return exitcodes.OK


def cmd_probe(args: argparse.Namespace) -> int:
    from nwp500d.netdiag.counters import read_counters
    from nwp500d.netdiag.netstat import delta
    from nwp500d.netdiag.probes import EndpointProber

    config = _config(args.config, required=args.config is not None)
    host, port = config.mqtt.endpoint, config.mqtt.effective_port
    if args.endpoint:
        host, sep, port_text = args.endpoint.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise CliError(f"--endpoint {args.endpoint!r}: expected HOST:PORT", exitcodes.USAGE)
        port = int(port_text)
    if args.count < 1 or args.interval < 0:
        raise CliError("--count must be at least 1 and --interval not negative", exitcodes.USAGE)
    prober = EndpointProber(host, port, ca_file=config.mqtt.ca_file, tls=config.mqtt.transport != "tcp",
                            timeout=config.netdiag.probe_timeout_secs)

    async def run() -> list[dict[str, Any]]:
        results = []
        for index in range(args.count):
            result = await prober.probe()
            results.append(result.to_dict())
            if args.format == "text":
                print(result.line(), flush=True)
            if index + 1 < args.count:
                await asyncio.sleep(args.interval)
        return results

    before = read_counters()
    try:
        results = asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    counters = delta(before, read_counters())
    failed = sum(1 for r in results if not r["ok"])
    if args.format == "json":
        print(json.dumps({"endpoint": f"{host}:{port}", "probes": results, "netstat_delta": counters}, indent=2))
    else:
        times = sorted(r["tcp_seconds"] for r in results if r["tcp_seconds"] is not None)
        spread = f"; tcp min/median/max {times[0] * 1000:.0f}/{times[len(times) // 2] * 1000:.0f}/" \
                 f"{times[-1] * 1000:.0f} ms" if times else ""
        print(f"{len(results) - failed} of {len(results)} probes succeeded{spread}")
        print("kernel TCP counters during the run: " + ", ".join(f"{k} +{v}" for k, v in counters.items()))
    return exitcodes.OK if not failed else exitcodes.UNAVAILABLE


def cmd_keepalive_experiment(args: argparse.Namespace) -> int:
    """Separate client ids derived from the stable one, so the monitored session is never disturbed."""
    from nwp500d.clock import SystemClock
    from nwp500d.mqtt.transport import settings_from_config
    from nwp500d.navilink.auth import NaviLinkClient
    from nwp500d.navilink.errors import CredentialsRejected, NaviLinkUnavailable
    from nwp500d.netdiag.keepalive import crt_trial_factory, run_experiment
    from nwp500d.state import save_keepalive_result, stable_client_id

    config, password = _config_and_password(args.config)
    if password is None or not config.account.email:
        raise CliError("the experiment signs in like the daemon: set account.email and a password source "
                       "($NAVIEN_PASSWORD, account.password_file or the systemd credential)", exitcodes.CONFIG)
    if not 1 <= args.lo < args.hi or args.rounds < 1 or args.parallel < 1:
        raise CliError("expected 1 <= --min < --max, and --rounds and --parallel of at least 1", exitcodes.USAGE)
    state_dir = config.state_directory()
    try:
        client_id = config.mqtt.client_id or stable_client_id(state_dir)
    except OSError:
        client_id = config.mqtt.client_id or f"nwp500d-experiment-{os.getpid()}"

    async def run() -> dict[str, Any]:
        async with NaviLinkClient(config.navilink.base_url, config.account.email or "", password.value,
                                  cache_path=None,
                                  request_timeout_secs=config.navilink.request_timeout_secs) as auth:
            await auth.sign_in()
            factory = crt_trial_factory(settings_from_config(config.mqtt, client_id), auth.aws_credentials)
            result = await run_experiment(
                factory, base_client_id=client_id, rounds=args.rounds, parallel=args.parallel, lo_limit=args.lo,
                hi_limit=args.hi, ping_timeout_ms=int(config.mqtt.ping_timeout_secs * 1000),
                on_progress=(lambda p: print(p.text, flush=True)) if args.format == "text" else None,
            )
        if args.format == "text":
            print(result.summary)
        return result.as_dict()

    try:
        data = asyncio.run(run())
    except CredentialsRejected as exc:
        raise CliError(str(exc), exitcodes.NOPERM) from None
    except NaviLinkUnavailable as exc:
        raise CliError(f"NaviLink unavailable: {exc}", exitcodes.UNAVAILABLE) from None
    if args.format == "json":
        print(json.dumps(data, indent=2))
    try:  # the classifier reads the bracket as evidence for nat_idle_timeout
        save_keepalive_result(state_dir, data, finished_at=SystemClock().wall(), source="cli")
    except OSError as exc:
        print(f"{PROG}: note: result not saved in {state_dir} ({exc.strerror})", file=sys.stderr)
    return exitcodes.OK


def cmd_demo(args: argparse.Namespace) -> int:
    if args.duration < 10:
        raise CliError(f"--duration {args.duration:g}: expected at least 10 seconds", exitcodes.USAGE)
    logging.getLogger().setLevel(logging.ERROR)  # the demo prints its own down/up lines
    from nwp500d.sim.broker import BrokerUnavailable
    from nwp500d.sim.demo import run_demo

    try:
        return asyncio.run(run_demo(args.duration, args.state_dir.resolve(), seed=args.seed))
    except BrokerUnavailable as exc:
        raise CliError(str(exc), exitcodes.UNAVAILABLE) from None


def cmd_sim(args: argparse.Namespace) -> int:
    from nwp500d.sim.broker import BrokerUnavailable
    from nwp500d.sim.demo import run_sim

    try:
        return asyncio.run(run_sim(args.state_dir.resolve()))
    except KeyboardInterrupt:
        return exitcodes.OK
    except BrokerUnavailable as exc:
        raise CliError(str(exc), exitcodes.UNAVAILABLE) from None


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "report": cmd_report,
    "analyze": cmd_analyze,
    "demo": cmd_demo,
    "sim": cmd_sim,
    "probe": cmd_probe,
    "experiment": cmd_keepalive_experiment,
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("NWP500D_LOG_LEVEL", "WARNING").upper(),
        format=f"{PROG}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return exitcodes.USAGE if exc.code not in (0, None) else exitcodes.OK
    try:
        return HANDLERS[args.command](args)
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return exitcodes.OK
