"""Journal fixtures built at test time: export text generated here, real ``.journal`` files via journal-remote.

The generator keeps the two invariants sd-journal silently depends on: realtime sorted across the whole file, and
monotonic increasing within each boot (across a suspend, monotonic stands still while realtime jumps). The
conversion's entry count is checked, because journal-remote skips an invalid entry with rc 0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nwp500d.journal.export_format import format_export

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
T0 = datetime(2026, 11, 20, 22, 0, 0, tzinfo=UTC)


def journal_remote_available() -> bool:
    return Path(JOURNAL_REMOTE).exists() and shutil.which("journalctl") is not None


@dataclass
class Boot:
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: datetime = T0
    monotonic_us: int = 5_000_000  # where the next entry's monotonic clock is


@dataclass
class JournalBuilder:
    """Entries appended in time order; ``suspend`` moves realtime without moving monotonic."""

    entries: list[dict[str, str | bytes]] = field(default_factory=list)
    now: datetime = T0
    boot: Boot = field(default_factory=Boot)

    def new_boot(self, at: datetime) -> None:
        self.now = at
        self.boot = Boot(started=at)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.boot.monotonic_us += int(seconds * 1e6)

    def suspend(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)  # the monotonic clock stands still

    def add(self, message: str, **fields: str | bytes) -> datetime:
        self.advance(1)
        realtime = int(self.now.timestamp() * 1e6)
        self.entries.append({
            "__REALTIME_TIMESTAMP": str(realtime),
            "__MONOTONIC_TIMESTAMP": str(self.boot.monotonic_us),
            "_BOOT_ID": self.boot.boot_id,
            "_HOSTNAME": "testhost",
            "PRIORITY": "6",
            "MESSAGE": message,
            **fields,
        })
        return self.now

    def export_text(self, entries: list[dict[str, str | bytes]] | None = None) -> bytes:
        return format_export(self.entries if entries is None else entries)


def write_journal(path: Path, export: bytes, expected: int) -> None:
    """Convert export text into (or append to) a real .journal file, checking nothing was dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([JOURNAL_REMOTE, "-o", str(path), "-"], input=export, capture_output=True,
                            timeout=120, check=False)
    stderr = result.stderr.decode(errors="replace")
    match = re.search(r"Finishing after writing (\d+) entries", stderr)
    assert result.returncode == 0 and match is not None, stderr
    assert int(match.group(1)) == expected, f"journal-remote wrote {match.group(1)} of {expected}: {stderr}"


def nm(builder: JournalBuilder, message: str, domain: str = "DEVICE", device: str = "wlan0") -> datetime:
    return builder.add(message, _SYSTEMD_UNIT="NetworkManager.service", SYSLOG_IDENTIFIER="NetworkManager",
                       _TRANSPORT="journal", NM_LOG_DOMAINS=domain, NM_DEVICE=device)


def kernel(builder: JournalBuilder, message: str) -> datetime:
    return builder.add(message, _TRANSPORT="kernel", SYSLOG_IDENTIFIER="kernel", SYSLOG_FACILITY="0")


def build_corpus(builder: JournalBuilder) -> dict[str, datetime]:
    """Every category in at least two wordings, three boots, a 4-hour suspend. Returns named moments."""
    marks: dict[str, datetime] = {}
    _boot_a(builder, marks)
    _boot_b(builder, marks)
    _boot_c(builder, marks)
    return marks


