"""Configuration: YAML → frozen dataclasses, validated with the file, line and key path of every problem.

Each option is declared once, with its default, its allowed range and a reason; the YAML loader, Python-side
construction (the guide's ``MqttConnectionConfig(...)``) and ``check-config`` all go through the same checks, so a
value that the daemon would refuse is refused everywhere with the same words.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG_PATH = Path("/etc/nwp500d/nwp500d.yaml")
DEFAULT_STATE_DIRECTORY = Path("/var/lib/nwp500")
NAVILINK_BASE_URL = "https://nlus.naviensmartcontrol.com/api/v2.1"
NAVILINK_ENDPOINT = "a1t30mldyslmuq-ats.iot.us-east-1.amazonaws.com"
DEFAULT_PORTS = {"wss-sigv4": 443, "tls": 8883, "tcp": 1883}


class ConfigError(Exception):
    """One line that names the file, line, key path, the value and what is allowed."""


def _opt(default: Any, *, lo: float | None = None, hi: float | None = None, why: str = "",
         special: tuple[Any, ...] = ()) -> Any:
    """A field with range metadata. ``special`` values are allowed outside the range (e.g. -1 = unlimited)."""
    kwargs: dict[str, Any] = {"metadata": {"lo": lo, "hi": hi, "why": why, "special": special}}
    if isinstance(default, list | tuple):
        kwargs["default_factory"] = lambda: tuple(default)
    else:
        kwargs["default"] = default
    return field(**kwargs)


class _Validated:
    """Range checks on construction, so Python callers get the same refusals as the YAML loader."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            problem = field_problem(type(self), item.name, getattr(self, item.name))
            if problem:
                raise ValueError(f"{item.name}: {problem}")
        problems = cross_problems(self)
        if problems:
            key, text = problems[0]
            raise ValueError(f"{key}: {text}")


@dataclass(frozen=True)
class AccountConfig(_Validated):
    email: str | None = _opt(None, why="the NaviLink account (the app's sign-in e-mail)")
    password_file: str | None = _opt(
        None, why="a file only the service user can read; $CREDENTIALS_DIRECTORY/navien-password wins"
    )


@dataclass(frozen=True)
class NaviLinkConfig(_Validated):
    base_url: str = _opt(NAVILINK_BASE_URL, why="NaviLink REST API root")
    request_timeout_secs: float = _opt(30.0, lo=1, hi=300, why="total time for one REST call")
    token_refresh_margin_secs: float = _opt(300.0, lo=0, hi=1800, why="refresh credentials this long before expiry")


