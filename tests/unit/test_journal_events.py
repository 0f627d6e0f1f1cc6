"""normalize() against the research corpus, against older and newer wordings, and against hostile entries.

The corpus is read with a deliberately tiny ``FIELD=value`` splitter (it holds text fields only), so these tests do not
depend on the export-format parser they would otherwise help to check.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nwp500d.journal.events import JOURNAL_MATCHES, KINDS, MESSAGE_IDS, MESSAGE_LIMIT, normalize
from nwp500d.model import HOST_EVENT_CATEGORIES, HostEvent

FIXTURE = Path("/work/shared/fixtures/journal-samples.export")
T = "1710234774656100"  # any valid __REALTIME_TIMESTAMP for hand-written entries
T_ISO = "2024-03-12T09:12:54.656Z"


def _fixture_entries() -> list[dict[str, str]]:
    entries = []
    for block in FIXTURE.read_text(encoding="utf-8").split("\n\n"):
        if block.strip():
            entries.append(dict(line.split("=", 1) for line in block.split("\n") if "=" in line))
    return entries


ENTRIES = _fixture_entries() if FIXTURE.exists() else []
needs_fixture = pytest.mark.skipif(not ENTRIES, reason=f"{FIXTURE} not present")

# index in the corpus -> (category, kind, interface); every other entry must normalise to None.
EXPECTED: dict[int, tuple[str, str, str | None]] = {
    0: ("time", "server_contacted", None), 1: ("time", "synchronized", None), 2: ("time", "time_changed", None),
    3: ("dns", "cache_flushed", None),
    4: ("cron", "session_opened", None), 5: ("cron", "job", None), 6: ("cron", "session_closed", None),
    7: ("wifi", "deauthenticated", "wlan0"), 8: ("wifi", "disconnected", "wlan0"),
    9: ("wifi", "supplicant_state", "wlan0"), 11: ("wifi", "supplicant_state", "wlan0"),
    13: ("wifi", "link_timeout", "wlan0"), 14: ("network_manager", "state_change", "wlan0"),
    15: ("network_manager", "manager_state", None), 16: ("network_manager", "activation_failed", "wlan0"),
    17: ("network_manager", "state_change", "wlan0"), 19: ("network_manager", "state_change", "wlan0"),
    20: ("network_manager", "manager_state", None), 21: ("wifi", "authenticating", "wlan0"),
    22: ("wifi", "authenticating", "wlan0"), 23: ("wifi", "associated", "wlan0"), 24: ("wifi", "connected", "wlan0"),
    25: ("wifi", "supplicant_state", "wlan0"), 26: ("network_manager", "dhcp_lease", "wlan0"),
    27: ("network_manager", "state_change", "wlan0"), 28: ("network_manager", "manager_state", None),
    30: ("network_manager", "manager_state", None),
    32: ("suspend", "suspend", None), 33: ("network_manager", "sleep", None),
    34: ("network_manager", "state_change", "wlan0"), 35: ("network_manager", "manager_state", None),
    36: ("suspend", "suspend", None), 37: ("suspend", "suspend", None), 38: ("suspend", "suspend", None),
    39: ("suspend", "suspend", None), 43: ("suspend", "suspend", None), 44: ("suspend", "resume", None),
    47: ("suspend", "resume", None), 48: ("suspend", "resume", None), 50: ("suspend", "resume", None),
    51: ("suspend", "resume", None), 53: ("suspend", "resume", None),
    55: ("network_manager", "wake", None), 56: ("dns", "cache_flushed", None),
    57: ("network_manager", "state_change", "wlan0"), 59: ("network_manager", "dhcp_lease", "wlan0"),
    60: ("network_manager", "manager_state", None),
    61: ("link", "down", "eth0"), 62: ("link", "down", "eth0"), 63: ("dhcp", "lease_lost", "eth0"),
    64: ("link", "up", "eth0"), 65: ("link", "up", "eth0"), 66: ("dhcp", "lease_acquired", "eth0"),
    67: ("dns", "degraded", None), 69: ("dns", "restored", None), 70: ("time", "clock_restored", None),
    71: ("link", "up", "eth0"), 72: ("link", "up", "eth0"),
    73: ("dhcp", "request", "eth0"), 74: ("dhcp", "ack", None), 75: ("dhcp", "bound", None),
    76: ("time", "server_timeout", None), 77: ("time", "server_contacted", None), 78: ("time", "synchronized", None),
    79: ("time", "time_changed", None),
    80: ("dhcp", "request", "eth0"), 81: ("dhcp", "ack", None), 82: ("dhcp", "bound", None),
    83: ("cron", "session_opened", None), 84: ("cron", "job", None),
    85: ("link", "down", "eth0"), 87: ("link", "up", "eth0"),
    88: ("dhcp", "request", "eth0"), 89: ("dhcp", "ack", None), 90: ("dhcp", "bound", None),
}


def _as_match_text(value: object) -> str | None:
    """A field value as sd-journal compares it against a match term (the stored bytes)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, int | str):
        return str(value)
    return None


