"""A client / router / broker lab in throw-away network namespaces, with a real NAT between the daemon and its broker.

Why a lab instead of the loopback simulator: the faults that matter in the field (a NAT forgetting an idle mapping,
loss, a middlebox reset, a dead path, a local link going away) happen in the kernel between two hosts, and their
evidence (TCP counters, rtnetlink events, conntrack) is per network namespace. Only real namespaces reproduce them
with the kernel's own timing; the measured recipes are in reference/netns-lab.md, and this module follows them.

Topology (addresses from the documentation ranges, which the root namespace has no route to)::

    client ns  eth0 198.51.100.2 --- lan0 198.51.100.1  router ns  wan0 203.0.113.1 --- eth0 203.0.113.2  broker ns
    (the daemon)                      forwarding, nft masquerade, conntrack        (mosquitto, fake NaviLink REST)

The broker gets no route back to the client, so replies only work through the NAT mapping. The router's conntrack
has a short established timeout, ``nf_conntrack_tcp_loose=0`` (no mid-stream pickup of a forgotten flow) and drops
``ct state invalid`` at prerouting: a packet whose mapping expired vanishes silently, as on a home router, instead
of reaching the router's own stack and drawing an RST. Faults are rules in one nft chain (``faults``) on the
router's forward path, flushed to restore; the link faults act on the client's eth0.

Everything is created inside namespaces this module made (veths are created across namespaces directly, so no
interface ever appears in the root namespace), and teardown always runs: every process it started is stopped by
its own pid (TERM, then KILL), then every namespace is deleted, on success, failure, timeout or KeyboardInterrupt.
Processes also get a parent-death SIGKILL (``setpriv --pdeathsig``), so a SIGKILLed test run takes them along; the
namespaces such a run leaves behind are swept at the next start, only those whose creating process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from nwp500d.store import EventStore

REPO = Path(__file__).resolve().parents[2]

CLIENT_ADDRESS = "198.51.100.2"
GATEWAY = "198.51.100.1"
ROUTER_WAN = "203.0.113.1"
BROKER_ADDRESS = "203.0.113.2"
MQTT_PORT = 1883
REST_PORT = 8080

EMAIL = "lab@nwp500d.invalid"
PASSWORD = "lab-password-not-secret"
# Not the account's device (FakeNaviLink lists 02005e0f5001): the daemon finds nothing to poll, so the session
# stays idle and only MQTT pings cross the NAT, which is what the keep-alive and NAT faults are about.
ABSENT_DEVICE = "02005e0f5099"

NS_PREFIX = "nwpnat"
_OUR_NAMESPACE = re.compile(rf"^{NS_PREFIX}(?P<pid>\d+)x[0-9a-f]+-[crb]$")
COMMAND_TIMEOUT = 10.0
READY_TIMEOUT = 20.0
STOP_GRACE = 5.0
DAEMON_STOP_GRACE = 15.0  # a clean stop may wait out the 5 s DISCONNECT deadline on a dead path

# Runs inside the broker namespace: the NaviLink REST API where the cloud would be, reached through the NAT.
# It stops when its stdin closes, so the normal stop needs no signal at all.
REST_SERVER = """
import asyncio, os, sys
from nwp500d.sim.rest import FakeNaviLink

async def main():
    navilink = FakeNaviLink(email=sys.argv[1], password=sys.argv[2], host=sys.argv[3], port=int(sys.argv[4]))
    await navilink.start()
    print("ready", navilink.base_url, flush=True)
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    loop.add_reader(0, lambda: os.read(0, 4096) or closed.set())
    await closed.wait()
    loop.remove_reader(0)
    print("requests", navilink.requests, "sign-ins", navilink.sign_ins, flush=True)
    await navilink.stop()

asyncio.run(main())
"""


class LabError(RuntimeError):
    """The lab could not be built or a lab command failed; the message carries the command's own error text."""