@dataclass(frozen=True)
class MqttConnectionConfig(_Validated):
    """The guide's ``MqttConnectionConfig`` (same names and meaning), plus the daemon's transport settings."""

    endpoint: str = _opt(NAVILINK_ENDPOINT, why="AWS IoT endpoint of the NaviLink cloud")
    region: str = _opt("us-east-1", why="AWS region used for SigV4 signing")
    transport: Literal["wss-sigv4", "tls", "tcp"] = _opt(
        "wss-sigv4", why="wss-sigv4 is production; tls/tcp are for local brokers"
    )
    port: int | None = _opt(None, lo=1, hi=65535, why="null: 443 for wss-sigv4, 8883 for tls, 1883 for tcp")
    ca_file: str | None = _opt(None, why="PEM bundle to trust instead of the system store")
    client_id: str | None = _opt(None, why="null: generated once per installation and kept in the state directory")
    clean_session: bool = _opt(False, why="False keeps subscriptions on the broker across reconnects")
    keep_alive_secs: int = _opt(60, lo=30, hi=1200, why="AWS IoT's keep-alive range")
    ping_timeout_secs: float = _opt(10.0, lo=1, hi=60, why="PINGRESP (and CONNACK) deadline; below keep_alive_secs")
    operation_timeout_secs: float = _opt(30.0, lo=1, hi=300, why="deadline for every subscribe/publish ack")
    connect_timeout_secs: float = _opt(30.0, lo=5, hi=300, why="deadline for one whole connect, WebSocket included")
    initial_reconnect_delay: float = _opt(1.0, lo=0.1, hi=300, why="first backoff step (AWS: 1 CONNECT/s floor)")
    max_reconnect_delay: float = _opt(60.0, lo=1, hi=3600, why="backoff cap")
    reconnect_backoff_multiplier: float = _opt(2.0, lo=1, hi=10, why="growth per failed attempt")
    stable_session_secs: float = _opt(60.0, lo=1, hi=86400, why="a session this old resets the backoff")
    deep_reconnect_threshold: int = _opt(5, lo=1, hi=1000, why="failed attempts before a full sign-in")
    max_reconnect_attempts: int = _opt(-1, lo=1, hi=1_000_000, special=(-1,), why="-1 means never give up")
    enable_command_queue: bool = _opt(True, why="queue commands while disconnected")
    max_queued_commands: int = _opt(100, lo=1, hi=10000, why="oldest dropped beyond this")
    max_queued_command_age_secs: float = _opt(300.0, lo=1, hi=86400, why="stale commands are not replayed")
    tcp_keepalive: bool = _opt(False, why="kernel TCP keepalive probes in addition to MQTT pings")
    tcp_keepalive_idle_secs: int = _opt(60, lo=1, hi=7200, why="idle time before the first TCP probe")
    tcp_keepalive_interval_secs: int = _opt(10, lo=1, hi=600, why="gap between TCP probes")
    tcp_keepalive_probes: int = _opt(3, lo=1, hi=30, why="unanswered probes before the socket is closed")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.transport]


@dataclass(frozen=True)
class MonitorConfig(_Validated):
    devices: tuple[str, ...] = _opt((), why="MAC addresses to poll; empty polls every device on the account")
    status_interval_secs: float = _opt(300.0, lo=10, hi=3600, why="status request period (round-trip probe)")
    deaf_after_timeouts: int = _opt(3, lo=1, hi=100, why="unanswered requests before the session is rebuilt")


@dataclass(frozen=True)
class JournalConfig(_Validated):
    enabled: bool = _opt(True, why="correlate drops with host events from the systemd journal")
    directory: str | None = _opt(None, why="null reads the live system journal")
    before_secs: float = _opt(120.0, lo=0, hi=86400, why="look back this far before the last good moment")
    after_secs: float = _opt(30.0, lo=0, hi=3600, why="look this far past the detection")


AWS_IOT_MIN_KEEP_ALIVE_SECS = 30
AWS_IOT_MAX_CLIENT_ID_LENGTH = 128


@dataclass(frozen=True)
class KeepAliveExperimentConfig(_Validated):
    """The daemon's own run of ``nwp500d experiment keepalive``: opt-in, because every round holds extra idle
    sessions (client ids derived from the stable one) open to the cloud for up to 2 x (keep-alive + ping timeout)."""

    enabled: bool = _opt(False, why="opt-in: bracket the NAT idle timeout with extra idle sessions")
    min_secs: int = _opt(30, lo=2, hi=1199, why="smallest keep-alive tried; AWS IoT accepts 30 and more")
    max_secs: int = _opt(1200, lo=3, hi=1200, why="largest keep-alive tried; AWS IoT accepts up to 1200")
    rounds: int = _opt(3, lo=1, hi=10, why="bisection rounds")
    parallel: int = _opt(3, lo=1, hi=8, why="idle sessions held at once in a round")
    start_delay_secs: float = _opt(600.0, lo=0, hi=86400, why="wait this long after the first session is up")
    repeat_days: float = _opt(30.0, lo=0, hi=3650, why="run again once the saved result is this old; 0: never again")
    retry_delay_secs: float = _opt(3600.0, lo=1, hi=86400, why="wait after a discarded, inconclusive or failed run")