def covered(entry: Mapping[str, object]) -> bool:
    return any(_as_match_text(entry.get(name)) == value for name, value in JOURNAL_MATCHES)


def event(**fields: object) -> HostEvent | None:
    entry: dict[str, object] = {"__REALTIME_TIMESTAMP": T}
    entry.update(fields)
    return normalize(entry)


def must(**fields: object) -> HostEvent:
    result = event(**fields)
    assert result is not None, fields
    assert result.kind in KINDS[result.category]
    assert covered({"__REALTIME_TIMESTAMP": T, **fields})
    return result


# --- the corpus ----------------------------------------------------------------------------------------------------


@needs_fixture
def test_corpus_has_the_documented_shape() -> None:
    assert len(ENTRIES) == 91
    assert len({entry["_BOOT_ID"] for entry in ENTRIES}) == 3


@needs_fixture
def test_every_corpus_entry_normalises_as_expected() -> None:
    got = {}
    for index, entry in enumerate(ENTRIES):
        result = normalize(entry)
        if result is not None:
            got[index] = (result.category, result.kind, result.interface)
    assert got == EXPECTED


@needs_fixture
def test_corpus_covers_every_category_with_its_kinds() -> None:
    events = [e for e in map(normalize, ENTRIES) if e is not None]
    kinds: dict[str, set[str]] = {}
    for item in events:
        kinds.setdefault(item.category, set()).add(item.kind)
    assert set(kinds) == set(HOST_EVENT_CATEGORIES)
    assert kinds == {
        "suspend": {"suspend", "resume"},
        "network_manager": {"state_change", "manager_state", "activation_failed", "dhcp_lease", "sleep", "wake"},
        "wifi": {"deauthenticated", "disconnected", "supplicant_state", "link_timeout", "authenticating",
                 "associated", "connected"},
        "dhcp": {"lease_lost", "lease_acquired", "request", "ack", "bound"},
        "link": {"down", "up"},
        "cron": {"job", "session_opened", "session_closed"},
        "time": {"server_contacted", "synchronized", "time_changed", "clock_restored", "server_timeout"},
        "dns": {"cache_flushed", "degraded", "restored"},
    }
    assert Counter(e.category for e in events) == Counter(kind[0] for kind in EXPECTED.values())


@needs_fixture
def test_corpus_details() -> None:
    by_index = {i: normalize(entry) for i, entry in enumerate(ENTRIES)}
    first = by_index[0]
    assert first is not None
    assert first.time == "2024-03-12T06:00:09.480Z"
    assert first.unit == "systemd-timesyncd.service"
    assert first.fields == {"server": "192.0.2.123:123", "server_name": "2.debian.pool.ntp.org"}
    change = by_index[14]
    assert change is not None
    assert change.message.startswith("device (wlan0): state change: activated -> failed")
    assert change.fields == {"old_state": "activated", "new_state": "failed", "reason": "supplicant-timeout",
                             "managed": "managed"}
    deauth = by_index[7]
    assert deauth is not None
    assert deauth.fields == {"bssid": "02:11:22:33:44:55", "reason": "7",
                             "reason_name": "CLASS3_FRAME_FROM_NONASSOC_STA"}
    assert deauth.unit is None  # kernel lines have no unit
    sleep = by_index[38]
    assert sleep is not None
    assert sleep.fields == {"sleep_type": "suspend"}
    late = by_index[43]
    assert late is not None
    assert late.fields == {"acpi_state": "S3", "stamp": "at_resume"}
    bound = by_index[75]
    assert bound is not None
    assert bound.fields == {"address": "192.168.1.77", "renewal_secs": "1717"}
    job = by_index[84]
    assert job is not None
    assert job.fields["user"] == "root"
    assert job.fields["command"].startswith("test -x /usr/sbin/anacron")
    lease = by_index[66]
    assert lease is not None
    assert lease.fields == {"address": "192.168.1.23/24", "gateway": "192.168.1.1", "server": "192.168.1.1"}


@needs_fixture
def test_every_accepted_corpus_entry_is_reachable_through_journal_matches() -> None:
    accepted = [entry for entry in ENTRIES if normalize(entry) is not None]
    assert accepted
    assert [entry.get("MESSAGE") for entry in accepted if not covered(entry)] == []


@needs_fixture
def test_reader_value_shapes_give_the_same_events_as_raw_strings() -> None:
    """The live Reader converts fields (aware local datetime, UUIDs, ints); the events must not notice."""
    tz = timezone(timedelta(hours=-7))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for entry in ENTRIES:
        converted: dict[str, object] = dict(entry)
        converted["__REALTIME_TIMESTAMP"] = (epoch + timedelta(microseconds=int(entry["__REALTIME_TIMESTAMP"]))
                                             ).astimezone(tz)
        for name in ("MESSAGE_ID", "_BOOT_ID", "_MACHINE_ID"):
            if name in entry:
                converted[name] = uuid.UUID(entry[name])
        for name in ("_PID", "PRIORITY", "SYSLOG_FACILITY", "_UID", "_GID"):
            if name in entry:
                converted[name] = int(entry[name])
        converted["MESSAGE"] = entry["MESSAGE"].encode()  # a Reader without a MESSAGE converter hands bytes
        assert normalize(converted) == normalize(entry), entry["MESSAGE"]