def lab_problem() -> str | None:
    """Why the lab cannot run here (tests skip with this), or None."""
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, veth pairs and nft rules"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian packages iproute2, nftables)"
    if _mosquitto() is None:
        return "mosquitto is not installed (Debian package mosquitto)"
    return None


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """One bounded command; a failure raises with its stderr, because a half-built lab must not go unnoticed."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no result within {timeout} s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


# ---------------------------------------------------------------------------------------------- processes


class Line(NamedTuple):
    at: float  # time.monotonic() when the line was read: the same clock as the tests' own stamps
    text: str
    number: int  # position in the process's output, for ``start=``


class LabProcess:
    """A process in a namespace whose output is kept line by line, so callers wait for what it says, not for time.

    stdout and stderr are merged into one stream read by a thread (a chatty process must never block on a full
    pipe while a test is waiting elsewhere) and copied to ``log_path``. Only ``popen`` ever reaps the child, so
    signalling through it can never hit a recycled pid.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 stdin_pipe: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self._lines: list[Line] = []
        self._changed = threading.Condition()
        self._eof = False
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"lab-{name}-{self.popen.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        with self.log_path.open("ab") as sink:
            for raw in stream:
                sink.write(raw)
                sink.flush()
                with self._changed:
                    self._lines.append(Line(time.monotonic(), raw.decode(errors="replace").rstrip("\n"),
                                            len(self._lines)))
                    self._changed.notify_all()
        stream.close()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def mark(self) -> int:
        """Position of the next line: pass it as ``start`` to wait only for what is said from now on."""
        with self._changed:
            return len(self._lines)

    def lines(self) -> list[Line]:
        with self._changed:
            return list(self._lines)

    def tail(self, count: int = 30) -> str:
        return "\n".join(line.text for line in self.lines()[-count:]) or "(no output)"

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, *, start: int = 0,
                 what: str | None = None) -> tuple[Line, re.Match[str]]:
        """The first line from ``start`` on that matches; raises (with the output's tail) at the deadline or exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        position = start
        with self._changed:
            while True:
                while position < len(self._lines):
                    line = self._lines[position]
                    position += 1
                    if (found := regex.search(line.text)) is not None:
                        return line, found
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    ended = f"it exited ({self.popen.poll()})" if self._eof else f"nothing within {timeout:g} s"
                    raise LabError(f"{self.name}: waiting for {what or regex.pattern!r}: {ended}; last lines:\n"
                                   f"{self.tail()}")
                self._changed.wait(remaining)

    def find(self, pattern: str | re.Pattern[str], *, start: int = 0) -> list[tuple[Line, re.Match[str]]]:
        """Every matching line said so far (no waiting)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return [(line, found) for line in self.lines()[start:] if (found := regex.search(line.text)) is not None]

    def close_stdin(self) -> None:
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = STOP_GRACE) -> int:
        """``sig`` (after closing stdin), then SIGKILL if it is still there after ``grace``; returns the exit code."""
        self.close_stdin()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(grace)
        self._reader.join(grace)
        return self.popen.returncode


# ---------------------------------------------------------------------------------------------- the daemon


@dataclass(frozen=True)
class DaemonOptions:
    """The settings the lab's faults are about; the rest of the configuration is fixed by ``Lab.daemon_config``."""

    keep_alive_secs: int = 30
    ping_timeout_secs: float = 5.0
    initial_reconnect_delay: float = 1.0
    max_reconnect_delay: float = 60.0
    reconnect_backoff_multiplier: float = 2.0
    stable_session_secs: float = 5.0
    connect_timeout_secs: float = 5.0
    link_events: bool = True
    correlation_after_secs: float = 1.0  # with the journal disabled this only delays the drop_completed record


_UP = re.compile(r"MQTT session up \((?P<kind>\w+)\)")
_DOWN = re.compile(r"MQTT session down after (?P<seconds>[\d.]+) s: (?P<error>\S+)")
_BACK = re.compile(r"MQTT session back after (?P<seconds>[\d.]+) s down \((?P<kind>\w+), attempt (?P<attempt>\d+)\)")
_WOKEN = re.compile(r"network is back \((?P<event>.*)\): reconnecting now")


@dataclass(frozen=True)
class Drop:
    at: float  # monotonic, when the daemon's log line was read
    error: str
    session_seconds: float


@dataclass(frozen=True)
class Back:
    at: float
    down_seconds: float
    kind: str
    attempt: int