def _boot_a(b: JournalBuilder, marks: dict[str, datetime]) -> None:
    """A NetworkManager laptop: NTP, cron, a Wi-Fi deauth and recovery, then a 4-hour suspend."""
    b.add("Initial clock synchronization to Fri 2026-11-20 22:00:02.000000 UTC.",
          _SYSTEMD_UNIT="systemd-timesyncd.service", SYSLOG_IDENTIFIER="systemd-timesyncd",
          MESSAGE_ID="7c8a41f37b764941a0e1780b1be2f037")
    b.add("Time has been changed", _PID="1", SYSLOG_IDENTIFIER="systemd", _SYSTEMD_UNIT="init.scope",
          MESSAGE_ID="c7a787079b354eaaa9e77b371893cd27")
    b.add("(root) CMD (cd / && run-parts --report /etc/cron.hourly)", _SYSTEMD_UNIT="cron.service",
          SYSLOG_IDENTIFIER="CRON", _TRANSPORT="syslog", SYSLOG_FACILITY="9")
    b.add("pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", _SYSTEMD_UNIT="cron.service",
          SYSLOG_IDENTIFIER="CRON", _TRANSPORT="syslog", SYSLOG_FACILITY="10")
    b.advance(600)
    marks["wifi_trouble"] = kernel(
        b, "wlan0: deauthenticated from 02:11:22:33:44:55 (Reason: 7=CLASS3_FRAME_FROM_NONASSOC_STA)"
    )
    b.add("wlan0: CTRL-EVENT-DISCONNECTED bssid=02:11:22:33:44:55 reason=7", _SYSTEMD_UNIT="wpa_supplicant.service",
          SYSLOG_IDENTIFIER="wpa_supplicant", _TRANSPORT="syslog", PRIORITY="5")
    nm(b, "<info>  [1763676662.1234] device (wlan0): state change: activated -> failed (reason 'supplicant-timeout', "
          "sys-iface-state: 'managed')")
    nm(b, "<warn>  [1763676663.0000] device (wlan0): link timed out.", domain="DEVICE,WIFI")
    nm(b, "manager: NetworkManager state is now CONNECTED_LOCAL", domain="CORE", device="")
    b.add("wlan0: CTRL-EVENT-CONNECTED - Connection to 02:11:22:33:44:55 completed [id=0 id_str=]",
          _SYSTEMD_UNIT="wpa_supplicant.service", SYSLOG_IDENTIFIER="wpa_supplicant", _TRANSPORT="syslog")
    nm(b, "device (wlan0): state change: ip-config -> activated (reason 'none', managed-type: 'full')")
    nm(b, "dhcp4 (wlan0): state changed new lease, address=192.168.1.50", domain="DHCP4")
    b.advance(1800)
    # The suspend: logind, PID 1, systemd-sleep, kernel; 4 hours with the monotonic clock standing still.
    marks["suspend"] = b.add("The system will suspend now!", _SYSTEMD_UNIT="systemd-logind.service",
                             SYSLOG_IDENTIFIER="systemd-logind", MESSAGE_ID="9e7066279dc8403da79ce4b1a69064b2",
                             ACTION="suspend", PRIORITY="5")
    nm(b, "manager: sleep: sleep requested (sleeping: no  enabled: yes)", domain="SUSPEND", device="")
    b.add("Reached target sleep.target - Sleep.", _PID="1", SYSLOG_IDENTIFIER="systemd", _SYSTEMD_UNIT="init.scope",
          UNIT="sleep.target", MESSAGE_ID="39f53479d3a045ac8e11786248231fbf")
    b.add("Entering sleep state 'suspend'...", _SYSTEMD_UNIT="systemd-suspend.service",
          SYSLOG_IDENTIFIER="systemd-sleep", MESSAGE_ID="6bbd95ee977941e497c48be27c254128", SLEEP="suspend")
    kernel(b, "PM: suspend entry (deep)")
    b.suspend(4 * 3600)
    marks["resume"] = kernel(b, "PM: suspend exit")
    b.add("System returned from sleep state.", _SYSTEMD_UNIT="systemd-suspend.service",
          SYSLOG_IDENTIFIER="systemd-sleep", MESSAGE_ID="8811e6df2a8e40f58a94cea26f8ebf14", SLEEP="suspend")
    b.add("Operation 'sleep' finished.", _SYSTEMD_UNIT="systemd-logind.service", SYSLOG_IDENTIFIER="systemd-logind")
    nm(b, "manager: sleep: wake requested (sleeping: yes  enabled: yes)", domain="SUSPEND", device="")
    b.add("Clock change detected. Flushing caches.", _SYSTEMD_UNIT="systemd-resolved.service",
          SYSLOG_IDENTIFIER="systemd-resolved")
    marks["drop_after_resume"] = b.now + timedelta(seconds=70)
    b.advance(3600)