def test_kinds_table_matches_the_model_categories() -> None:
    assert tuple(KINDS) == HOST_EVENT_CATEGORIES
    for kinds in KINDS.values():
        assert len(set(kinds)) == len(kinds)
        assert all(kind.isidentifier() and kind == kind.lower() for kind in kinds)


def test_journal_matches_are_plain_pairs() -> None:
    assert len(set(JOURNAL_MATCHES)) == len(JOURNAL_MATCHES)
    assert all(isinstance(name, str) and isinstance(value, str) and value for name, value in JOURNAL_MATCHES)
    terms = set(JOURNAL_MATCHES)
    assert {("_TRANSPORT", "kernel"), ("_PID", "1"), ("SYSLOG_IDENTIFIER", "dhclient"),
            ("_SYSTEMD_UNIT", "NetworkManager.service"), ("_SYSTEMD_UNIT", "systemd-suspend.service")} <= terms
    assert {("MESSAGE_ID", message_id) for message_id in MESSAGE_IDS} <= terms


# --- wordings across versions --------------------------------------------------------------------------------------

SLEEP = {"SYSLOG_IDENTIFIER": "systemd-sleep", "_SYSTEMD_UNIT": "systemd-suspend.service"}
LOGIND = {"SYSLOG_IDENTIFIER": "systemd-logind", "_SYSTEMD_UNIT": "systemd-logind.service"}
PID1 = {"SYSLOG_IDENTIFIER": "systemd", "_PID": "1", "_SYSTEMD_UNIT": "init.scope"}
KERNEL = {"_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel"}
NM = {"SYSLOG_IDENTIFIER": "NetworkManager", "_SYSTEMD_UNIT": "NetworkManager.service"}
WPA = {"SYSLOG_IDENTIFIER": "wpa_supplicant", "_SYSTEMD_UNIT": "wpa_supplicant.service"}
NETWORKD = {"SYSLOG_IDENTIFIER": "systemd-networkd", "_SYSTEMD_UNIT": "systemd-networkd.service"}
DHCLIENT = {"SYSLOG_IDENTIFIER": "dhclient", "_SYSTEMD_UNIT": "networking.service"}
CRON = {"SYSLOG_IDENTIFIER": "CRON", "_SYSTEMD_UNIT": "cron.service"}
TIMESYNCD = {"SYSLOG_IDENTIFIER": "systemd-timesyncd", "_SYSTEMD_UNIT": "systemd-timesyncd.service"}
RESOLVED = {"SYSLOG_IDENTIFIER": "systemd-resolved", "_SYSTEMD_UNIT": "systemd-resolved.service"}