class LabDaemon:
    """The real daemon (``python -m nwp500d run``) in the client namespace, watched through its own log lines.

    The log says when the session goes up, down and comes back the moment it happens (INFO lines on stderr);
    the records in the state directory are the results the assertions read.
    """

    def __init__(self, process: LabProcess, state_dir: Path, config_path: Path) -> None:
        self.process = process
        self.state_dir = state_dir
        self.config_path = config_path

    def wait_up(self, timeout: float, *, start: int = 0) -> float:
        line, _found = self.process.wait_for(_UP, timeout, start=start, what="the first MQTT session")
        return line.at

    def wait_idle(self, timeout: float, *, start: int = 0) -> float:
        """Until the start-up REST calls are over (the device list found nothing to poll): from then on the only
        traffic is MQTT pings, so a fault installed now meets a known sequence of packets."""
        line, _found = self.process.wait_for(r"no devices to poll", timeout, start=start, what="the idle session")
        return line.at

    def wait_down(self, timeout: float, *, start: int = 0) -> Drop:
        line, found = self.process.wait_for(_DOWN, timeout, start=start, what="a drop")
        return Drop(line.at, found["error"], float(found["seconds"]))

    def wait_back(self, timeout: float, *, start: int = 0) -> Back:
        line, found = self.process.wait_for(_BACK, timeout, start=start, what="the session coming back")
        return Back(line.at, float(found["seconds"]), found["kind"], int(found["attempt"]))

    def drops_logged(self, *, start: int = 0) -> list[Drop]:
        return [Drop(line.at, found["error"], float(found["seconds"]))
                for line, found in self.process.find(_DOWN, start=start)]

    def wakes_logged(self, *, start: int = 0) -> list[tuple[float, str]]:
        return [(line.at, found["event"]) for line, found in self.process.find(_WOKEN, start=start)]

    def records(self) -> list[dict[str, Any]]:
        return EventStore(self.state_dir / "events").load().records

    def completed_drops(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The first ``count`` drop_completed records. They are written ``correlation_after_secs`` after each drop
        (plus the endpoint probe) and nothing announces them, so this polls the event log, under a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            done = [r for r in self.records() if r.get("kind") == "drop_completed"]
            if len(done) >= count:
                return done[:count]
            if time.monotonic() > deadline:
                raise LabError(f"{len(done)} of {count} drop_completed records within {timeout:g} s; daemon log:\n"
                               f"{self.process.tail()}")
            time.sleep(0.2)

    def drop_records(self) -> list[dict[str, Any]]:
        """Each drop as first recorded (network evidence at the moment of the drop), merged with its completion
        (cause, subcause, the endpoint probe), keyed by drop id, in order."""
        merged: dict[str, dict[str, Any]] = {}
        for record in self.records():
            drop_id = record.get("drop_id")
            if not isinstance(drop_id, str):
                continue
            if record.get("kind") == "drop":
                merged[drop_id] = dict(record)
            elif record.get("kind") == "drop_completed" and drop_id in merged:
                entry = merged[drop_id]
                network = dict(entry.get("network") or {})
                network.update(record.get("network") or {})
                entry.update({k: v for k, v in record.items() if k not in ("kind", "network", "id", "timestamp")})
                entry["network"] = network
                entry["completed"] = True
        return list(merged.values())

    def report(self) -> dict[str, Any]:
        """``nwp500d report --format json``: the CLI's own reading of the state directory (no namespace needed)."""
        done = run([sys.executable, "-m", "nwp500d", "report", "--config", str(self.config_path), "--state-dir",
                    str(self.state_dir), "--format", "json"], timeout=60)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def stop(self) -> int:
        return self.process.stop(signal.SIGTERM, DAEMON_STOP_GRACE)


# ---------------------------------------------------------------------------------------------- the lab


class Lab:
    """One client/router/broker lab. ``up()`` builds it (and removes what it built if that fails); ``down()`` always
    leaves nothing behind and may be called any number of times."""

    def __init__(self, directory: Path, *, nat_timeout: int, label: str = "lab") -> None:
        ident = f"{NS_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.client, self.router, self.broker = f"{ident}-c", f"{ident}-r", f"{ident}-b"
        self.label = label
        self.nat_timeout = nat_timeout
        self.directory = directory / label
        self.directory.mkdir(parents=True, exist_ok=True)
        self._namespaces: list[str] = []
        self._processes: list[LabProcess] = []
        self.mosquitto: LabProcess | None = None
        self.rest: LabProcess | None = None
        self.rest_url = f"http://{BROKER_ADDRESS}:{REST_PORT}/api/v2.1"

    # -------------------------------------------------------------- building and removing

    def up(self) -> None:
        try:
            self._build_network()
            self.mosquitto = self._start_mosquitto()
            self.rest = self._start_rest()
            self._check_path()
        except BaseException:
            self.down()
            raise

    def _build_network(self) -> None:
        c, r, b = self.client, self.router, self.broker
        for name in (c, r, b):
            run(["ip", "netns", "add", name])
            self._namespaces.append(name)
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "lan0", "netns", r])
        run(["ip", "-n", b, "link", "add", "eth0", "type", "veth", "peer", "name", "wan0", "netns", r])
        run(["ip", "-n", c, "addr", "add", f"{CLIENT_ADDRESS}/24", "dev", "eth0"])
        run(["ip", "-n", r, "addr", "add", f"{GATEWAY}/24", "dev", "lan0"])
        run(["ip", "-n", r, "addr", "add", f"{ROUTER_WAN}/24", "dev", "wan0"])
        run(["ip", "-n", b, "addr", "add", f"{BROKER_ADDRESS}/24", "dev", "eth0"])
        for ns, dev in ((c, "eth0"), (r, "lan0"), (r, "wan0"), (b, "eth0")):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", c, "route", "add", "default", "via", GATEWAY])  # the broker gets none: replies need NAT
        # Conntrack sysctls are per namespace on this kernel: only the router's change.
        run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1",
             "net.netfilter.nf_conntrack_tcp_loose=0",
             f"net.netfilter.nf_conntrack_tcp_timeout_established={self.nat_timeout}"])
        run(["ip", "netns", "exec", r, "nft", "-f", "-"], stdin=_ROUTER_RULES)
        shown = run(["ip", "netns", "exec", r, "sysctl", "-n",
                     "net.netfilter.nf_conntrack_tcp_timeout_established"]).stdout.strip()
        if shown != str(self.nat_timeout):
            raise LabError(f"the router's established timeout reads {shown}, not {self.nat_timeout}")

    def _start_mosquitto(self) -> LabProcess:
        executable = _mosquitto()
        assert executable is not None
        config = self.directory / "mosquitto.conf"
        lines = [f"listener {MQTT_PORT} {BROKER_ADDRESS}", "allow_anonymous true", "persistence false",
                 # As root, stay root: no setuid, so the parent-death signal survives and the pid stays ours.
                 *(["user root"] if os.geteuid() == 0 else []),
                 # stderr, not stdout: mosquitto block-buffers stdout into a pipe.
                 "log_dest stderr", "log_type all", "log_timestamp true", "connection_messages true"]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        process = self.spawn("mosquitto", self.broker, [executable, "-c", str(config)])
        process.wait_for(r"mosquitto version \S+ running", READY_TIMEOUT, what="mosquitto running")
        return process

    def _start_rest(self) -> LabProcess:
        process = self.spawn("rest", self.broker,
                             [sys.executable, "-c", REST_SERVER, EMAIL, PASSWORD, BROKER_ADDRESS, str(REST_PORT)],
                             stdin_pipe=True)
        process.wait_for(r"^ready ", READY_TIMEOUT, what="the REST server")
        return process

    def _check_path(self) -> None:
        """One TCP connect from the client to the broker, which must arrive from the router's address: proof that
        forwarding and masquerade work before any test relies on them."""
        assert self.mosquitto is not None
        start = self.mosquitto.mark()
        run(["ip", "netns", "exec", self.client, "bash", "-c",
             f"exec 3<>/dev/tcp/{BROKER_ADDRESS}/{MQTT_PORT}"], timeout=COMMAND_TIMEOUT)
        line, _ = self.mosquitto.wait_for(r"New connection from (\S+):\d+", READY_TIMEOUT, start=start,
                                          what="the path check's connection")
        if f"from {ROUTER_WAN}:" not in line.text:
            raise LabError(f"the broker saw the client without NAT: {line.text}")

    def down(self) -> list[str]:
        """Stop every process (newest first), then delete every namespace; returns what could not be undone."""
        problems: list[str] = []
        for process in reversed(self._processes):
            try:
                grace = DAEMON_STOP_GRACE if process.name.startswith("daemon") else STOP_GRACE
                process.stop(signal.SIGTERM, grace)
            except Exception as exc:  # noqa: BLE001 - the rest must still be stopped and the namespaces deleted
                problems.append(f"stopping {process.name} (pid {process.pid}): {exc}")
        self._processes.clear()
        for name in reversed(self._namespaces):
            done = run(["ip", "netns", "del", name], check=False)
            if done.returncode != 0 and Path("/run/netns", name).exists():
                problems.append(f"ip netns del {name}: {done.stderr.strip()}")
        self._namespaces.clear()
        return problems

    # -------------------------------------------------------------- processes

    def spawn(self, name: str, namespace: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              stdin_pipe: bool = False) -> LabProcess:
        """Start ``argv`` in ``namespace`` as a subprocess: nothing in this process ever changes its own namespace
        (awscrt's threads would inherit whichever one was current)."""
        prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        process = LabProcess(f"{name}@{self.label}", [*prefix, "ip", "netns", "exec", namespace, *argv],
                             self.directory / f"{name}.log", env=env, stdin_pipe=stdin_pipe)
        self._processes.append(process)
        return process

    def daemon_config(self, state_dir: Path, options: DaemonOptions) -> Path:
        text = f"""\
account:
  email: {EMAIL}
navilink:
  base_url: {self.rest_url}
  request_timeout_secs: 5
mqtt:
  endpoint: {BROKER_ADDRESS}
  port: {MQTT_PORT}
  transport: tcp
  keep_alive_secs: {options.keep_alive_secs}
  ping_timeout_secs: {options.ping_timeout_secs}
  connect_timeout_secs: {options.connect_timeout_secs}
  initial_reconnect_delay: {options.initial_reconnect_delay}
  max_reconnect_delay: {options.max_reconnect_delay}
  reconnect_backoff_multiplier: {options.reconnect_backoff_multiplier}
  stable_session_secs: {options.stable_session_secs}
monitor:
  devices: ["{ABSENT_DEVICE}"]
journal:
  enabled: false
  after_secs: {options.correlation_after_secs}
netdiag:
  enabled: true
  link_events: {"true" if options.link_events else "false"}
  probe_timeout_secs: 2
exports:
  state_directory: {state_dir}
  interval_secs: 10
logging:
  level: info
  crt_log_level: warn
"""
        path = self.directory / f"nwp500d-{state_dir.name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def start_daemon(self, state_dir: Path, options: DaemonOptions, *, name: str = "daemon") -> LabDaemon:
        config = self.daemon_config(state_dir, options)
        # Plain stderr logging, no systemd protocol: nothing may reach a journal or notify socket of the host.
        hidden = ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY",
                  "CREDENTIALS_DIRECTORY", "NWP500D_LOG_LEVEL")
        env = {key: value for key, value in os.environ.items() if key not in hidden}
        env.update(NAVIEN_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        process = self.spawn(name, self.client, [sys.executable, "-m", "nwp500d", "run", "--config", str(config)],
                             env=env)
        return LabDaemon(process, state_dir, config)

    # -------------------------------------------------------------- faults

    def nft(self, command: str) -> None:
        run(["ip", "netns", "exec", self.router, "nft", command])

    def _fault(self, action: str, port: int | None) -> None:
        """``port`` limits a fault to the flows to that server port, both directions (the conntrack original
        tuple matches replies too); None hits everything forwarded."""
        scope = f"meta l4proto tcp ct original proto-dst {port} " if port is not None else ""
        self.nft(f"add rule ip lab faults {scope}{action}")

    def loss_every(self, nth: int, *, port: int | None = None) -> None:
        """Every ``nth`` matching packet dropped: reproducible to the packet (numgen inc counts both directions,
        and only packets that reach the rule)."""
        self._fault(f"numgen inc mod {nth} == 0 counter drop", port)

    def loss_burst(self, dropped: int, of: int, *, port: int | None = None) -> None:
        """``dropped`` consecutive packets of every ``of`` matching ones lost: a burst pattern, as reproducible."""
        self._fault(f"numgen inc mod {of} < {dropped} counter drop", port)

    def loss_random(self, percent: int, *, port: int | None = None) -> None:
        self._fault(f"numgen random mod 100 < {percent} counter drop", port)

    def reset_flows(self, *, port: int | None = None) -> None:
        """A middlebox that answers every forwarded TCP segment with an RST (whichever end sent it gets one)."""
        self._fault("meta l4proto tcp counter reject with tcp reset", port)

    def blackhole(self, *, port: int | None = None) -> None:
        """Everything forwarded is dropped, both directions; sockets stay open and learn nothing."""
        self._fault("counter drop", port)

    def clear_faults(self) -> None:
        self.nft("flush chain ip lab faults")

    def fault_packets(self) -> int:
        """Packets the fault rules have matched so far (proof that a fault actually hit traffic)."""
        return self._counted("faults")

    def invalid_drops(self, *, mqtt_only: bool = False) -> int:
        """Packets dropped as ``ct state invalid``: packets of a flow whose NAT mapping had expired. ``mqtt_only``
        counts the MQTT flows alone (an idle HTTP keep-alive connection of the REST client expires too)."""
        return self._counted("prerouting_f", comment="mqtt" if mqtt_only else None)

    def _counted(self, chain: str, *, comment: str | None = None) -> int:
        done = run(["ip", "netns", "exec", self.router, "nft", "-j", "list", "chain", "ip", "lab", chain])
        total = 0
        for item in json.loads(done.stdout).get("nftables", []):
            rule = item.get("rule", {})
            if comment is not None and rule.get("comment") != comment:
                continue
            for expr in rule.get("expr", []):
                if isinstance(expr, dict) and "counter" in expr:
                    total += int(expr["counter"].get("packets", 0))
        return total

    def link_down(self) -> None:
        """The client's own interface set down: carrier gone, and the kernel flushes its routes silently."""
        run(["ip", "-n", self.client, "link", "set", "eth0", "down"])

    def link_up(self) -> None:
        """Interface up, and the default route put back the way a DHCP client would, in one ``ip -batch`` run."""
        run(["ip", "-n", self.client, "-batch", "-"],
            stdin=f"link set eth0 up\nroute replace default via {GATEWAY}\n")


_ROUTER_RULES = """\
table ip lab {
  chain prerouting_f {
    type filter hook prerouting priority -150; policy accept;
    ct state invalid tcp dport 1883 counter drop comment "mqtt"
    ct state invalid tcp sport 1883 counter drop comment "mqtt"
    ct state invalid counter drop comment "no conntrack entry: an expired NAT mapping, never picked up mid-stream"
  }
  chain forward_f { type filter hook forward priority 0; policy accept; jump faults; }
  chain faults { }
  chain postrouting_nat { type nat hook postrouting priority srcnat; policy accept; oifname "wan0" masquerade; }
}
"""


# ---------------------------------------------------------------------------------------------- several labs


_swept = False


def sweep_stale_labs() -> list[str]:
    """Delete the namespaces of lab runs that were SIGKILLed (their creating pid is gone), killing what still
    runs inside them first. Namespaces of a live run, or anyone else's, are never touched."""
    removed: list[str] = []
    try:
        names = sorted(entry.name for entry in Path("/run/netns").iterdir())
    except FileNotFoundError:
        return removed
    for name in names:
        match = _OUR_NAMESPACE.match(name)
        if match is None or Path("/proc", match["pid"]).exists():
            continue
        pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


class LabSet:
    """Context manager for the labs of one test (several may run side by side: same addresses, separate
    namespaces). Every lab made through it is torn down on exit, whatever happened; teardown problems are raised
    only when nothing else already failed, so they never mask the real error."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._labs: list[Lab] = []

    def __enter__(self) -> LabSet:
        global _swept  # noqa: PLW0603 - once per process: a stale lab can only come from an earlier run
        if not _swept:
            sweep_stale_labs()
            _swept = True
        return self

    def lab(self, *, nat_timeout: int, label: str | None = None) -> Lab:
        lab = Lab(self.directory, nat_timeout=nat_timeout, label=label or f"lab{len(self._labs) + 1}")
        self._labs.append(lab)
        lab.up()
        return lab

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        problems: list[str] = []
        for lab in reversed(self._labs):
            problems += lab.down()
        self._labs.clear()
        if problems and exc is None:
            raise LabError("lab teardown left something behind: " + "; ".join(problems))


@contextlib.contextmanager
def lab_set(directory: Path) -> Iterator[LabSet]:
    """``with lab_set(tmp_path) as labs: lab = labs.lab(nat_timeout=20)``; the pytest fixture wraps this."""
    with LabSet(directory) as labs:
        yield labs