def _boot_b(b: JournalBuilder, marks: dict[str, datetime]) -> None:
    """A networkd + e1000e desktop: carrier lost and back, DHCP, resolved downgrades."""
    b.new_boot(b.now + timedelta(hours=2))
    marks["boot_b"] = kernel(b, "e1000e 0000:00:1f.6 eth0: NIC Link is Down")
    b.add("eth0: Lost carrier", _SYSTEMD_UNIT="systemd-networkd.service", SYSLOG_IDENTIFIER="systemd-networkd",
          INTERFACE="eth0")
    b.add("eth0: DHCP lease lost", _SYSTEMD_UNIT="systemd-networkd.service", SYSLOG_IDENTIFIER="systemd-networkd",
          INTERFACE="eth0")
    kernel(b, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx")
    b.add("eth0: Gained carrier", _SYSTEMD_UNIT="systemd-networkd.service", SYSLOG_IDENTIFIER="systemd-networkd",
          INTERFACE="eth0")
    b.add("eth0: DHCPv4 address 192.168.1.23/24, gateway 192.168.1.1 acquired from 192.168.1.1",
          _SYSTEMD_UNIT="systemd-networkd.service", SYSLOG_IDENTIFIER="systemd-networkd", INTERFACE="eth0")
    b.add("Using degraded feature set UDP instead of UDP+EDNS0 for DNS server 192.168.1.1.",
          _SYSTEMD_UNIT="systemd-resolved.service", SYSLOG_IDENTIFIER="systemd-resolved")
    marks["boot_b_end"] = b.add("Switching to fallback DNS server 1.1.1.1#cloudflare-dns.com.",
                                _SYSTEMD_UNIT="systemd-resolved.service", SYSLOG_IDENTIFIER="systemd-resolved")


def _boot_c(b: JournalBuilder, marks: dict[str, datetime]) -> None:
    """A Raspberry Pi (ifupdown + dhclient, bcmgenet, no RTC) in older wordings, and unrelated noise."""
    b.new_boot(b.now + timedelta(hours=1))
    marks["boot_c"] = b.add("System clock time unset or jumped backwards, restoring from recorded timestamp: "
                            "Sat 2026-11-21 05:00:00 UTC", _SYSTEMD_UNIT="systemd-timesyncd.service",
                            SYSLOG_IDENTIFIER="systemd-timesyncd")
    b.add("Synchronized to time server for the first time 192.0.2.124:123 (2.debian.pool.ntp.org).",
          _SYSTEMD_UNIT="systemd-timesyncd.service", SYSLOG_IDENTIFIER="systemd-timesyncd")
    kernel(b, "bcmgenet fd580000.ethernet eth0: Link is Down")
    kernel(b, "bcmgenet fd580000.ethernet eth0: Link is Up - 1Gbps/Full - flow control rx/tx")
    b.add("DHCPREQUEST for 192.168.1.77 on eth0 to 192.168.1.1 port 67", _SYSTEMD_UNIT="networking.service",
          SYSLOG_IDENTIFIER="dhclient", _TRANSPORT="syslog")
    b.add("DHCPACK of 192.168.1.77 from 192.168.1.1", _SYSTEMD_UNIT="networking.service",
          SYSLOG_IDENTIFIER="dhclient", _TRANSPORT="syslog")
    b.add("bound to 192.168.1.77 -- renewal in 1717 seconds.", _SYSTEMD_UNIT="networking.service",
          SYSLOG_IDENTIFIER="dhclient", _TRANSPORT="syslog")
    b.add("(pi) CMD (/usr/local/bin/backup.sh)", _SYSTEMD_UNIT="cron.service", SYSLOG_IDENTIFIER="CRON",
          _TRANSPORT="syslog", SYSLOG_FACILITY="9")
    b.add("Suspending system...", _SYSTEMD_UNIT="systemd-suspend.service", SYSLOG_IDENTIFIER="systemd-sleep")
    b.suspend(600)
    b.add("System resumed.", _SYSTEMD_UNIT="systemd-suspend.service", SYSLOG_IDENTIFIER="systemd-sleep")
    # Noise the reader must not return.
    b.add("Started Session 3 of User pi.", _SYSTEMD_UNIT="systemd-logind.service", SYSLOG_IDENTIFIER="systemd-logind")
    marks["end"] = b.add("GET /index.html 200", _SYSTEMD_UNIT="nginx.service", SYSLOG_IDENTIFIER="nginx")