CASES: list[tuple[dict[str, str], str, str, dict[str, str]]] = [
    # suspend: systemd-sleep by MESSAGE_ID (252 wording), ≤ 245 and ≥ 256 wordings without it, hibernate variants
    ({**SLEEP, "MESSAGE_ID": "6bbd95ee977941e497c48be27c254128", "SLEEP": "suspend",
      "MESSAGE": "Entering sleep state 'suspend'..."}, "suspend", "suspend", {"sleep_type": "suspend"}),
    ({**SLEEP, "MESSAGE_ID": "6bbd95ee977941e497c48be27c254128",
      "MESSAGE": "Performing sleep operation 'hibernate'..."}, "suspend", "hibernate", {"sleep_type": "hibernate"}),
    ({**SLEEP, "MESSAGE_ID": "8811e6df2a8e40f58a94cea26f8ebf14", "SLEEP": "hibernate",
      "MESSAGE": "System returned from sleep state."}, "suspend", "resume", {"sleep_type": "hibernate"}),
    ({**SLEEP, "_SYSTEMD_UNIT": "systemd-suspend-then-hibernate.service", "SLEEP": "suspend-then-hibernate",
      "MESSAGE_ID": "6BBD95EE-9779-41E4-97C4-8BE27C254128", "MESSAGE": "x"},
     "suspend", "suspend", {"sleep_type": "suspend-then-hibernate"}),
    ({**SLEEP, "MESSAGE": "Suspending system..."}, "suspend", "suspend", {}),
    ({**SLEEP, "MESSAGE": "Hibernating system..."}, "suspend", "hibernate", {}),
    ({**SLEEP, "MESSAGE": "System resumed."}, "suspend", "resume", {}),
    ({**SLEEP, "MESSAGE": "Performing sleep operation 'suspend'..."}, "suspend", "suspend", {"sleep_type": "suspend"}),
    ({**SLEEP, "MESSAGE": "System returned from sleep operation 'suspend'."}, "suspend", "resume",
     {"sleep_type": "suspend"}),
    # logind: structured ACTION first, text when the ID is missing; 252 and newer "Operation … finished."
    ({**LOGIND, "MESSAGE_ID": "9e7066279dc8403da79ce4b1a69064b2", "ACTION": "hibernate",
      "MESSAGE": "The system will hibernate now!"}, "suspend", "hibernate", {"sleep_type": "hibernate"}),
    ({**LOGIND, "MESSAGE": "The system will suspend now!"}, "suspend", "suspend", {}),
    ({**LOGIND, "MESSAGE": "Operation 'sleep' finished."}, "suspend", "resume", {"operation": "sleep"}),
    ({**LOGIND, "MESSAGE": "Operation 'suspend' finished."}, "suspend", "resume", {"operation": "suspend"}),
    # PID 1: 252 "unit - description" with UNIT=, older description-only without it
    ({**PID1, "UNIT": "systemd-hibernate.service",
      "MESSAGE": "Starting systemd-hibernate.service - System Hibernate..."},
     "suspend", "hibernate", {"job_unit": "systemd-hibernate.service", "sleep_type": "hibernate"}),
    ({**PID1, "UNIT": "sleep.target", "MESSAGE": "Reached target Sleep."}, "suspend", "suspend",
     {"job_unit": "sleep.target"}),
    ({**PID1, "MESSAGE": "Reached target Sleep."}, "suspend", "suspend", {}),
    ({**PID1, "MESSAGE": "Stopped target Sleep."}, "suspend", "resume", {}),
    ({**PID1, "MESSAGE": "Starting Suspend..."}, "suspend", "suspend", {"sleep_type": "suspend"}),
    ({**PID1, "MESSAGE": "Started Suspend."}, "suspend", "resume", {"sleep_type": "suspend"}),
    ({**PID1, "MESSAGE": "Finished systemd-suspend.service - System Suspend."}, "suspend", "resume",
     {"sleep_type": "suspend"}),
    ({**PID1, "MESSAGE": "Starting Hybrid Suspend+Hibernate..."}, "suspend", "suspend", {"sleep_type": "hybrid-sleep"}),
    # kernel PM and ACPI
    ({**KERNEL, "MESSAGE": "PM: suspend entry (s2idle)"}, "suspend", "suspend", {"sleep_state": "s2idle"}),
    ({**KERNEL, "MESSAGE": "PM: hibernation: hibernation entry"}, "suspend", "hibernate", {"sleep_type": "hibernate"}),
    ({**KERNEL, "MESSAGE": "PM: hibernation exit"}, "suspend", "resume", {"sleep_type": "hibernate"}),
    ({**KERNEL, "MESSAGE": "PM: Entering mem sleep"}, "suspend", "suspend", {"sleep_state": "mem"}),
    ({**KERNEL, "MESSAGE": "ACPI: Preparing to enter system sleep state S4"}, "suspend", "hibernate",
     {"acpi_state": "S4", "stamp": "at_resume"}),
    ({**KERNEL, "MESSAGE": "ACPI: Waking up from system sleep state S3"}, "suspend", "resume", {"acpi_state": "S3"}),
    # NetworkManager: newer managed-type, older "(iface): device state change … [codes]", prefix optional
    ({**NM, "NM_DEVICE": "wlan0", "MESSAGE": "device (wlan0): state change: activated -> deactivating "
      "(reason 'sleeping', managed-type: 'full')"}, "network_manager", "state_change",
     {"old_state": "activated", "new_state": "deactivating", "reason": "sleeping", "managed": "full"}),
    ({**NM, "MESSAGE": "<info>  (wlan0): device state change: activated -> failed (reason 'supplicant-timeout') "
      "[100 120 11]"}, "network_manager", "state_change",
     {"old_state": "activated", "new_state": "failed", "reason": "supplicant-timeout"}),
    ({**NM, "MESSAGE": "NetworkManager state is now CONNECTED_LOCAL"}, "network_manager", "manager_state",
     {"new_state": "CONNECTED_LOCAL"}),
    ({**NM, "MESSAGE": "<info>  [1710248711.9052] manager: sleep requested (sleeping: no  enabled: yes)"},
     "network_manager", "sleep", {}),
    ({**NM, "MESSAGE": "manager: wake requested (sleeping: yes  enabled: yes)"}, "network_manager", "wake", {}),
    ({**NM, "MESSAGE": "device (eth0): carrier: link connected"}, "network_manager", "carrier_gained", {}),
    ({**NM, "MESSAGE": "device (eth0): carrier: link disconnected (deferring action for 6000 milliseconds)"},
     "network_manager", "carrier_lost", {"detail": "deferring action for 6000 milliseconds"}),
    ({**NM, "MESSAGE": "(eth0): link disconnected (deferring action for 4 seconds)"}, "network_manager",
     "carrier_lost", {"detail": "deferring action for 4 seconds"}),
    ({**NM, "MESSAGE": "dhcp4 (wlan0): state changed unknown -> bound"}, "network_manager", "dhcp_lease",
     {"old_state": "unknown", "new_state": "bound"}),
    ({**NM, "MESSAGE": "dhcp4 (wlan0): state changed bound -> expire"}, "network_manager", "dhcp_lease_lost",
     {"old_state": "bound", "new_state": "expire"}),
    ({**NM, "MESSAGE": "dhcp4 (wlan0): state changed no lease"}, "network_manager", "dhcp_lease_lost", {}),
    ({**NM, "MESSAGE": "(wlan0): Activation: failed for connection 'Home Net'"}, "network_manager",
     "activation_failed", {"connection": "Home Net"}),
    # Wi-Fi: wpa_supplicant, NM's view of it, the kernel's mac80211, networkd
    ({**WPA, "MESSAGE": "wlan0: CTRL-EVENT-DISCONNECTED bssid=02:11:22:33:44:55 reason=3 locally_generated=1"},
     "wifi", "disconnected", {"bssid": "02:11:22:33:44:55", "reason": "3", "locally_generated": "1"}),
    ({**WPA, "MESSAGE": "wlan0: CTRL-EVENT-BEACON-LOSS"}, "wifi", "beacon_loss", {}),
    ({**WPA, "MESSAGE": 'wlan0: CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid="HomeNet" auth_failures=1 duration=10 '
      "reason=WRONG_KEY"}, "wifi", "auth_failed", {"ssid": "HomeNet", "auth_failures": "1", "reason": "WRONG_KEY"}),
    ({**WPA, "MESSAGE": "wlan0: CTRL-EVENT-ASSOC-REJECT bssid=02:11:22:33:44:55 status_code=17"}, "wifi",
     "assoc_rejected", {"bssid": "02:11:22:33:44:55", "status_code": "17"}),
    ({**WPA, "MESSAGE": "CTRL-EVENT-ASSOC-REJECT status_code=1"}, "wifi", "assoc_rejected", {"status_code": "1"}),
    ({**WPA, "_SYSTEMD_UNIT": "wpa_supplicant@wlan0.service",
      "MESSAGE": "wlan0: CTRL-EVENT-CONNECTED - Connection to 02:11:22:33:44:55 completed (auth) [id=0 id_str=]"},
     "wifi", "connected", {"bssid": "02:11:22:33:44:55"}),
    ({**NM, "MESSAGE": "<info>  (wlan0): supplicant interface state: completed -> disconnected"}, "wifi",
     "supplicant_state", {"old_state": "completed", "new_state": "disconnected"}),
    ({**NM, "MESSAGE": "<warn>  [1710234774.6559] device (wlan0): link timed out."}, "wifi", "link_timeout", {}),
    ({**KERNEL, "MESSAGE": "wlan0: deauthenticated from 02:11:22:33:44:55 (Reason: 7)"}, "wifi", "deauthenticated",
     {"bssid": "02:11:22:33:44:55", "reason": "7"}),
    ({**KERNEL, "MESSAGE": "wlan0: deauthenticating from 02:11:22:33:44:55 by local choice (Reason: 3=DEAUTH_LEAVING)"},
     "wifi", "deauthenticated",
     {"bssid": "02:11:22:33:44:55", "reason": "3", "reason_name": "DEAUTH_LEAVING", "locally_generated": "1"}),
    ({**KERNEL, "MESSAGE": "wlan0: authenticate with 02:11:22:33:44:55 (local address=dc:a6:32:00:00:01)"}, "wifi",
     "authenticating", {"bssid": "02:11:22:33:44:55"}),
    ({**NETWORKD, "INTERFACE": "wlan0",
      "MESSAGE": "wlan0: Connected WiFi access point: Home (Net) (02:11:22:33:44:55)"},
     "wifi", "connected", {"ssid": "Home (Net)", "bssid": "02:11:22:33:44:55"}),
    # DHCP: dhclient 4.4 and 4.3, networkd new and old
    ({**DHCLIENT, "MESSAGE": "DHCPREQUEST of 192.168.1.77 on eth0 to 192.168.1.1 port 67 (xid=0x3bd2c1e5)"},
     "dhcp", "request", {"address": "192.168.1.77", "server": "192.168.1.1"}),
    ({**DHCLIENT, "MESSAGE": "DHCPACK from 192.168.1.1 (xid=0x3bd2c1e5)"}, "dhcp", "ack", {"server": "192.168.1.1"}),
    ({**DHCLIENT, "MESSAGE": "DHCPDISCOVER on eth0 to 255.255.255.255 port 67 interval 3"}, "dhcp", "discover",
     {"server": "255.255.255.255", "interval_secs": "3"}),
    ({**DHCLIENT, "_SYSTEMD_UNIT": "ifup@eth0.service", "MESSAGE": "No DHCPOFFERS received."}, "dhcp", "no_offers",
     {}),
    ({**DHCLIENT, "MESSAGE": "No working leases in persistent database - sleeping."}, "dhcp", "lease_lost", {}),
    ({**DHCLIENT, "_SYSTEMD_UNIT": "NetworkManager.service", "MESSAGE": "DHCPNAK from 192.168.1.1"}, "dhcp", "nak",
     {"server": "192.168.1.1"}),
    ({**NETWORKD, "INTERFACE": "eth0", "MESSAGE": "eth0: DHCPv4 address 192.168.1.23/24 via 192.168.1.1"}, "dhcp",
     "lease_acquired", {"address": "192.168.1.23/24", "gateway": "192.168.1.1"}),
    ({**NETWORKD, "MESSAGE": "eth0: DHCP lease lost"}, "dhcp", "lease_lost", {}),
    # link: several drivers and networkd
    ({**KERNEL, "MESSAGE": "e1000: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: RX"}, "link", "up",
     {"detail": "1000 Mbps Full Duplex, Flow Control: RX"}),
    ({**KERNEL, "MESSAGE": "igb 0000:03:00.0 eno1: igb: eno1 NIC Link is Down"}, "link", "down", {}),
    ({**KERNEL, "MESSAGE": "r8169 0000:02:00.0 enp2s0: Link is Down"}, "link", "down", {}),
    ({**KERNEL, "MESSAGE": "r8169 0000:02:00.0 eth0: link up"}, "link", "up", {}),
    ({**NETWORKD, "INTERFACE": "eth0", "MESSAGE": "eth0: Link DOWN"}, "link", "down", {}),
    ({**NETWORKD, "INTERFACE": "eth0", "MESSAGE": "eth0: Link UP"}, "link", "up", {}),
    # cron: Debian cron with and without "(uid=0)", cronie
    ({**CRON, "MESSAGE": "pam_unix(cron:session): session opened for user root by (uid=0)"}, "cron",
     "session_opened", {"user": "root"}),
    ({"SYSLOG_IDENTIFIER": "CROND", "_SYSTEMD_UNIT": "crond.service",
      "MESSAGE": "(backup) CMD (/usr/local/bin/nightly --quiet)"}, "cron", "job",
     {"user": "backup", "command": "/usr/local/bin/nightly --quiet"}),
    ({"SYSLOG_IDENTIFIER": "crond", "MESSAGE": "pam_unix(crond:session): session closed for user backup"}, "cron",
     "session_closed", {"user": "backup"}),
    # time: timesyncd ≤ 250 wordings, the newer "restored from", PID 1's text when the ID is absent
    ({**TIMESYNCD, "MESSAGE_ID": "7c8a41f37b764941a0e1780b1be2f037",
      "MESSAGE": "Synchronized to time server for the first time 192.0.2.1:123 (ntp.example)."}, "time",
     "synchronized", {"server": "192.0.2.1:123", "server_name": "ntp.example"}),
    ({**TIMESYNCD, "MESSAGE": "Initial synchronization to time server 192.0.2.1:123 (ntp.example)."}, "time",
     "synchronized", {"server": "192.0.2.1:123", "server_name": "ntp.example"}),
    ({**TIMESYNCD, "MESSAGE": "Synchronized to time server 91.189.89.198:123 (ntp.ubuntu.com)."}, "time",
     "synchronized", {"server": "91.189.89.198:123", "server_name": "ntp.ubuntu.com"}),
    ({**TIMESYNCD, "MESSAGE": "System clock time unset or jumped backwards, restored from recorded timestamp: "
      "Thu 2024-03-14 05:10:04 UTC"}, "time", "clock_restored", {"restored_time": "Thu 2024-03-14 05:10:04 UTC"}),
    ({**PID1, "MESSAGE": "Time has been changed"}, "time", "time_changed", {}),
    # dns: resolved old and new degraded wording, fallback vs system switch, bus client lists
    ({**RESOLVED, "MESSAGE": "Using degraded feature set (UDP) for DNS server 192.168.1.1."}, "dns", "degraded",
     {"feature_set": "UDP", "server": "192.168.1.1"}),
    ({**RESOLVED, "MESSAGE": "Switching to fallback DNS server 1.1.1.1#cloudflare-dns.com."}, "dns", "fallback",
     {"server": "1.1.1.1#cloudflare-dns.com"}),
    ({**RESOLVED, "MESSAGE": "Switching to system DNS server 192.168.1.1."}, "dns", "server_switched",
     {"server": "192.168.1.1"}),
    ({**RESOLVED, "MESSAGE": "wlan0: Bus client set DNS server list to: 192.168.1.1, 192.168.1.2"}, "dns",
     "servers_changed", {"servers": "192.168.1.1, 192.168.1.2"}),
    ({**RESOLVED, "MESSAGE": "Bus client reset DNS server list."}, "dns", "servers_changed", {}),
]