@dataclass(frozen=True)
class NetDiagConfig(_Validated):
    enabled: bool = _opt(True, why="probe the endpoint and read kernel TCP counters at each drop")
    probe_timeout_secs: float = _opt(5.0, lo=0.5, hi=60, why="bound on each probe step (DNS, TCP connect, TLS)")
    probe_interval_secs: float = _opt(900.0, lo=60, hi=86400, why="period of the baseline probe between drops")
    link_events: bool = _opt(True, why="watch rtnetlink for link and route changes (cuts the backoff short)")
    keepalive_experiment: KeepAliveExperimentConfig = field(default_factory=KeepAliveExperimentConfig)


@dataclass(frozen=True)
class ExportsConfig(_Validated):
    state_directory: str | None = _opt(None, why="null: $STATE_DIRECTORY, else /var/lib/nwp500")
    interval_secs: float = _opt(300.0, lo=10, hi=86400, why="snapshot period")
    keep_snapshots: int = _opt(288, lo=1, hi=100_000, why="snapshots kept (288 = one day at 5 min)")
    events_max_files: int = _opt(90, lo=1, hi=3650, why="daily event files kept")
    events_max_bytes: int = _opt(50 * 1024 * 1024, lo=64 * 1024, hi=10 * 1024**3, why="event files' total size")
    max_events_retained: int = _opt(1000, lo=10, hi=1_000_000, why="drops and connections kept in memory")
    redact_mac_addresses: bool = _opt(True, why="replace device MACs in exports and logs")


@dataclass(frozen=True)
class MetricsConfig(_Validated):
    listen: str | None = _opt(None, why="host:port for Prometheus /metrics, e.g. 127.0.0.1:9500; null disables")


CrtLogLevel = Literal["off", "fatal", "error", "warn", "info"]


@dataclass(frozen=True)
class LoggingConfig(_Validated):
    level: Literal["debug", "info", "warning", "error"] = _opt("info", why="daemon log level")
    verbose_diagnostics: bool = _opt(False, why="log every recorded event (the guide's enable_verbose_logging)")
    # No debug/trace: at those levels awscrt writes the SigV4-signed WebSocket URL (session token included) to
    # stderr, past the redaction every other log line goes through.
    crt_log_level: Literal["off", "fatal", "error", "warn", "info"] = _opt(
        "warn", why="awscrt's own log, raw on stderr: the detail behind an error name"
    )


