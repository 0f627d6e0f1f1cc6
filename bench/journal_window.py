"""Correlation-query benchmark: nwp500d's journal window against journalctl, on a 1 M-entry journal, in the same run.

What the daemon does for every drop is ``SystemdJournal(directory).window(t - 5 min, t + 5 min)``: a fresh Reader,
the indexed matches of ``nwp500d.journal.events.JOURNAL_MATCHES`` (one OR-ed disjunct each), ``seek_realtime`` and
``normalize`` on each entry. The obvious alternative is to shell out to journalctl and parse its JSON, so every figure
is printed next to that, timed minutes apart on the same files:

* ``journalctl -D DIR --since @A --until @B F1=v1 + F2=v2 + ... -o json``: exactly our disjunction ("exact");
* ``journalctl -D DIR --since @A --until @B -u U1 -u U2 ... -o json``: the units of our matches only ("-u"), the
  way the research note measured it. ``-u`` cannot express the kernel / MESSAGE_ID / identifier disjuncts, and it
  adds PID 1's lines about those units (``_PID=1 UNIT=...``), so its entry count differs; it is shown, not hidden.

Both journalctl figures include the subprocess and ``json.loads`` of every line, as the daemon would pay them.

The journal is synthetic but shaped like a real one (research note §2-§4): 1,000,000 entries over 30 days, about
20 services (most of the volume from unrelated ones: nginx, sshd, docker, postgres ...) plus kernel lines, a reboot
about every 5 days, suspends with the monotonic clock standing still, Wi-Fi drops, link flaps, DNS and NTP trouble,
all in the real message formats. It is generated as Journal Export Format text, streamed (never held in memory) into
``systemd-journal-remote``, which rotates it into several ``.journal`` files as journald would. The result is cached
outside the repo (``${XDG_CACHE_HOME:-~/.cache}/nwp500d-bench/journal-1m-v1/``) with a marker written only after
the written entry count was checked; a later run reuses it. ``--rebuild`` forces a new one.

Window centres are fixed offsets from the start (early +3 h, middle +15 d, late +29.5 d), kept clear of suspends and
reboots so each window holds a normal amount of traffic. Each query runs once unmeasured (warm page cache), then the
median of ``--runs`` timed runs is reported, the three queries interleaved and their order rotated per run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import (
    KILL_GRACE_SECS,
    REPO,
    BenchError,
    add_json_flag,
    exit_on_sigterm,
    fail,
    finish,
    gc_paused,
    kill_group_now,
    new_parser,
    popen,
    positive_int,
    print_columns,
    progress,
    run_command,
    version,
)

from nwp500d.journal.export_format import format_export

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
CORPUS_VERSION = 1  # bump whenever the generator changes what it writes: the cache directory name carries it
MARKER = "complete.json"
DEFAULT_ENTRIES = 1_000_000
DEFAULT_DAYS = 30.0
SEED = 500
T0 = datetime(2026, 1, 5, 0, 0, 0, tzinfo=UTC)

TARGET_MS = 5.0  # ours, warm, median
TARGET_SPEEDUP = 2.0  # over the faster of the two journalctl variants

BUILD_TIMEOUT_SECS = 1200.0
CHUNK_BYTES = 1 << 20

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US

# MESSAGE_IDs as systemd 252 writes them (research note §4, sd-messages.h).
MID_SHUTDOWN_SCHEDULED = "9e7066279dc8403da79ce4b1a69064b2"
MID_SLEEP_START = "6bbd95ee977941e497c48be27c254128"
MID_SLEEP_STOP = "8811e6df2a8e40f58a94cea26f8ebf14"
MID_TARGET_REACHED = "39f53479d3a045ac8e11786248231fbf"
MID_UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
MID_UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
MID_UNIT_STOPPED = "9d1aaa27d60140bd96365438aad20286"
MID_UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"
MID_TIME_CHANGE = "c7a787079b354eaaa9e77b371893cd27"
MID_TIME_SYNC = "7c8a41f37b764941a0e1780b1be2f037"
MID_SESSION_START = "8d45620c1a4348dbb17410da57c60c66"
MID_SESSION_STOP = "3354939424b4456d9802ca8333ed424a"
MID_SHUTDOWN = "98268866d1d54a499c4e98921d93bc40"

BSSID = "02:11:22:33:44:55"
SSID = "HomeNet"
GATEWAY = "192.168.1.1"
WLAN_ADDR = "192.168.1.50"
ETH_ADDR = "192.168.1.23"


# ---------------------------------------------------------------- the synthetic journal


@dataclass(frozen=True)
class _Service:
    """One journal source: the trusted fields journald would attach to everything it logs."""

    unit: str
    ident: str
    comm: str
    exe: str
    cmdline: str
    transport: str  # journal, syslog or stdout
    facility: int = 3
    uid: int = 0


SERVICES: dict[str, _Service] = {
    # Relevant to the correlator (research note §4).
    "nm": _Service("NetworkManager.service", "NetworkManager", "NetworkManager", "/usr/sbin/NetworkManager",
                   "/usr/sbin/NetworkManager --no-daemon", "journal"),
    "wpa": _Service("wpa_supplicant.service", "wpa_supplicant", "wpa_supplicant", "/usr/sbin/wpa_supplicant",
                    "/sbin/wpa_supplicant -u -s -O /run/wpa_supplicant", "syslog"),
    "logind": _Service("systemd-logind.service", "systemd-logind", "systemd-logind",
                       "/usr/lib/systemd/systemd-logind", "/lib/systemd/systemd-logind", "journal", facility=4),
    "cron": _Service("cron.service", "CRON", "cron", "/usr/sbin/cron", "/usr/sbin/cron -f", "syslog", facility=9),
    "sleep": _Service("systemd-suspend.service", "systemd-sleep", "systemd-sleep", "/usr/lib/systemd/systemd-sleep",
                      "/lib/systemd/systemd-sleep suspend", "journal"),
    "networkd": _Service("systemd-networkd.service", "systemd-networkd", "systemd-network",
                         "/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd", "journal", uid=998),
    "resolved": _Service("systemd-resolved.service", "systemd-resolved", "systemd-resolve",
                         "/usr/lib/systemd/systemd-resolved", "/lib/systemd/systemd-resolved", "journal", uid=991),
    "timesyncd": _Service("systemd-timesyncd.service", "systemd-timesyncd", "systemd-timesyn",
                          "/usr/lib/systemd/systemd-timesyncd", "/lib/systemd/systemd-timesyncd", "journal",
                          uid=997),
    "dhclient": _Service("networking.service", "dhclient", "dhclient", "/usr/sbin/dhclient",
                         "/sbin/dhclient -4 -v -i -pf /run/dhclient.eth0.pid eth0", "syslog"),
    # Unrelated, and most of the volume.
    "nginx": _Service("nginx.service", "nginx", "nginx", "/usr/sbin/nginx", "nginx: worker process", "stdout",
                      uid=33),
    "sshd": _Service("ssh.service", "sshd", "sshd", "/usr/sbin/sshd", "sshd: [accepted]", "syslog", facility=4),
    "dockerd": _Service("docker.service", "dockerd", "dockerd", "/usr/bin/dockerd",
                        "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock", "stdout"),
    "containerd": _Service("containerd.service", "containerd", "containerd", "/usr/bin/containerd",
                           "/usr/bin/containerd", "stdout"),
    "postgres": _Service("postgresql@15-main.service", "postgres", "postgres", "/usr/lib/postgresql/15/bin/postgres",
                         "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", "stdout", uid=104),
    "redis": _Service("redis-server.service", "redis-server", "redis-server", "/usr/bin/redis-server",
                      "/usr/bin/redis-server 127.0.0.1:6379", "stdout", uid=105),
    "node_exporter": _Service("prometheus-node-exporter.service", "prometheus-node-exporter", "prometheus-node",
                              "/usr/bin/prometheus-node-exporter", "/usr/bin/prometheus-node-exporter", "stdout",
                              uid=106),
    "dbus": _Service("dbus.service", "dbus-daemon", "dbus-daemon", "/usr/bin/dbus-daemon",
                     "/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation "
                     "--syslog-only", "syslog", uid=101),
    "fail2ban": _Service("fail2ban.service", "fail2ban-server", "fail2ban-server", "/usr/bin/python3.11",
                         "/usr/bin/python3 /usr/bin/fail2ban-server -xf start", "stdout"),
    "smartd": _Service("smartmontools.service", "smartd", "smartd", "/usr/sbin/smartd", "/usr/sbin/smartd -n",
                       "syslog"),
    "polkitd": _Service("polkit.service", "polkitd", "polkitd", "/usr/lib/polkit-1/polkitd",
                        "/usr/lib/polkit-1/polkitd --no-debug", "journal", uid=996),
    "journald": _Service("systemd-journald.service", "systemd-journald", "systemd-journal",
                         "/usr/lib/systemd/systemd-journald", "/lib/systemd/systemd-journald", "journal"),
}
KERNEL = "kernel"
PID1 = "pid1"

# Share of the background traffic, per source: roughly 78 % unrelated services, 6 % PID 1 (timers, scopes), 12 %
# the services the correlator reads (mostly routine: cron sessions, logind sessions, Wi-Fi signal reports, NM scans),
# 3.5 % kernel (firewall, veth, audit). The interesting lines mostly come from the episodes below.
WEIGHTS: dict[str, float] = {
    "nginx": 27.0, "sshd": 9.0, "dockerd": 8.0, "postgres": 7.0, PID1: 6.0, "containerd": 4.0, "redis": 3.0,
    "node_exporter": 3.0, "dbus": 2.0, "fail2ban": 2.0, "smartd": 1.0, "polkitd": 1.0, "journald": 0.3,
    "nm": 4.0, "cron": 3.0, "logind": 2.0, "wpa": 2.0, "networkd": 0.1, "resolved": 0.1, "timesyncd": 0.02,
    "dhclient": 0.15, KERNEL: 3.5,
}

# The "IP - - [date]" prefix of access logs is built per line; the rest is picked from these.
NGINX_REQUESTS = (
    ('GET /api/v1/status HTTP/1.1', 200, 'curl/7.88.1'),
    ('GET / HTTP/1.1', 200, 'Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0'),
    ('GET /metrics HTTP/1.1', 200, 'Prometheus/2.42.0'),
    ('POST /api/v1/readings HTTP/1.1', 201, 'python-requests/2.28.1'),
    ('GET /wp-login.php HTTP/1.1', 404, 'Mozilla/5.0 (compatible; Nimbostratus-Bot/v1.3.2)'),
    ('GET /.env HTTP/1.1', 404, 'Mozilla/5.0 zgrab/0.x'),
    ('GET /favicon.ico HTTP/1.1', 304, 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)'),
)
CRON_COMMANDS = (
    "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "(root) CMD (cd / && run-parts --report /etc/cron.hourly)",
    "(www-data) CMD (php /var/www/app/artisan schedule:run >> /dev/null 2>&1)",
    "(postgres) CMD (/usr/local/bin/pg_backup.sh)",
)


def _kv(**fields: str | int) -> bytes:
    return "".join(f"{name}={value}\n" for name, value in fields.items()).encode()


@dataclass(order=True)
class _Episode:
    at_us: int
    kind: str = field(compare=False)
    duration_us: int = field(default=0, compare=False)


@dataclass
class _Generator:
    """Journal Export Format text, in time order, for ``total`` entries spread over ``days`` days.

    Realtime strictly increases across the whole stream; monotonic increases within each boot and stands still
    across a suspend (research note §2 pitfalls 8 and 9), so sd-journal's bisection and interleaving both work.
    """

    total: int
    days: float
    seed: int
    centres_us: list[int]
    rng: random.Random = field(init=False)
    count: int = 0
    now_us: int = 0
    mono_us: int = 0
    end_us: int = 0
    boot_id: str = ""
    machine_id: str = ""
    prefixes: dict[str, bytes] = field(default_factory=dict)
    episodes: list[_Episode] = field(default_factory=list)
    pending_gap_us: int = 0  # realtime still to be spent in suspends and reboots: not available to background lines
    session: int = 0
    buffer: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.machine_id = uuid.UUID(int=self.rng.getrandbits(128)).hex
        self.now_us = int(T0.timestamp()) * US
        self.end_us = self.now_us + int(self.days * DAY_US)
        self._schedule()
        # One method per background source: _bg_<key>.
        self._writers: dict[str, Callable[[datetime, float], None]] = {
            key: getattr(self, f"_bg_{key}") for key in WEIGHTS
        }

    # ---- schedule

    def _quiet(self, start_us: int, end_us: int) -> bool:
        """Keep suspends and reboots an hour clear of the benchmark's window centres."""
        return all(end_us < centre - HOUR_US or start_us > centre + HOUR_US for centre in self.centres_us)

    def _schedule(self) -> None:
        rng, start, span = self.rng, self.now_us, self.end_us - self.now_us
        busy: list[tuple[int, int]] = []
        episodes: list[_Episode] = []
        at = start
        while True:  # a reboot about every 5 days
            at += int(rng.uniform(4.5, 5.5) * DAY_US)
            if at > self.end_us - DAY_US // 2:
                break
            while not self._quiet(at - HOUR_US, at + HOUR_US):
                at += 3 * HOUR_US
            downtime = int(rng.uniform(20, 120) * US)
            episodes.append(_Episode(at, "boot", downtime))
            busy.append((at - HOUR_US, at + downtime + HOUR_US))
        for _ in range(int(span / (40 * HOUR_US))):  # a suspend every ~40 h, 10 min to 10 h
            for _attempt in range(50):
                at = start + 2 * HOUR_US + int(rng.random() * (span - 4 * HOUR_US))
                duration = int(math.exp(rng.uniform(math.log(600), math.log(36_000))) * US)
                end = at + duration
                clear = all(end < low or at > high for low, high in busy)
                if clear and self._quiet(at, end) and end < self.end_us - HOUR_US:
                    episodes.append(_Episode(at, "suspend", duration))
                    busy.append((at - HOUR_US, end + HOUR_US))
                    break
        per_day = {"wifi_drop": 3.0, "link_flap": 1.0, "dns_trouble": 2.0, "ntp_trouble": 1.0, "dhcp_renew": 4.0}
        for kind, rate in per_day.items():
            for _ in range(round(rate * span / DAY_US)):
                episodes.append(_Episode(start + int(rng.random() * span), kind))
        episodes.sort()
        self.episodes = episodes
        self.pending_gap_us = sum(e.duration_us for e in episodes)

    # ---- writing

    def _static(self, fields: dict[str, str | bytes]) -> bytes:
        return format_export([fields])[:-1]  # the fields without the blank line that ends an entry

    def _new_boot(self) -> None:
        rng = self.rng
        self.boot_id = uuid.UUID(int=rng.getrandbits(128)).hex
        common: dict[str, str | bytes] = {"_BOOT_ID": self.boot_id, "_MACHINE_ID": self.machine_id,
                                          "_HOSTNAME": "nwp-host"}
        self.prefixes = {
            KERNEL: self._static({**common, "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel",
                                  "SYSLOG_FACILITY": "0"}),
            PID1: self._static({**common, "_TRANSPORT": "journal", "_PID": "1", "_UID": "0", "_GID": "0",
                                "_COMM": "systemd", "_EXE": "/usr/lib/systemd/systemd", "_CMDLINE": "/sbin/init",
                                "_CAP_EFFECTIVE": "1ffffffffff", "_SYSTEMD_CGROUP": "/init.scope",
                                "_SYSTEMD_UNIT": "init.scope", "_SYSTEMD_SLICE": "-.slice",
                                "SYSLOG_IDENTIFIER": "systemd", "SYSLOG_FACILITY": "3",
                                "CODE_FILE": "src/core/job.c", "CODE_FUNC": "job_emit_done_message"}),
        }
        for key, service in SERVICES.items():
            pid = str(rng.randint(300, 4000))
            fields: dict[str, str | bytes] = {
                **common, "_TRANSPORT": service.transport, "_PID": pid, "_UID": str(service.uid),
                "_GID": str(service.uid), "_COMM": service.comm, "_EXE": service.exe, "_CMDLINE": service.cmdline,
                "_CAP_EFFECTIVE": "0" if service.uid else "1ffffffffff",
                "_SYSTEMD_CGROUP": f"/system.slice/{service.unit}", "_SYSTEMD_UNIT": service.unit,
                "_SYSTEMD_SLICE": "system.slice", "_SYSTEMD_INVOCATION_ID": uuid.UUID(int=rng.getrandbits(128)).hex,
                "SYSLOG_IDENTIFIER": service.ident, "SYSLOG_FACILITY": str(service.facility),
            }
            if service.transport == "stdout":
                fields["_STREAM_ID"] = uuid.UUID(int=rng.getrandbits(128)).hex
            elif service.transport == "syslog":
                fields["SYSLOG_PID"] = pid
            self.prefixes[key] = self._static(fields)

    def emit(self, source: str, message: str, priority: int = 6, extra: bytes = b"", gap_s: float = 0.0) -> None:
        """One entry, ``gap_s`` after the previous one (at least 1 µs: realtime must strictly increase)."""
        gap = max(1, int(gap_s * US))
        self.now_us += gap
        self.mono_us += gap
        if self.count >= self.total:
            return
        self.count += 1
        out = self.buffer
        out += self.prefixes[source]
        out += b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\nPRIORITY=%d\n" % (self.now_us, self.mono_us,
                                                                                     priority)
        if source == KERNEL:
            out += b"_SOURCE_MONOTONIC_TIMESTAMP=%d\n" % max(0, self.mono_us - 1200)
        else:
            out += b"_SOURCE_REALTIME_TIMESTAMP=%d\n" % (self.now_us - 35 - (self.count & 0x3FF))
        out += extra
        out += b"MESSAGE=" + message.encode() + b"\n\n"

    def _nm(self, message: str, domains: str = "DEVICE", device: str = "wlan0", level: str = "info",
            gap_s: float = 0.002) -> None:
        stamp = (self.now_us + max(1, int(gap_s * US))) / US
        extra = _kv(NM_LOG_LEVEL=level, NM_LOG_DOMAINS=domains, **({"NM_DEVICE": device} if device else {}),
                    CODE_FILE="src/core/devices/nm-device.c", TIMESTAMP_MONOTONIC=f"{self.mono_us / US:.6f}")
        priority = {"info": 6, "warn": 4, "debug": 7}[level]
        self.emit("nm", f"<{level}>  [{stamp:.4f}] {message}", priority, extra, gap_s)

    def _pid1(self, message: str, unit: str, message_id: str | None = None, gap_s: float = 0.002,
              priority: int = 6) -> None:
        extra = _kv(UNIT=unit, **({"MESSAGE_ID": message_id} if message_id else {}))
        self.emit(PID1, message, priority, extra, gap_s)

    # ---- background lines

    def _ip(self) -> str:
        return f"203.0.113.{self.rng.randint(1, 254)}"

    def background(self, source: str, gap_s: float) -> None:
        now = datetime.fromtimestamp((self.now_us + int(gap_s * US)) / US, UTC)
        self._writers[source](now, gap_s)

    def _bg_nginx(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        request, status, agent = rng.choice(NGINX_REQUESTS)
        stamp = now.strftime("%d/%b/%Y:%H:%M:%S +0000")
        self.emit("nginx", f'{self._ip()} - - [{stamp}] "{request}" {status} {rng.randint(150, 9000)} "-" '
                          f'"{agent}"', gap_s=gap_s)

    def _bg_sshd(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        user = rng.choice(("admin", "ubuntu", "test", "oracle", "git", "pi"))
        ip, port = self._ip(), rng.randint(30000, 65000)
        self.emit("sshd", rng.choice((
            f"Invalid user {user} from {ip} port {port}",
            f"Connection closed by invalid user {user} {ip} port {port} [preauth]",
            f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]",
            f"Disconnected from authenticating user root {ip} port {port} [preauth]",
        )), 6, gap_s=gap_s)

    def _bg_dockerd(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        self.emit("dockerd", f'time="{stamp}" level=info msg="ignoring event" container={rng.getrandbits(256):064x} '
                             'module=libcontainerd namespace=moby topic=/tasks/delete type="*events.TaskDelete"',
                  gap_s=gap_s)

    def _bg_containerd(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        self.emit("containerd", f'time="{stamp}" level=info msg="shim disconnected" id={rng.getrandbits(256):064x} '
                                'namespace=moby', gap_s=gap_s)

    def _bg_postgres(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} UTC"
        self.emit("postgres", rng.choice((
            f"{stamp} [{rng.randint(1000, 9999)}] LOG:  checkpoint starting: time",
            f"{stamp} [{rng.randint(1000, 9999)}] LOG:  checkpoint complete: wrote {rng.randint(1, 400)} buffers "
            f"(0.{rng.randint(0, 9)}%); 0 WAL file(s) added, 0 removed, 0 recycled; "
            f"write={rng.uniform(0, 30):.3f} s",
            f"{stamp} [{rng.randint(1000, 9999)}] LOG:  automatic vacuum of table \"app.public.readings\": "
            f"index scans: 1",
        )), gap_s=gap_s)

    def _bg_redis(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        stamp = now.strftime("%d %b %Y %H:%M:%S.") + f"{now.microsecond // 1000:03d}"
        self.emit("redis", rng.choice((
            f"812:M {stamp} * 100 changes in 300 seconds. Saving...",
            f"812:M {stamp} * Background saving started by pid {rng.randint(1000, 30000)}",
            f"812:M {stamp} * Background saving terminated with success",
        )), gap_s=gap_s)

    def _bg_node_exporter(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        message = (f'ts={stamp} caller=collector.go:169 level=error collector=hwmon msg="collector failed" '
                   f'elapsed={rng.uniform(0, 0.02):.6f} err="hwmon5: no such file or directory"')
        self.emit("node_exporter", message, 3, gap_s=gap_s)

    def _bg_dbus(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        name = rng.choice(("hostname1", "timedate1", "locale1", "PackageKit"))
        self.emit("dbus", rng.choice((
            f"[system] Activating via systemd: service name='org.freedesktop.{name}' unit='dbus-org.freedesktop."
            f"{name}.service' requested by ':1.{rng.randint(10, 999)}' (uid=0 pid={rng.randint(300, 9999)} "
            "comm=\"/usr/bin/timedatectl\")",
            f"[system] Successfully activated service 'org.freedesktop.{name}'",
        )), 5, gap_s=gap_s)

    def _bg_fail2ban(self, now: datetime, gap_s: float) -> None:
        stamp = now.strftime("%Y-%m-%d %H:%M:%S")
        self.emit("fail2ban", f"fail2ban.filter         [612]: INFO    [sshd] Found {self._ip()} - {stamp}",
                  gap_s=gap_s)

    def _bg_smartd(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        self.emit("smartd", f"Device: /dev/sda [SAT], SMART Usage Attribute: 194 Temperature_Celsius changed from "
                            f"{rng.randint(30, 40)} to {rng.randint(30, 40)}", gap_s=gap_s)

    def _bg_polkitd(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        self.emit("polkitd", f"Registered Authentication Agent for unix-process:{rng.randint(1000, 99999)}:"
                             f"{rng.randint(10 ** 6, 10 ** 7)} (system bus name :1.{rng.randint(10, 999)} "
                             "[/usr/bin/pkttyagent --notify-fd 5 --fallback], object path "
                             "/org/freedesktop/PolicyKit1/AuthenticationAgent, locale C.UTF-8)", 5, gap_s=gap_s)

    def _bg_journald(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        self.emit("journald", f"Data hash table of /var/log/journal/{self.machine_id}/system.journal has a fill "
                              f"level at 75.{rng.randint(0, 9)} (174763 of 233016 items, 50331648 file size, 287 bytes "
                              "per hash table item), suggesting rotation.", gap_s=gap_s)

    def _bg_pid1(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        unit = rng.choice(("apt-daily.service", "man-db.service", "logrotate.service", "sysstat-collect.service",
                           "phpsessionclean.service", "docker-abc123.scope"))
        description = unit.split(".")[0].replace("-", " ").title()
        kind = rng.randrange(4)
        if kind == 0:
            self._pid1(f"Starting {unit} - {description}...", unit, MID_UNIT_STARTING, gap_s)
        elif kind == 1:
            self._pid1(f"{unit}: Deactivated successfully.", unit, MID_UNIT_SUCCESS, gap_s)
        elif kind == 2:
            self._pid1(f"Finished {unit} - {description}.", unit, MID_UNIT_STARTED, gap_s)
        else:
            self._pid1(f"{unit}: Consumed {rng.uniform(0.01, 9):.3f}s CPU time.", unit, None, gap_s)

    def _bg_nm(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        kind = rng.randrange(100)
        if kind < 3:  # a lease renewal now and then (every ~40 min)
            self._nm(f"dhcp4 (wlan0): state changed new lease, address={WLAN_ADDR}", "DHCP4", gap_s=gap_s)
        elif kind < 50:
            mac = ":".join(f"{rng.getrandbits(8):02X}" for _ in range(6))
            self._nm(f"device (wlan0): set-hw-addr: set MAC address to {mac} (scanning)", "DEVICE,WIFI", gap_s=gap_s)
        elif kind < 75:
            self._nm(f'audit: op="statistics" arg="refresh-rate-ms" pid={rng.randint(1000, 9000)} uid=1000 '
                     'result="success"', "AUDIT", "", gap_s=gap_s)
        else:
            self._nm(f"agent-manager: agent[{rng.getrandbits(64):016x},:1.{rng.randint(50, 300)}/org.gnome.Shell."
                     "NetworkAgent/1000]: agent registered", "AGENTS", "", gap_s=gap_s)

    def _bg_cron(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        kind = rng.randrange(3)
        if kind == 0:
            self.emit("cron", rng.choice(CRON_COMMANDS), gap_s=gap_s)
        elif kind == 1:
            self.emit("cron", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
                      extra=b"SYSLOG_FACILITY=10\n", gap_s=gap_s)
        else:
            self.emit("cron", "pam_unix(cron:session): session closed for user root", extra=b"SYSLOG_FACILITY=10\n",
                      gap_s=gap_s)

    def _bg_logind(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        kind = rng.randrange(3)
        if kind == 0:
            self.session += 1
            self.emit("logind", f"New session {self.session} of user alice.",
                      extra=_kv(MESSAGE_ID=MID_SESSION_START, SESSION_ID=self.session, USER_ID="alice"),
                      gap_s=gap_s)
        elif kind == 1:
            self.emit("logind", f"Session {self.session} logged out. Waiting for processes to exit.", gap_s=gap_s)
        else:
            self.emit("logind", f"Removed session {self.session}.",
                      extra=_kv(MESSAGE_ID=MID_SESSION_STOP, SESSION_ID=self.session), gap_s=gap_s)

    def _bg_wpa(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        kind = rng.randrange(200)
        if kind == 0:
            self.emit("wpa", "wlan0: CTRL-EVENT-BEACON-LOSS", 5, gap_s=gap_s)
        elif kind <= 60:
            self.emit("wpa", f"wlan0: WPA: Group rekeying completed with {BSSID} [GTK=CCMP]", 5, gap_s=gap_s)
        else:
            self.emit("wpa", f"wlan0: CTRL-EVENT-SIGNAL-CHANGE above={rng.randint(0, 1)} "
                              f"signal=-{rng.randint(45, 80)} noise=9999 txrate={rng.choice((65000, 144400))}", 5,
                      gap_s=gap_s)

    def _bg_networkd(self, _now: datetime, gap_s: float) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            self.emit("networkd", f"eth0: DHCPv4 address {ETH_ADDR}/24, gateway {GATEWAY} acquired from {GATEWAY}",
                      extra=b"INTERFACE=eth0\n", gap_s=gap_s)
        else:
            self.emit("networkd", "eth0: DHCP: received delayed ACK, renewing lease", 7, b"INTERFACE=eth0\n", gap_s)

    def _bg_resolved(self, _now: datetime, gap_s: float) -> None:
        kind = self.rng.randrange(3)
        if kind == 0:
            self.emit("resolved", f"Using degraded feature set UDP instead of UDP+EDNS0 for DNS server {GATEWAY}.",
                      gap_s=gap_s)
        elif kind == 1:
            self.emit("resolved", f"Grace period over, resuming full feature set (UDP+EDNS0) for DNS server {GATEWAY}.",
                      gap_s=gap_s)
        else:
            self.emit("resolved", f"wlan0: Bus client set DNS server list to: {GATEWAY}", gap_s=gap_s)

    def _bg_timesyncd(self, _now: datetime, gap_s: float) -> None:
        self.emit("timesyncd", "Contacted time server 192.0.2.124:123 (2.debian.pool.ntp.org).", gap_s=gap_s)

    def _bg_dhclient(self, _now: datetime, gap_s: float) -> None:
        self._dhclient(gap_s)

    def _bg_kernel(self, now: datetime, gap_s: float) -> None:
        rng = self.rng
        kind = rng.randrange(10)
        if kind <= 6:
            self.emit(KERNEL, f"[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
                              f"SRC={self._ip()} DST={ETH_ADDR} LEN=44 TOS=0x00 PREC=0x00 TTL=242 "
                              f"ID={rng.randint(1, 65535)} PROTO=TCP SPT={rng.randint(1024, 65535)} "
                              f"DPT={rng.choice((23, 3389, 8080, 5555))} WINDOW=1024 RES=0x00 SYN URGP=0", 4,
                      gap_s=gap_s)
        elif kind <= 8:
            veth = f"veth{rng.getrandbits(28):07x}"
            state = rng.choice(("blocking", "forwarding", "disabled"))
            self.emit(KERNEL, f"docker0: port 1({veth}) entered {state} state", gap_s=gap_s)
        else:
            self.emit(KERNEL, f'audit: type=1400 audit({now.timestamp():.3f}:{rng.randint(100, 999)}): '
                              'apparmor="DENIED" operation="open" profile="/usr/sbin/cupsd" '
                              'name="/etc/ssl/openssl.cnf" pid=1101 comm="cupsd" requested_mask="r" '
                              'denied_mask="r" fsuid=0 ouid=0', 5, gap_s=gap_s)


    def _dhclient(self, gap_s: float) -> None:
        self.emit("dhclient", f"DHCPREQUEST for {ETH_ADDR} on eth0 to {GATEWAY} port 67", gap_s=gap_s)
        self.emit("dhclient", f"DHCPACK of {ETH_ADDR} from {GATEWAY}", gap_s=0.004)
        self.emit("dhclient", f"bound to {ETH_ADDR} -- renewal in {self.rng.randint(1200, 2100)} seconds.",
                  gap_s=0.01)

    # ---- episodes

    def _boot(self) -> None:
        """Kernel start, PID 1, first NTP sync with the clock step, network up: as a Debian 12 box logs it."""
        self._new_boot()
        self.mono_us = self.rng.randint(0, 2000)
        kernel_lines = (
            "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU "
            "ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
            "Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0f3c1d7e ro quiet",
            "BIOS-provided physical RAM map:", "ACPI: Early table checksum verification disabled",
            "Memory: 16213424K/16645948K available", "smpboot: Allowing 8 CPUs, 0 hotplug CPUs",
            "clocksource: tsc-early: mask: 0xffffffffffffffff", "PCI: Using configuration type 1 for base access",
            "e1000e: Intel(R) PRO/1000 Network Driver", "e1000e 0000:00:1f.6 eth0: (PCI Express:2.5GT/s:Width x1)",
            "iwlwifi 0000:00:14.3: loaded firmware version 77.2df8986f.0 so-a0-gf-a0-77.ucode",
            "EXT4-fs (nvme0n1p2): mounted filesystem with ordered data mode. Quota mode: none.",
            "systemd[1]: Inserted module 'autofs4'", "random: crng init done",
        )
        for line in kernel_lines:
            self.emit(KERNEL, line, 6, gap_s=self.rng.uniform(0.001, 0.08))
        for unit in ("systemd-journald.service", "systemd-udevd.service", "systemd-networkd.service",
                     "systemd-resolved.service", "systemd-timesyncd.service", "NetworkManager.service",
                     "wpa_supplicant.service", "systemd-logind.service", "cron.service", "ssh.service",
                     "postgresql@15-main.service", "docker.service", "nginx.service"):
            description = unit.split(".")[0]
            self._pid1(f"Starting {unit} - {description}...", unit, MID_UNIT_STARTING, self.rng.uniform(0.005, 0.05))
            self._pid1(f"Started {unit} - {description}.", unit, MID_UNIT_STARTED, self.rng.uniform(0.005, 0.2))
        self._pid1("Reached target network.target - Network.", "network.target", MID_TARGET_REACHED)
        self._nm("NetworkManager (version 1.42.4) is starting... (boot:" + self.boot_id[:8] + ")", "CORE", "")
        self.emit("wpa", "Successfully initialized wpa_supplicant", 5, gap_s=0.05)
        self.emit(KERNEL, f"wlan0: authenticate with {BSSID}", gap_s=0.8)
        self.emit(KERNEL, "wlan0: associated", gap_s=0.02)
        self.emit("wpa", f"wlan0: CTRL-EVENT-CONNECTED - Connection to {BSSID} completed [id=0 id_str=]", 5,
                  gap_s=0.03)
        self._nm("device (wlan0): state change: config -> ip-config (reason 'none', sys-iface-state: 'managed')")
        self._nm(f"dhcp4 (wlan0): state changed new lease, address={WLAN_ADDR}", "DHCP4", gap_s=0.4)
        self._nm("device (wlan0): state change: secondaries -> activated (reason 'none', sys-iface-state: 'managed')")
        self._nm("manager: NetworkManager state is now CONNECTED_GLOBAL", "CORE", "", gap_s=0.3)
        self.emit(KERNEL, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
                  gap_s=1.2, extra=b"_KERNEL_SUBSYSTEM=pci\n_KERNEL_DEVICE=+pci:0000:00:1f.6\n_UDEV_SYSNAME=eth0\n")
        self.emit("networkd", "eth0: Gained carrier", extra=b"INTERFACE=eth0\n", gap_s=0.01)
        self._dhclient(0.2)
        # The RTC-less clock is behind until the first NTP sync steps it (a clock change: resolved flushes).
        sync = datetime.fromtimestamp(self.now_us / US + 2.5, UTC).strftime("%a %Y-%m-%d %H:%M:%S.%f UTC")
        self.emit("timesyncd", f"Initial clock synchronization to {sync}.", 6,
                  _kv(MESSAGE_ID=MID_TIME_SYNC, MONOTONIC_USEC=self.mono_us, REALTIME_USEC=self.now_us), gap_s=2.5)
        self._pid1("Time has been changed", "init.scope", MID_TIME_CHANGE, 0.001)
        self.emit("resolved", "Clock change detected. Flushing caches.", gap_s=0.002)
        self._pid1("Reached target multi-user.target - Multi-User System.", "multi-user.target", MID_TARGET_REACHED)

    def _shutdown(self) -> None:
        self.emit("logind", "System is rebooting.", 6, _kv(MESSAGE_ID=MID_SHUTDOWN_SCHEDULED, ACTION="reboot"),
                  gap_s=0.5)
        for unit in ("nginx.service", "docker.service", "postgresql@15-main.service", "cron.service",
                     "NetworkManager.service", "wpa_supplicant.service", "systemd-networkd.service"):
            description = unit.split(".")[0]
            self._pid1(f"Stopping {unit} - {description}...", unit, None, self.rng.uniform(0.005, 0.05))
            self._pid1(f"Stopped {unit} - {description}.", unit, MID_UNIT_STOPPED, self.rng.uniform(0.01, 0.5))
        self._nm("manager: NetworkManager state is now DISCONNECTED", "CORE", "", gap_s=0.01)
        self._pid1("Reached target shutdown.target - System Shutdown.", "shutdown.target", MID_TARGET_REACHED)
        self._pid1("Shutting down.", "init.scope", MID_SHUTDOWN)
        self.emit(KERNEL, "reboot: Restarting system", gap_s=0.3)

    def _suspend(self, duration_us: int) -> None:
        """logind, NM, PID 1, systemd-sleep, kernel; then the monotonic clock stands still (research note §4)."""
        self.emit("logind", "The system will suspend now!", 5, _kv(MESSAGE_ID=MID_SHUTDOWN_SCHEDULED,
                                                                   ACTION="suspend"), gap_s=0.5)
        self._nm("manager: sleep: sleep requested (sleeping: no  enabled: yes)", "SUSPEND", "")
        self._nm("device (wlan0): state change: activated -> unmanaged (reason 'sleeping', sys-iface-state: "
                 "'managed')")
        self._nm("manager: NetworkManager state is now ASLEEP", "CORE", "")
        self._pid1("Reached target sleep.target - Sleep.", "sleep.target", MID_TARGET_REACHED, 0.05)
        self._pid1("Starting systemd-suspend.service - System Suspend...", "systemd-suspend.service",
                   MID_UNIT_STARTING)
        self.emit("sleep", "Entering sleep state 'suspend'...", 6, _kv(MESSAGE_ID=MID_SLEEP_START, SLEEP="suspend"),
                  gap_s=0.01)
        self.emit(KERNEL, "PM: suspend entry (deep)", gap_s=0.01)
        self.now_us += duration_us  # realtime jumps, monotonic stands still
        self.pending_gap_us -= duration_us
        for line in ("Filesystems sync: 0.018 seconds", "Freezing user space processes ... (elapsed 0.001 seconds) "
                     "done.", "ACPI: PM: Preparing to enter system sleep state S3",
                     "ACPI: PM: Waking up from system sleep state S3", "Restarting tasks ... done.",
                     "PM: suspend exit"):
            self.emit(KERNEL, line, gap_s=0.002)
        self.emit("sleep", "System returned from sleep state.", 6, _kv(MESSAGE_ID=MID_SLEEP_STOP, SLEEP="suspend"),
                  gap_s=0.05)
        self._pid1("systemd-suspend.service: Deactivated successfully.", "systemd-suspend.service", MID_UNIT_SUCCESS)
        self._pid1("Finished systemd-suspend.service - System Suspend.", "systemd-suspend.service", MID_UNIT_STARTED)
        self._pid1("Stopped target sleep.target - Sleep.", "sleep.target", MID_UNIT_STOPPED)
        self.emit("logind", "Operation 'sleep' finished.", gap_s=0.01)
        self._nm("manager: sleep: wake requested (sleeping: yes  enabled: yes)", "SUSPEND", "")
        self._nm("device (wlan0): state change: unmanaged -> unavailable (reason 'managed', sys-iface-state: "
                 "'external')")
        self.emit("resolved", "Clock change detected. Flushing caches.", gap_s=0.02)
        self.emit("wpa", f"wlan0: CTRL-EVENT-CONNECTED - Connection to {BSSID} completed [id=0 id_str=]", 5,
                  gap_s=2.5)
        self._nm("device (wlan0): state change: secondaries -> activated (reason 'none', sys-iface-state: 'managed')",
                 gap_s=0.8)
        self._nm("manager: NetworkManager state is now CONNECTED_GLOBAL", "CORE", "", gap_s=0.3)

    def _wifi_drop(self) -> None:
        rng = self.rng
        reason = rng.choice(((7, "CLASS3_FRAME_FROM_NONASSOC_STA", "supplicant-timeout"),
                             (4, "DISASSOC_DUE_TO_INACTIVITY", "supplicant-disconnect"),
                             (3, "DEAUTH_LEAVING", "supplicant-failed")))
        self.emit(KERNEL, f"wlan0: deauthenticated from {BSSID} (Reason: {reason[0]}={reason[1]})", gap_s=0.2,
                  extra=b"_KERNEL_SUBSYSTEM=net\n_KERNEL_DEVICE=n3\n_UDEV_SYSNAME=wlan0\n")
        self.emit("wpa", f"wlan0: CTRL-EVENT-DISCONNECTED bssid={BSSID} reason={reason[0]}", 5, gap_s=0.003)
        self._nm("device (wlan0): supplicant interface state: completed -> disconnected", "DEVICE,WIFI")
        self._nm(f"device (wlan0): state change: activated -> failed (reason '{reason[2]}', sys-iface-state: "
                 "'managed')", gap_s=rng.uniform(1, 25))
        self._nm("device (wlan0): link timed out.", "DEVICE,WIFI", level="warn", gap_s=0.001)
        self._nm("manager: NetworkManager state is now DISCONNECTED", "CORE", "")
        self._nm(f"device (wlan0): Activation: starting connection '{SSID}' (9c8a7b6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d)",
                 gap_s=rng.uniform(2, 40))
        self.emit(KERNEL, f"wlan0: authenticate with {BSSID}", gap_s=0.5)
        self.emit(KERNEL, "wlan0: associated", gap_s=0.02)
        self.emit("wpa", f"wlan0: CTRL-EVENT-CONNECTED - Connection to {BSSID} completed [id=0 id_str=]", 5,
                  gap_s=0.05)
        self._nm(f"dhcp4 (wlan0): state changed new lease, address={WLAN_ADDR}", "DHCP4", gap_s=0.3)
        self._nm("device (wlan0): state change: secondaries -> activated (reason 'none', sys-iface-state: 'managed')")
        self._nm("manager: NetworkManager state is now CONNECTED_GLOBAL", "CORE", "", gap_s=0.2)

    def _link_flap(self) -> None:
        rng = self.rng
        pci = b"_KERNEL_SUBSYSTEM=pci\n_KERNEL_DEVICE=+pci:0000:00:1f.6\n_UDEV_SYSNAME=eth0\n"
        self.emit(KERNEL, "e1000e 0000:00:1f.6 eth0: NIC Link is Down", gap_s=0.3, extra=pci)
        self.emit("networkd", "eth0: Lost carrier", extra=b"INTERFACE=eth0\n", gap_s=0.005)
        self.emit("networkd", "eth0: DHCP lease lost", extra=b"INTERFACE=eth0\n", gap_s=0.001)
        self.emit(KERNEL, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
                  gap_s=rng.uniform(2, 60), extra=pci)
        self.emit(KERNEL, "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready", gap_s=0.001)
        self.emit("networkd", "eth0: Gained carrier", extra=b"INTERFACE=eth0\n", gap_s=0.003)
        self.emit("networkd", f"eth0: DHCPv4 address {ETH_ADDR}/24, gateway {GATEWAY} acquired from {GATEWAY}",
                  extra=b"INTERFACE=eth0\n", gap_s=1.5)
        self.emit("networkd", "eth0: Gained IPv6LL", extra=b"INTERFACE=eth0\n", gap_s=0.5)

    def _dns_trouble(self) -> None:
        self.emit("resolved", f"Using degraded feature set UDP instead of UDP+EDNS0 for DNS server {GATEWAY}.",
                  gap_s=0.1)
        self.emit("resolved", "Switching to fallback DNS server 1.1.1.1#cloudflare-dns.com.",
                  gap_s=self.rng.uniform(1, 5))

    def _ntp_trouble(self) -> None:
        for _ in range(self.rng.randint(1, 3)):
            self.emit("timesyncd", "Timed out waiting for reply from 192.0.2.124:123 (2.debian.pool.ntp.org).",
                      gap_s=self.rng.uniform(5, 30))
        self.emit("timesyncd", "Contacted time server 192.0.2.125:123 (2.debian.pool.ntp.org).", gap_s=10)

    def _episode(self, episode: _Episode) -> None:
        if episode.kind == "boot":
            self._shutdown()
            self.now_us += episode.duration_us  # powered off: nothing is logged, no clock in this boot runs
            self.pending_gap_us -= episode.duration_us
            self._boot()
        elif episode.kind == "suspend":
            self._suspend(episode.duration_us)
        elif episode.kind == "wifi_drop":
            self._wifi_drop()
        elif episode.kind == "link_flap":
            self._link_flap()
        elif episode.kind == "dns_trouble":
            self._dns_trouble()
        elif episode.kind == "ntp_trouble":
            self._ntp_trouble()
        elif episode.kind == "dhcp_renew":
            self._dhclient(0.1)
        else:
            raise AssertionError(episode.kind)

    # ---- the stream

    def chunks(self) -> Iterator[bytes]:
        """The whole journal, about 1 MiB at a time."""
        rng = self.rng
        keys = list(WEIGHTS)
        cumulative = list(itertools.accumulate(WEIGHTS.values()))
        self._boot()
        pending = list(self.episodes)
        next_episode = 0
        while self.count < self.total:
            for source in rng.choices(keys, cum_weights=cumulative, k=4096):
                if self.count >= self.total:
                    break
                # Spread what is left evenly over the time that is left, less the suspends and reboots to come.
                left_us = self.end_us - self.now_us - self.pending_gap_us
                mean_s = max(left_us / (self.total - self.count), 1000.0) / US
                gap_s = rng.expovariate(1.0 / mean_s)
                if next_episode < len(pending) and pending[next_episode].at_us <= self.now_us + int(gap_s * US):
                    self._episode(pending[next_episode])
                    next_episode += 1
                else:
                    self.background(source, gap_s)
                if len(self.buffer) >= CHUNK_BYTES:
                    yield bytes(self.buffer)
                    self.buffer.clear()
        if self.buffer:
            yield bytes(self.buffer)
            self.buffer.clear()

    def episodes_done(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for episode in self.episodes:
            if episode.at_us <= self.now_us:
                done[episode.kind] = done.get(episode.kind, 0) + 1
        return done


# ---------------------------------------------------------------- building and caching


def _default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nwp500d-bench"


def _corpus_name(entries: int, days: float) -> str:
    if entries == DEFAULT_ENTRIES and days == DEFAULT_DAYS:
        return f"journal-1m-v{CORPUS_VERSION}"
    return f"journal-{entries}-{days:g}d-v{CORPUS_VERSION}"


def _centre_offsets_us(days: float) -> list[tuple[str, int]]:
    """Early, middle, late: +3 h, +15 d and +29.5 d of a 30-day journal, and proportionally for other spans."""
    span = int(days * DAY_US)
    return [(f"early +{_span_text(span // 240)}", span // 240), (f"middle +{_span_text(span // 2)}", span // 2),
            (f"late +{_span_text(span * 59 // 60)}", span * 59 // 60)]


def _span_text(us: int) -> str:
    return f"{us / DAY_US:g} d" if us >= DAY_US else f"{us / HOUR_US:.3g} h"


def _journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.journal"))


def _load_marker(corpus: Path, entries: int, days: float) -> dict[str, Any] | None:
    """The marker, if it describes a complete corpus of this shape whose files are all still there."""
    try:
        marker: dict[str, Any] = json.loads((corpus / MARKER).read_text())
    except (OSError, ValueError):
        return None
    expected = {"version": CORPUS_VERSION, "entries": entries, "days": days, "seed": SEED}
    if any(marker.get(key) != value for key, value in expected.items()) or marker.get("written") != entries:
        return None
    journal_dir = corpus / "journal"
    for name, size in marker.get("files", {}).items():
        path = journal_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    if {path.name for path in _journal_files(journal_dir)} != set(marker.get("files", {})):
        return None
    return marker


def _convert(generator: _Generator, journal_dir: Path, log_path: Path, timeout: float) -> tuple[int, int, str]:
    """Pipe the generator's text into journal-remote; (exit status, text bytes written, its log)."""
    started = time.perf_counter()
    text_bytes = 0
    proc: subprocess.Popen[bytes] | None = None
    with log_path.open("wb") as log:
        try:
            proc = popen([str(JOURNAL_REMOTE), "-o", str(journal_dir / "system.journal"), "-"],
                          stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
            assert proc.stdin is not None
            # A stuck journal-remote would block our writes forever: a timer kills its group, and the write fails.
            watchdog = threading.Timer(timeout, kill_group_now, (proc.pid,))
            watchdog.daemon = True
            watchdog.start()
            try:
                with contextlib.suppress(BrokenPipeError):  # a dead reader is reported from its status and log
                    for chunk in generator.chunks():
                        proc.stdin.write(chunk)
                        text_bytes += len(chunk)
                    proc.stdin.close()
                returncode = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - started)))
            finally:
                watchdog.cancel()
        except BaseException as exc:
            if proc is not None:
                kill_group_now(proc.pid)
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=KILL_GRACE_SECS)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise BenchError(f"journal-remote did not finish within {timeout:.0f} s") from None
            raise
    if time.perf_counter() - started >= timeout:
        raise BenchError(f"journal-remote did not finish within {timeout:.0f} s (killed)")
    return returncode, text_bytes, log_path.read_text(errors="replace")


def _build(corpus: Path, entries: int, days: float, timeout: float) -> dict[str, Any]:
    """Stream the export text into journal-remote in a scratch directory beside ``corpus``; move it in when checked."""
    if not JOURNAL_REMOTE.exists():
        raise BenchError(f"{JOURNAL_REMOTE} is missing: apt-get install systemd-journal-remote")
    corpus.parent.mkdir(parents=True, exist_ok=True)
    scratch = corpus.parent / f".{corpus.name}.partial-{os.getpid()}"
    old = corpus.parent / f".{corpus.name}.old-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    try:
        journal_dir = scratch / "journal"
        journal_dir.mkdir(parents=True)
        generator = _Generator(entries, days, SEED, [int(T0.timestamp()) * US + offset
                                                     for _, offset in _centre_offsets_us(days)])
        progress(f"building a {entries:,}-entry, {days:g}-day journal in {scratch} (one-time; cached afterwards)")
        returncode, text_bytes, log_text = _convert(generator, journal_dir, scratch / "journal-remote.log", timeout)
        match = re.search(r"Finishing after writing (\d+) entries", log_text)
        written = int(match.group(1)) if match else -1
        if returncode != 0 or written != entries:
            tail = "\n".join(log_text.strip().splitlines()[-10:])
            raise BenchError(f"journal-remote wrote {written} of {entries} entries (exit {returncode}):\n{tail}")
        files = {path.name: path.stat().st_size for path in _journal_files(journal_dir)}
        marker = {
            "version": CORPUS_VERSION, "entries": entries, "days": days, "seed": SEED, "written": written,
            "t0": T0.isoformat(), "end": datetime.fromtimestamp(generator.now_us / US, UTC).isoformat(),
            "export_text_bytes": text_bytes, "files": files, "episodes": generator.episodes_done(),
            "build_seconds": round(time.perf_counter() - started, 2),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (scratch / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: its presence means complete
        if corpus.exists():
            corpus.rename(old)
        scratch.rename(corpus)
        return marker
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _corpus(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    root = (args.cache_dir or _default_cache_root()).expanduser().resolve()
    if root == REPO or REPO in root.parents:
        raise BenchError(f"--cache-dir {root} is inside the repository; the journal is 400+ MB: put it elsewhere")
    corpus = root / _corpus_name(args.entries, args.days)
    marker = None if args.rebuild else _load_marker(corpus, args.entries, args.days)
    if marker is not None:
        progress(f"reusing {corpus} (built {marker.get('built_at')}; --rebuild to regenerate)")
        return corpus, marker, False
    if corpus.exists() and not args.rebuild:
        progress(f"{corpus} is incomplete or from another generator version: rebuilding")
    return corpus, _build(corpus, args.entries, args.days, args.build_timeout), True


# ---------------------------------------------------------------- measurement


def _timed(call: Callable[[], int]) -> tuple[float, int]:
    with gc_paused():
        started = time.perf_counter()
        count = call()
        return (time.perf_counter() - started) * 1000, count


def _ours_count(source: Any, start: datetime, end: datetime) -> int:
    """The daemon's query, exactly: ``SystemdJournal.window`` (fresh Reader, matches, seek, normalize)."""
    return len(source.window(start, end))


def _journalctl_json(command: list[str], timeout: float) -> int:
    out = run_command(command, timeout, "journalctl")
    return len([json.loads(line) for line in out.splitlines() if line])


def _raw_count(journal: Any, directory: Path, matches: Sequence[tuple[str, str]], start: datetime,
               end: datetime) -> int:
    """Entries the Reader matches before ``normalize`` (what journalctl with the same matches must also return)."""
    reader = journal.Reader(path=str(directory))
    try:
        for index, (name, value) in enumerate(matches):
            if index:
                reader.add_disjunction()
            reader.add_match(**{name: value})
        reader.seek_realtime(start.timestamp())
        count = 0
        while entry := reader.get_next():
            if entry["__REALTIME_TIMESTAMP"] > end:
                break
            count += 1
        return count
    finally:
        reader.close()


def _measure(directory: Path, days: float, half_window_s: float, runs: int, timeout: float) -> dict[str, Any]:
    try:
        from systemd import journal  # noqa: PLC0415

        from nwp500d.journal import events  # noqa: PLC0415 - a clear message if it is missing, not a traceback
        from nwp500d.journal.reader import SystemdJournal  # noqa: PLC0415
    except ImportError as exc:
        raise BenchError(f"cannot import the reader: {exc}") from exc
    matches = [(str(name), str(value)) for name, value in events.JOURNAL_MATCHES]
    units = [value for name, value in matches if name == "_SYSTEMD_UNIT"]
    exact_terms: list[str] = []
    for name, value in matches:
        exact_terms += [*(["+"] if exact_terms else []), f"{name}={value}"]
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise BenchError("journalctl is not installed")
    source = SystemdJournal(directory)
    results: list[dict[str, Any]] = []
    for label, offset_us in _centre_offsets_us(days):
        centre_s = int(T0.timestamp()) + offset_us // US
        start = datetime.fromtimestamp(centre_s - half_window_s, UTC)
        end = datetime.fromtimestamp(centre_s + half_window_s, UTC)
        base = [journalctl, "-D", str(directory), "--no-pager", "-q", "-o", "json",
                "--since", f"@{start.timestamp():.6f}", "--until", f"@{end.timestamp():.6f}"]
        variants: dict[str, Callable[[], int]] = {
            "ours": functools.partial(_ours_count, source, start, end),
            "journalctl_exact": functools.partial(_journalctl_json, [*base, *exact_terms], timeout),
        }
        if units:
            unit_args = [arg for unit in units for arg in ("-u", unit)]
            variants["journalctl_units"] = functools.partial(_journalctl_json, [*base, *unit_args], timeout)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        counts = {name: call() for name, call in variants.items()}  # the warm-up run, unmeasured
        names = list(variants)
        for run in range(runs):
            for name in names[run % len(names):] + names[:run % len(names)]:
                elapsed, count = _timed(variants[name])
                samples[name].append(elapsed)
                counts[name] = count
        results.append({
            "centre": label,
            "centre_utc": datetime.fromtimestamp(centre_s, UTC).isoformat(),
            "raw_matched": _raw_count(journal, directory, matches, start, end),
            "counts": counts,
            "median_ms": {name: statistics.median(values) for name, values in samples.items()},
            "min_ms": {name: min(values) for name, values in samples.items()},
            "samples_ms": samples,
        })
    return {"matches": matches, "units": units, "journalctl_exact_args": exact_terms, "rows": results}


# ---------------------------------------------------------------- report


def _verdicts(row: dict[str, Any]) -> None:
    medians = row["median_ms"]
    ours = medians["ours"]
    theirs = [value for name, value in medians.items() if name != "ours"]
    row["speedup"] = {name: value / ours for name, value in medians.items() if name != "ours" and ours > 0}
    row["target_ms_met"] = ours <= TARGET_MS
    row["target_speedup_met"] = bool(theirs) and ours > 0 and min(theirs) / ours >= TARGET_SPEEDUP


def _print_table(report: dict[str, Any]) -> None:
    rows = report["measurement"]["rows"]
    has_units = any("journalctl_units" in row["median_ms"] for row in rows)
    header = ["centre", "matched ours/raw/jctl/-u", "ours ms", "jctl exact ms", "jctl -u ms", "exact/ours",
              "-u/ours", f"ours <= {TARGET_MS:g} ms", f">= {TARGET_SPEEDUP:g}x jctl"]
    body = []
    for row in rows:
        counts, medians, speedup = row["counts"], row["median_ms"], row["speedup"]
        units = str(counts.get("journalctl_units", "-"))
        body.append([
            row["centre"],
            f"{counts['ours']}/{row['raw_matched']}/{counts['journalctl_exact']}/{units}",
            f"{medians['ours']:.2f}",
            f"{medians['journalctl_exact']:.2f}",
            f"{medians['journalctl_units']:.2f}" if has_units else "-",
            f"{speedup['journalctl_exact']:.2f}x",
            f"{speedup['journalctl_units']:.2f}x" if has_units else "-",
            "met" if row["target_ms_met"] else "NOT met",
            "met" if row["target_speedup_met"] else "NOT met",
        ])
    print_columns(header, body)
    corpus, config, measurement = report["corpus"], report["config"], report["measurement"]
    print()
    files = corpus["files"]
    print(f"journal: {corpus['written']:,} entries, {config['days']:g} days from {corpus['t0']}, {len(files)} files, "
          f"{sum(files.values()) / 2 ** 20:,.0f} MiB, in {report['journal_dir']}; episodes: "
          + ", ".join(f"{kind} {count}" for kind, count in sorted(corpus["episodes"].items())))
    print(f"matches ({len(measurement['matches'])} disjuncts, JOURNAL_MATCHES): "
          + " | ".join(f"{name}={value}" for name, value in measurement["matches"]))
    print(f"method: window centre +/- {config['half_window_s']:g} s; each query run once unmeasured (warm cache), "
          f"then the median of {config['runs']} runs, queries interleaved with their order rotated per run, GC "
          "paused while timed. ours = SystemdJournal(dir).window(start, end) (fresh Reader, indexed matches, "
          "normalize); jctl = journalctl -D DIR --since @A --until @B -o json as a subprocess + json.loads of every "
          "line; exact = our disjunction as 'F=v + F=v ...'; -u = -u per _SYSTEMD_UNIT of our matches only.")
    print("matched: ours = HostEvents after normalize / raw = entries our matches select (Reader, untimed) / "
          "jctl = journalctl with the same disjunction (should equal raw) / -u = journalctl -u (no kernel, MESSAGE_ID "
          "or identifier disjuncts, plus PID 1's lines about those units).")
    mismatched = [row["centre"] for row in rows if row["raw_matched"] != row["counts"]["journalctl_exact"]]
    if mismatched:
        print(f"warning: journalctl with the same matches returned a different count at {', '.join(mismatched)}")
    print(f"targets: ours median <= {TARGET_MS:g} ms warm; ours >= {TARGET_SPEEDUP:g}x faster than the faster "
          "journalctl variant. Cold-cache figures are not measured (that needs drop_caches on the host).")
    print(f"host: {report['host']['python']} on {report['host']['platform']}, {report['host']['cpus']} CPUs; "
          f"systemd-python {report['host']['systemd_python']}; {report['host']['journalctl']}")
    built = report["build_seconds"]
    build = f"{built:.1f} s (this run)" if built is not None else "reused from cache"
    print(f"build: {build} "
          f"(recorded build time {corpus.get('build_seconds', '?')} s); measurement {report['measure_seconds']:.1f} s; "
          f"wall time {report['elapsed_seconds']:.1f} s")


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    add_json_flag(parser)
    parser.add_argument("--runs", type=positive_int, default=15, metavar="N", help="timed runs per query (median)")
    parser.add_argument("--half-window", dest="half_window_s", type=float, default=300.0, metavar="SECS",
                        help="window is centre +/- SECS (default 300, the daemon's +/- 5 min)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="where journals are cached (default ${XDG_CACHE_HOME:-~/.cache}/nwp500d-bench)")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the journal even if a complete one exists")
    parser.add_argument("--build-only", action="store_true", help="build (or check) the cached journal, then stop")
    parser.add_argument("--entries", type=positive_int, default=DEFAULT_ENTRIES, metavar="N",
                        help="journal size (default 1,000,000; other sizes are cached separately)")
    parser.add_argument("--days", type=float, default=DEFAULT_DAYS, metavar="D", help="journal span (default 30)")
    parser.add_argument("--build-timeout", type=float, default=BUILD_TIMEOUT_SECS, metavar="SECS")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECS", help="limit per journalctl run")
    return parser


def _bench(args: argparse.Namespace) -> dict[str, Any] | None:
    started = time.perf_counter()
    corpus_dir, marker, built = _corpus(args)
    build_seconds = marker["build_seconds"] if built else None
    if built:
        progress(f"built in {build_seconds:.1f} s: {marker['written']:,} entries, {len(marker['files'])} files")
    if args.build_only:
        print(json.dumps({"journal_dir": str(corpus_dir / "journal"), **marker}, indent=2))
        return None
    measure_started = time.perf_counter()
    progress(f"measuring {len(_centre_offsets_us(args.days))} windows x {args.runs} runs")
    measurement = _measure(corpus_dir / "journal", args.days, args.half_window_s, args.runs, args.timeout)
    measure_seconds = time.perf_counter() - measure_started
    for row in measurement["rows"]:
        _verdicts(row)
    journalctl = run_command(["journalctl", "--version"], 10, "journalctl --version").decode().splitlines()[0]
    return {
        "config": {"entries": args.entries, "days": args.days, "runs": args.runs, "half_window_s": args.half_window_s,
                   "targets": {"ours_median_ms": TARGET_MS, "speedup_over_journalctl": TARGET_SPEEDUP}},
        "journal_dir": str(corpus_dir / "journal"),
        "corpus": marker,
        "measurement": measurement,
        "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                 "systemd_python": version("systemd-python") or "?", "journalctl": journalctl},
        "build_seconds": build_seconds,
        "measure_seconds": measure_seconds,
        "elapsed_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    exit_on_sigterm()  # so `finally` removes a partial build and kills children
    try:
        report = _bench(args)
    except BenchError as exc:
        return fail(exc)
    if report is None:
        return 0
    return finish(report, as_json=args.json, table=_print_table)


if __name__ == "__main__":
    sys.exit(main())