@pytest.mark.parametrize(("fields", "category", "kind", "details"), CASES,
                         ids=[f"{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_wording(fields: dict[str, str], category: str, kind: str, details: dict[str, str]) -> None:
    result = must(**fields)
    assert (result.category, result.kind) == (category, kind)
    assert result.fields == details
    assert result.time == T_ISO


def test_every_category_has_at_least_two_hand_written_wordings() -> None:
    counts = Counter(case[1] for case in CASES)
    assert set(counts) == set(HOST_EVENT_CATEGORIES)
    assert min(counts.values()) >= 2


def test_interface_comes_from_structured_fields_before_the_message() -> None:
    assert must(**NETWORKD, INTERFACE="eth1", MESSAGE="eth0: Lost carrier").interface == "eth1"
    assert must(**NM, NM_DEVICE="wlp2s0", MESSAGE="device (wlan0): link timed out.").interface == "wlp2s0"
    assert must(**NM, MESSAGE="device (wlan0): link timed out.").interface == "wlan0"
    # a netdev kernel line without an interface in its text falls back to the udev name; a PCI sysname never does
    netdev = must(**KERNEL, _KERNEL_SUBSYSTEM="net", _UDEV_SYSNAME="wlan0", MESSAGE="PM: suspend exit")
    assert netdev.interface == "wlan0"
    assert must(**KERNEL, _KERNEL_SUBSYSTEM="pci", _UDEV_SYSNAME="0000:00:1f.6",
                MESSAGE="PM: suspend exit").interface is None


def test_nm_prefix_is_optional_and_stripped() -> None:
    line = "device (wlan0): state change: activated -> failed (reason 'supplicant-timeout', sys-iface-state: 'managed')"
    plain = must(**NM, MESSAGE=line)
    for prefix in ("<info>  [1710234774.6561] ", "<info>   [1710234774.6561] ", "<warn>  ", "<debug> [1710234774] "):
        prefixed = must(**NM, MESSAGE=prefix + line)
        assert prefixed == plain
        assert prefixed.message == line


def test_structured_fields_decide_before_text() -> None:
    # ACTION says reboot: a reboot is not a sleep even though logind used the same MESSAGE_ID
    assert event(**LOGIND, MESSAGE_ID="9e7066279dc8403da79ce4b1a69064b2", ACTION="reboot",
                 MESSAGE="The system will reboot now!") is None
    # UNIT names an unrelated unit: its "Starting …" line is not a suspend whatever its description says
    assert event(**PID1, UNIT="backup.service", MESSAGE="Starting Suspend...") is None
    # suspend.target is reached only after resume, so PID 1's lines about it are not sleep markers
    assert event(**PID1, UNIT="suspend.target", MESSAGE="Reached target suspend.target - Suspend.") is None
    # SLEEP wins over the wording
    result = must(**SLEEP, MESSAGE_ID="6bbd95ee977941e497c48be27c254128", SLEEP="hibernate",
                  MESSAGE="Entering sleep state 'suspend'...")
    assert (result.kind, result.fields) == ("hibernate", {"sleep_type": "hibernate"})


def test_unrelated_entries_are_none() -> None:
    assert event(_SYSTEMD_UNIT="nwp500d.service", SYSLOG_IDENTIFIER="nwp500d",
                 MESSAGE="MQTT session to broker mqtt.example.net:8883 lost (rc=7)") is None
    assert event(_SYSTEMD_UNIT="foo.service", MESSAGE="eth0: Lost carrier") is None
    # `logger -t NetworkManager` from a login session must not fake a Wi-Fi drop
    assert event(_SYSTEMD_UNIT="session-3.scope", SYSLOG_IDENTIFIER="NetworkManager",
                 MESSAGE="device (wlan0): link timed out.") is None
    assert event(_SYSTEMD_UNIT="NetworkManager.service", SYSLOG_IDENTIFIER="nm-dispatcher",
                 MESSAGE="device (wlan0): link timed out.") is None
    assert event(_PID="1", SYSLOG_IDENTIFIER="bash", MESSAGE="Time has been changed") is None
    assert event(**KERNEL, MESSAGE="usb 1-1: new high-speed USB device number 2 using xhci_hcd") is None
    assert event(**NM, MESSAGE="device (wlan0): Activation: starting connection 'HomeNet'") is None
    assert event(**NM, NM_DEVICE="p2p-dev-wlan0",
                 MESSAGE="device (p2p-dev-wlan0): supplicant management interface state: completed -> disconnected"
                 ) is None
    assert event(**{**CRON, "SYSLOG_IDENTIFIER": "cron"}, MESSAGE="(CRON) INFO (pidfile fd = 3)") is None
    assert event(MESSAGE="eth0: Lost carrier") is None  # nobody wrote it


def test_time_shapes() -> None:
    fields = {**NETWORKD, "MESSAGE": "eth0: Lost carrier"}
    aware = datetime(2024, 3, 12, 11, 12, 54, 656100, tzinfo=timezone(timedelta(hours=2)))
    assert normalize({**fields, "__REALTIME_TIMESTAMP": aware}) == must(**fields)
    naive = datetime(2024, 3, 12, 9, 12, 54, 656100)  # noqa: DTZ001 - a hand-made entry; taken as UTC
    assert normalize({**fields, "__REALTIME_TIMESTAMP": naive}) == must(**fields)
    assert normalize({**fields, "__REALTIME_TIMESTAMP": int(T)}) == must(**fields)
    assert normalize({**fields, "__REALTIME_TIMESTAMP": T.encode()}) == must(**fields)
    for bad in (None, "", "abc", "-5", "0", "1.5", 1.7e15, True, "9" * 40, 10**30, 10**5000, [], object(),
                datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))):
        assert normalize({**fields, "__REALTIME_TIMESTAMP": bad}) is None, bad
    assert normalize(fields) is None