@dataclass(frozen=True)
class Config(_Validated):
    account: AccountConfig = field(default_factory=AccountConfig)
    navilink: NaviLinkConfig = field(default_factory=NaviLinkConfig)
    mqtt: MqttConnectionConfig = field(default_factory=MqttConnectionConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    netdiag: NetDiagConfig = field(default_factory=NetDiagConfig)
    exports: ExportsConfig = field(default_factory=ExportsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def state_directory(self, env: Mapping[str, str] | None = None) -> Path:
        if self.exports.state_directory:
            return Path(self.exports.state_directory)
        state = (os.environ if env is None else env).get("STATE_DIRECTORY", "")
        # systemd passes a colon-separated list when a unit names several; ours names one.
        return Path(state.split(":")[0]) if state else DEFAULT_STATE_DIRECTORY


# ---------------------------------------------------------------------------------------------- checks


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (types.UnionType, typing.Union):
        parts = [_describe_type(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return " or ".join(parts) + " or null"
    if origin is tuple:
        return "a list of strings"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _type_ok(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)  # type: ignore[arg-type]
    return False


def field_problem(cls: type[Any], name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of ``cls``, or None. Phrased as "expected …"."""
    item = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = _hints(cls)[name]
    meta = item.metadata
    lo, hi, why = meta.get("lo"), meta.get("hi"), meta.get("why", "")
    expected = _describe_type(hint)
    if lo is not None and hi is not None:
        expected += f" from {_num(lo)} to {_num(hi)}"
        if meta.get("special"):
            expected += " (or " + ", ".join(str(s) for s in meta["special"]) + ")"
    if why:
        expected += f" ({why})"
    if not _type_ok(hint, value):
        return f"expected {expected}"
    if isinstance(value, int | float) and not isinstance(value, bool) and value not in meta.get("special", ()):
        if not math.isfinite(value):
            return f"expected {expected}"
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"out of range; expected {expected}"
    return None


def cross_problems(section: Any) -> list[tuple[str, str]]:
    """Problems that involve two fields of one section: ``[(field, text)]``, reported on the second field."""
    problems: list[tuple[str, str]] = []
    if isinstance(section, MqttConnectionConfig):
        if section.ping_timeout_secs >= section.keep_alive_secs:
            problems.append(("ping_timeout_secs", "must be shorter than mqtt.keep_alive_secs"))
        if section.max_reconnect_delay < section.initial_reconnect_delay:
            problems.append(("max_reconnect_delay", "must not be below mqtt.initial_reconnect_delay"))
        if section.transport == "wss-sigv4" and not section.region:
            problems.append(("region", "must be set for wss-sigv4 signing"))
        if not section.endpoint:
            problems.append(("endpoint", "must not be empty"))
    if isinstance(section, MetricsConfig) and section.listen is not None:
        host, sep, port = section.listen.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 5) \
                or not 1 <= int(port) <= 65535:
            problems.append(("listen", "expected host:port, e.g. 127.0.0.1:9500"))
    if isinstance(section, KeepAliveExperimentConfig) and section.max_secs <= section.min_secs:
        problems.append(("max_secs", "must be above min_secs"))
    if isinstance(section, Config):
        problems.extend(_experiment_problems(section))
    if isinstance(section, MonitorConfig):
        for mac in section.devices:
            cleaned = mac.replace(":", "").replace("-", "").lower()
            if len(cleaned) != 12 or any(c not in "0123456789abcdef" for c in cleaned):
                problems.append(("devices", f"{mac!r} is not a MAC address (12 hex digits)"))
    return problems


def _experiment_problems(config: Config) -> list[tuple[str, str]]:
    """The experiment's keep-alives against the session settings they share (two sections: dotted keys)."""
    experiment = config.netdiag.keepalive_experiment
    if not experiment.enabled:  # settings that are never used do not make a configuration unusable
        return []
    key = "netdiag.keepalive_experiment.min_secs"
    if experiment.min_secs <= config.mqtt.ping_timeout_secs:
        return [(key, f"must be longer than mqtt.ping_timeout_secs ({_num(config.mqtt.ping_timeout_secs)})")]
    on_aws = config.mqtt.endpoint.lower().rstrip(".").endswith(".amazonaws.com")
    if experiment.min_secs < AWS_IOT_MIN_KEEP_ALIVE_SECS and on_aws:
        return [(key, f"AWS IoT refuses keep-alives below {AWS_IOT_MIN_KEEP_ALIVE_SECS} s (smaller values are for "
                      "local brokers)")]
    client_id = config.mqtt.client_id
    longest = f"-ka{experiment.max_secs}"
    if client_id is not None and len(client_id) + len(longest) > AWS_IOT_MAX_CLIENT_ID_LENGTH:
        return [("mqtt.client_id", f"too long for the experiment's trial ids (<client_id>{longest} must fit in "
                                   f"{AWS_IOT_MAX_CLIENT_ID_LENGTH} characters)")]
    return []


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: Path | str) -> Config:
    """Read and validate ``path``. Raises ConfigError with one line naming the file, line, key and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (pass --config PATH, or install etc/nwp500d/nwp500d.yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return Config()
        return typing.cast(Config, _build(Config, root, source, ""))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"{source}:{line}: not valid YAML: {_one_line(str(exc.problem))}") from None
    except yaml.YAMLError as exc:  # e.g. a control character in the file
        raise ConfigError(f"{source}: not valid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid here: nested deeper than any configuration needs") from None


def _one_line(text: str) -> str:
    """Error messages quote the file; they must stay one line whatever the file holds."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:300]


def _where(source: str, node: yaml.Node) -> str:
    return f"{source}:{node.start_mark.line + 1}"


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _build(cls: type[Any], node: yaml.Node, source: str, prefix: str) -> Any:
    label = prefix.rstrip(".") or "top level"
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(source, node)}: {label}: expected a mapping of keys, got {_node_kind(node)}")
    names = {f.name for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values: dict[str, Any] = {}
    lines: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else "expected one of: " + ", ".join(sorted(names))
            raise ConfigError(f"{_where(source, key_node)}: {prefix}{_one_line(str(key))[:60]}: unknown key; {hint}")
        if key in values:
            raise ConfigError(f"{_where(source, key_node)}: {prefix}{key}: given twice")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(typing.cast(type[Any], hint), value_node, source, f"{prefix}{key}.")
        else:
            value = _scalar(value_node, hint, source, f"{prefix}{key}")
            problem = field_problem(cls, key, value)
            if problem:
                raise ConfigError(f"{_where(source, value_node)}: {prefix}{key}: {_show(value)}: {problem}")
            values[key] = float(value) if hint is float else value
        lines[key] = value_node
    instance = object.__new__(cls)
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
    for name in names:
        object.__setattr__(instance, name, values.get(name, defaults[name]))
    for key, text in cross_problems(instance):
        at = _value_node(node, key) or lines.get(key, node)
        raise ConfigError(f"{_where(source, at)}: {prefix}{key}: {_show(_dotted(instance, key))}: {text}")
    return instance


def _dotted(instance: Any, key: str) -> Any:
    for name in key.split("."):
        instance = getattr(instance, name)
    return instance


def _value_node(node: yaml.Node, key: str) -> yaml.Node | None:
    """Where a (dotted) key's value was written, or None if the file left it at its default."""
    for name in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        found = [value for k, value in node.value if isinstance(k, yaml.ScalarNode) and k.value == name]
        if not found:
            return None
        node = found[0]
    return node


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()  # type: ignore[operator]


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return _show(node.value)


def _scalar(node: yaml.Node, hint: Any, source: str, path: str) -> Any:
    if isinstance(node, yaml.SequenceNode):
        if typing.get_origin(hint) is tuple:
            items = []
            for item in node.value:
                if not isinstance(item, yaml.ScalarNode):
                    raise ConfigError(f"{_where(source, item)}: {path}: list items must be strings")
                items.append(_construct(item, source, path))
            return tuple(items)
        raise ConfigError(f"{_where(source, node)}: {path}: got a list; expected {_describe_type(hint)}")
    if isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(source, node)}: {path}: got a mapping; expected {_describe_type(hint)}")
    value = _construct(node, source, path)
    if typing.get_origin(hint) is tuple and value is None:
        return ()
    return value


def _construct(node: yaml.Node, source: str, path: str) -> Any:
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # An unknown tag (!foo), an impossible date (2001-13-45), !!int abc, a 5000-digit number…
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{_where(source, node)}: {path}: cannot read this value: {_one_line(str(problem))}") \
            from None


def render_config(config: Config, *, redact: bool = True) -> str:
    """The effective configuration as YAML, every key shown (``check-config``); the e-mail hidden by default."""
    plain = _plain(config)
    if redact and plain["account"]["email"]:
        plain["account"]["email"] = "**REDACTED**"
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def config_summary(config: Config) -> dict[str, Any]:
    """What an export says about the configuration: settings that explain drops, nothing identifying."""
    mqtt = config.mqtt
    return {
        "transport": mqtt.transport,
        "port": mqtt.effective_port,
        "keep_alive_secs": mqtt.keep_alive_secs,
        "ping_timeout_secs": mqtt.ping_timeout_secs,
        "clean_session": mqtt.clean_session,
        "initial_reconnect_delay": mqtt.initial_reconnect_delay,
        "max_reconnect_delay": mqtt.max_reconnect_delay,
        "deep_reconnect_threshold": mqtt.deep_reconnect_threshold,
        "tcp_keepalive": mqtt.tcp_keepalive,
        "status_interval_secs": config.monitor.status_interval_secs,
        "journal_enabled": config.journal.enabled,
    }