def test_message_is_decoded_cleaned_and_capped() -> None:
    result = must(**CRON, MESSAGE=b"(root) CMD (echo \xff\xfe\x1b[31mred\x07)")
    assert "\ufffd" in result.message
    assert "\x1b" not in result.message and "\x07" not in result.message
    assert "\x1b" not in result.fields["command"]
    long = must(**CRON, MESSAGE="(root) CMD (" + "x" * 1000 + ")")
    assert len(long.message) == MESSAGE_LIMIT
    assert len(long.fields["command"]) <= 200
    repeated = must(**NETWORKD, MESSAGE=["eth0: Gained carrier", "eth0: Lost carrier"])  # a repeated field
    assert repeated.kind == "up"


# --- hostile input -------------------------------------------------------------------------------------------------

_NAMES = ("MESSAGE", "MESSAGE_ID", "__REALTIME_TIMESTAMP", "_TRANSPORT", "_PID", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT",
          "UNIT", "SLEEP", "ACTION", "INTERFACE", "NM_DEVICE", "_KERNEL_SUBSYSTEM", "_UDEV_SYSNAME")
_VALUES = st.one_of(st.text(max_size=300), st.binary(max_size=300), st.integers(), st.none(),
                    st.lists(st.text(max_size=40), max_size=3), st.floats(allow_nan=True), st.booleans(),
                    st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.uuids())


def _check(result: HostEvent | None) -> None:
    if result is None:
        return
    assert result.category in KINDS
    assert result.kind in KINDS[result.category]
    assert len(result.message) <= MESSAGE_LIMIT
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in result.message)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in result.fields.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.sampled_from(_NAMES), st.text(max_size=20)), _VALUES, max_size=12))
def test_arbitrary_entries_never_raise(entry: dict[str, object]) -> None:
    _check(normalize(entry))


_KNOWN_LINES = sorted({entry["MESSAGE"] for entry in ENTRIES} | {case[0]["MESSAGE"] for case in CASES})
_SOURCES = [{k: v for k, v in case[0].items() if k != "MESSAGE"} for case in CASES] + [
    {"SYSLOG_IDENTIFIER": "logger"}, {"_SYSTEMD_UNIT": "foo.service"}, {"_PID": "1"}, {"_PID": 1}, {}]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(_SOURCES), line=st.sampled_from(_KNOWN_LINES),
       tail=st.one_of(st.just(""), st.text(max_size=50)), head=st.one_of(st.just(""), st.text(max_size=5)),
       as_bytes=st.booleans())
def test_plausible_entries_are_covered_by_journal_matches(
    source: dict[str, str], line: str, tail: str, head: str, as_bytes: bool
) -> None:
    text = head + line + tail
    entry: dict[str, object] = {**source, "__REALTIME_TIMESTAMP": T,
                                "MESSAGE": text.encode("utf-8", "surrogatepass") if as_bytes else text}
    result = normalize(entry)
    _check(result)
    if result is not None:
        assert covered(entry), entry


@pytest.mark.parametrize("size", [10**5, 10**7])
def test_huge_messages(size: int) -> None:
    messages: list[str | bytes] = [
        "eth0: " + "a" * size, "(root) CMD (" + "(" * size, b"\xff" * size,
        "wlan0: CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid=\"" + "\"" * size, "<info>  [" + "1" * size,
        "a " * (size // 2) + "NIC Link is Down",
    ]
    started = time.perf_counter()
    for fields in (NM, KERNEL, WPA, CRON, RESOLVED, DHCLIENT, NETWORKD, TIMESYNCD, PID1, LOGIND, SLEEP):
        for message in messages:
            _check(event(**fields, MESSAGE=message))
    assert time.perf_counter() - started < 10


def test_adversarial_text_is_cheap() -> None:
    """Every rule sees ~4 KiB of near-misses; catastrophic backtracking would show up as seconds here."""
    probes = [
        "x " * 2048, "eth0: " * 700, "a:" * 2048, "(" * 4096, "' " * 2048, "DHCPv4 address " + "1," * 2000,
        "Using degraded feature set " + "(" * 4000, "device (" + "w" * 4000,
        "dhcp4 (wlan0): state changed " + "a " * 2000,
        "Switching to fallback DNS server " + "." * 4000, "wlan0: Connected WiFi access point: " + "x (" * 1300,
    ]
    started = time.perf_counter()
    for fields in (NM, KERNEL, WPA, CRON, RESOLVED, DHCLIENT, NETWORKD, TIMESYNCD, PID1, LOGIND, SLEEP):
        for probe in probes:
            _check(event(**fields, MESSAGE=probe))
    assert time.perf_counter() - started < 5


class _Exploding(Mapping[str, object]):
    def __getitem__(self, key: str) -> object:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1

    def get(self, key: str, default: object = None) -> object:
        raise RuntimeError("boom")


def test_foreign_mappings_and_wrong_types() -> None:
    assert normalize(_Exploding()) is None
    assert normalize(cast(Any, None)) is None
    assert normalize(cast(Any, "MESSAGE=x")) is None
    assert normalize({}) is None
    odd: dict[Any, object] = {1: "x", None: b"y", ("t",): 3, "__REALTIME_TIMESTAMP": T, "_TRANSPORT": b"kernel",
                              "MESSAGE": b"PM: suspend exit"}
    result = normalize(odd)
    assert result is not None
    assert result.kind == "resume"
