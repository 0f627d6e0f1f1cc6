"""Journal entries → :class:`HostEvent`: one vocabulary for what systemd, NetworkManager and the kernel said.

The correlator needs to ask "did the Wi-Fi drop, did the host sleep?" without knowing which systemd, NetworkManager,
wpa_supplicant, dhclient or kernel driver wrote the line, so every version's wording collapses here to a
``(category, kind)`` pair plus a few quotable details. Pure on purpose: the same function serves the live Reader
(``datetime``/``UUID``/``int`` values), export files and tests (raw strings), and a journal is input we do not
control, so nothing here may raise on it.

Who wrote an entry is decided from trusted fields first (``_TRANSPORT``, ``_PID``, ``_SYSTEMD_UNIT``), then the
self-declared ``SYSLOG_IDENTIFIER``; an identifier that contradicts its unit is ignored so that ``logger -t
NetworkManager`` in some script cannot fake a Wi-Fi drop. Within a writer, MESSAGE_IDs and structured fields
(``SLEEP``, ``ACTION``, ``UNIT``, ``INTERFACE``, ``NM_DEVICE``) decide before any text does; text rules are anchored
and tolerate the wordings of several releases. Lines that say nothing about connectivity give ``None``.

Kinds per category (also :data:`KINDS`)::

    suspend          suspend, resume, hibernate
    network_manager  state_change, manager_state, sleep, wake, carrier_lost, carrier_gained, dhcp_lease,
                     dhcp_lease_lost, activation_failed
    wifi             disconnected, connected, beacon_loss, auth_failed, assoc_rejected, deauthenticated,
                     disassociated, link_timeout, supplicant_state, authenticating, associating, associated
    dhcp             discover, offer, request, ack, nak, bound, no_offers, lease_lost, lease_acquired
    link             down, up
    cron             job, session_opened, session_closed
    time             synchronized, time_changed, server_contacted, server_timeout, clock_restored
    dns              degraded, restored, cache_flushed, fallback, server_switched, servers_changed

Deliberately ignored: NetworkManager's P2P shadow device (``supplicant management interface state`` on
``p2p-dev-*``, an echo of the real interface that would double-count), "Activation: starting/successful" (the state
change lines carry the same news), and ``suspend.target``/``hibernate.target`` (PID 1 reaches them only *after*
resume, so neither "reached" nor "stopped" marks the start of a sleep). Kernel lines written between
``PM: suspend entry`` and resume reach the journal only after wake-up and carry the resume time; the one such line
kept (ACPI "Preparing to enter system sleep state") says so in ``fields["stamp"] = "at_resume"``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from nwp500d.clock import iso_utc
from nwp500d.model import HostEvent

__all__ = ["JOURNAL_MATCHES", "KINDS", "MESSAGE_IDS", "MESSAGE_LIMIT", "normalize"]

MESSAGE_LIMIT: Final = 300
"""Characters of MESSAGE kept: enough to quote a line in a verdict, bounded so a hostile entry cannot bloat a record."""

_FIELD_LIMIT = 200
_NAME_LIMIT = 128
_SCAN_LIMIT = 4096  # real lines of interest are far shorter; anything past this is noise or an attack on the regexes

KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "suspend": ("suspend", "resume", "hibernate"),
    "network_manager": ("state_change", "manager_state", "sleep", "wake", "carrier_lost", "carrier_gained",
                        "dhcp_lease", "dhcp_lease_lost", "activation_failed"),
    "wifi": ("disconnected", "connected", "beacon_loss", "auth_failed", "assoc_rejected", "deauthenticated",
             "disassociated", "link_timeout", "supplicant_state", "authenticating", "associating", "associated"),
    "dhcp": ("discover", "offer", "request", "ack", "nak", "bound", "no_offers", "lease_lost", "lease_acquired"),
    "link": ("down", "up"),
    "cron": ("job", "session_opened", "session_closed"),
    "time": ("synchronized", "time_changed", "server_contacted", "server_timeout", "clock_restored"),
    "dns": ("degraded", "restored", "cache_flushed", "fallback", "server_switched", "servers_changed"),
}

_SLEEP_START = "6bbd95ee977941e497c48be27c254128"
_SLEEP_STOP = "8811e6df2a8e40f58a94cea26f8ebf14"
_SHUTDOWN_SCHEDULED = "9e7066279dc8403da79ce4b1a69064b2"  # logind uses it for sleep too; ACTION tells which
_TIME_SYNC = "7c8a41f37b764941a0e1780b1be2f037"
_TIME_CHANGE = "c7a787079b354eaaa9e77b371893cd27"
MESSAGE_IDS: Final = (_SLEEP_START, _SLEEP_STOP, _SHUTDOWN_SCHEDULED, _TIME_SYNC, _TIME_CHANGE)

# Writers ("sources"). A unit may host several programs (ifupdown runs dhclient and wpa_supplicant under
# networking.service, NetworkManager may spawn dhclient); programs in _ROAMING are believed under any unit.
_UNIT_SOURCES: Final[Mapping[str, str]] = {
    "NetworkManager.service": "networkmanager",
    "wpa_supplicant.service": "wpa_supplicant",
    "systemd-logind.service": "logind",
    "systemd-suspend.service": "sleep",
    "systemd-hibernate.service": "sleep",
    "systemd-hybrid-sleep.service": "sleep",
    "systemd-suspend-then-hibernate.service": "sleep",
    "cron.service": "cron",
    "crond.service": "cron",
    "systemd-networkd.service": "networkd",
    "systemd-resolved.service": "resolved",
    "systemd-timesyncd.service": "timesyncd",
    "networking.service": "dhclient",
}
_IDENT_SOURCES: Final[Mapping[str, str]] = {
    "NetworkManager": "networkmanager",
    "wpa_supplicant": "wpa_supplicant",
    "systemd-logind": "logind",
    "systemd-sleep": "sleep",
    "CRON": "cron",
    "cron": "cron",
    "CROND": "cron",
    "crond": "cron",
    "dhclient": "dhclient",
    "systemd-networkd": "networkd",
    "systemd-resolved": "resolved",
    "systemd-timesyncd": "timesyncd",
}
_ROAMING = frozenset({"dhclient", "wpa_supplicant", "sleep"})

JOURNAL_MATCHES: Final[tuple[tuple[str, str], ...]] = (
    *(("MESSAGE_ID", message_id) for message_id in MESSAGE_IDS),
    *(("_SYSTEMD_UNIT", unit) for unit in _UNIT_SOURCES),
    *(("SYSLOG_IDENTIFIER", ident) for ident in _IDENT_SOURCES),
    ("_TRANSPORT", "kernel"),
    ("_PID", "1"),
)
"""``(field, value)`` terms for ``Reader.add_match``, each its own disjunct (OR). Every entry :func:`normalize`
accepts carries at least one of them, because it accepts only writers named by these very tables."""


class _Hit(NamedTuple):
    category: str
    kind: str
    interface: str | None
    fields: dict[str, str]


_KindRule = str | Callable[[re.Match[str]], str | None]


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    category: str
    kind: _KindRule
    extra: tuple[tuple[str, str], ...] = ()


_PRIVATE_GROUPS = frozenset({"iface", "verb"})


def _rule(regex: str, category: str, kind: _KindRule, **extra: str) -> _Rule:
    return _Rule(re.compile(regex), category, kind, tuple(extra.items()))


def _verb(table: Mapping[str, str]) -> Callable[[re.Match[str]], str | None]:
    """Kind chosen by the ``verb`` group, case-insensitively: drivers disagree on "Link is Down" vs "link down"."""
    return lambda match: table.get((match.group("verb") or "").lower())


def _sleep_kind(sleep_type: str | None) -> str:
    # Only a pure hibernate leaves RAM unpowered; hybrid and suspend-then-hibernate start as a suspend.
    return "hibernate" if sleep_type == "hibernate" else "suspend"


def _sleep_type_kind(match: re.Match[str]) -> str:
    return _sleep_kind(match.group("sleep_type"))


_SLEEP_ACTIONS = frozenset({"suspend", "hibernate", "hybrid-sleep", "suspend-then-hibernate", "sleep"})


def _logind_kind(match: re.Match[str]) -> str | None:
    what = match.group("verb").lower()
    if "suspend" in what or "sleep" in what:
        return "suspend"
    if "hibernate" in what:
        return "hibernate"
    return None  # power off, reboot, halt: not a connectivity event


def _operation_kind(match: re.Match[str]) -> str | None:
    return "resume" if match.group("operation") in _SLEEP_ACTIONS else None


def _acpi_kind(match: re.Match[str]) -> str:
    return "hibernate" if match.group("acpi_state") == "S4" else "suspend"


_LEASE_GOOD = frozenset({"bound", "bound6", "extended", "rebind", "renew", "reboot", "new lease"})
_LEASE_BAD = frozenset({"expire", "expire6", "fail", "timeout", "end", "abend", "nak", "release", "stop",
                        "terminated", "no lease", "lease lost"})


def _nm_dhcp_kind(match: re.Match[str]) -> str | None:
    state = (match.group("new_state") or match.group("verb") or "").lower()
    if state in _LEASE_GOOD:
        return "dhcp_lease"
    if state in _LEASE_BAD:
        return "dhcp_lease_lost"
    return None


def _resolved_switch_kind(match: re.Match[str]) -> str:
    return "fallback" if match.group("verb") == "fallback" else "server_switched"


_JOB_ENTER = frozenset({"reached target", "starting"})
_JOB_LEAVE = frozenset({"stopped target", "finished", "started"})  # ≤ v245 logged a finished oneshot as "Started"
_SLEEP_DESCRIPTIONS: Final = (  # unit descriptions, 252 ("System …") and older, in PID 1's job lines
    ("Suspend", "suspend"),
    ("Hibernate", "hibernate"),
    ("Hybrid Suspend+Hibernate", "hybrid-sleep"),
    ("Suspend then Hibernate", "suspend-then-hibernate"),
    ("Suspend; Hibernate if not used for a period of time", "suspend-then-hibernate"),
)
_SLEEP_JOB_UNITS: Final[Mapping[str, str | None]] = {
    "sleep.target": None,
    "systemd-suspend.service": "suspend",
    "systemd-hibernate.service": "hibernate",
    "systemd-hybrid-sleep.service": "hybrid-sleep",
    "systemd-suspend-then-hibernate.service": "suspend-then-hibernate",
}


def _job_kind(verb: str, sleep_type: str | None) -> str | None:
    if verb in _JOB_ENTER:
        return _sleep_kind(sleep_type)
    if verb in _JOB_LEAVE:
        return "resume"
    return None


def _job_verb_kind(sleep_type: str) -> Callable[[re.Match[str]], str | None]:
    return lambda match: _job_kind(match.group("verb").lower(), sleep_type)


_DEV = r"(?:device )?\((?P<iface>[^()\s]{1,64})\): "  # NM ≥ 1.0 "device (wlan0): ", older "(wlan0): "
_IFACE = r"(?P<iface>[^\s:/]{1,64})"  # a Linux interface name: no whitespace, ':' or '/'
_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
_REASON = r"\((?:Reason: |reason=)(?P<reason>\d+)(?:=(?P<reason_name>\w+))?\)"
_SERVER = r"(?P<server>\S+) \((?P<server_name>[^()]*)\)\.?"

_RULES: Final[Mapping[str, tuple[_Rule, ...]]] = {
    "sleep": (
        _rule(r"(?:Entering sleep state|Performing sleep operation) '(?P<sleep_type>[\w-]+)'(?:\.\.\.|…)?$",
              "suspend", _sleep_type_kind),
        _rule(r"(?P<verb>Suspending|Hibernating)(?: and suspending)? system(?:\.\.\.|…)?$", "suspend",
              _verb({"suspending": "suspend", "hibernating": "hibernate"})),
        _rule(r"System returned from sleep (?:state|operation '(?P<sleep_type>[\w-]+)')\.?$", "suspend", "resume"),
        _rule(r"System resumed\.?$", "suspend", "resume"),
    ),
    "logind": (
        _rule(r"The system will (?P<verb>[\w -]{1,40}?) now!?$", "suspend", _logind_kind),
        _rule(r"Operation '(?P<operation>[\w-]+)' finished\.?$", "suspend", _operation_kind),
    ),
    "pid1": (
        _rule(r"Time has been changed\.?$", "time", "time_changed"),
        _rule(r"(?P<verb>Reached target|Stopped target) (?:sleep\.target - )?Sleep\.?$", "suspend",
              _verb({"reached target": "suspend", "stopped target": "resume"})),
        *(_rule(r"(?P<verb>Starting|Finished|Started) (?:systemd-[\w-]+\.service - )?(?:System )?"
                + re.escape(description) + r"(?:\.\.\.|…|\.)?$", "suspend", _job_verb_kind(sleep_type),
                sleep_type=sleep_type)
          for description, sleep_type in _SLEEP_DESCRIPTIONS),
    ),
    "kernel": (
        _rule(r"PM: suspend entry \((?P<sleep_state>[\w-]+)\)$", "suspend", "suspend"),
        _rule(r"PM: suspend exit$", "suspend", "resume"),
        _rule(r"PM: Entering (?P<sleep_state>\w+) sleep$", "suspend", "suspend"),  # kernels before 4.15
        _rule(r"PM: Finishing wakeup\.?$", "suspend", "resume"),
        _rule(r"PM: (?:hibernation: )?hibernation entry$", "suspend", "hibernate", sleep_type="hibernate"),
        _rule(r"PM: (?:hibernation: )?hibernation exit$", "suspend", "resume", sleep_type="hibernate"),
        _rule(r"ACPI: (?:PM: )?Preparing to enter system sleep state (?P<acpi_state>S[0-5])$", "suspend",
              _acpi_kind, stamp="at_resume"),
        _rule(r"ACPI: (?:PM: )?Waking up from system sleep state (?P<acpi_state>S[0-5])$", "suspend", "resume"),
        # e1000e/igb/ixgbe "NIC Link is Up 1000 Mbps …", phylib "Link is Up - 1Gbps/Full - …", old r8169 "link up"
        _rule(r"(?:\S+ ){0,4}?" + _IFACE + r":? (?P<verb>NIC Link is (?:Down|Up)|Link is (?:Down|Up)|link (?:down|up))"
              r"\b[ ,.-]*(?P<detail>.*)$",
              "link", _verb({"nic link is down": "down", "link is down": "down", "link down": "down",
                             "nic link is up": "up", "link is up": "up", "link up": "up"})),
        _rule(r"IPv6: ADDRCONF\(NETDEV_CHANGE\): " + _IFACE + r": link becomes ready$", "link", "up"),
        _rule(_IFACE + r": deauthenticated from (?P<bssid>" + _MAC + r") " + _REASON, "wifi", "deauthenticated"),
        _rule(_IFACE + r": deauthenticating from (?P<bssid>" + _MAC + r") by local choice " + _REASON, "wifi",
              "deauthenticated", locally_generated="1"),
        _rule(_IFACE + r": disassociated from (?P<bssid>" + _MAC + r") " + _REASON, "wifi", "disassociated"),
        _rule(_IFACE + r": authentication with (?P<bssid>" + _MAC + r") timed out$", "wifi", "auth_failed",
              reason="timeout"),
        _rule(_IFACE + r": association with (?P<bssid>" + _MAC + r") timed out$", "wifi", "assoc_rejected",
              reason="timeout"),
        _rule(_IFACE + r": authenticate with (?P<bssid>" + _MAC + r")", "wifi", "authenticating"),
        _rule(_IFACE + r": associate with (?P<bssid>" + _MAC + r")", "wifi", "associating"),
        _rule(_IFACE + r": associated$", "wifi", "associated"),
    ),
    "networkmanager": (
        _rule(_DEV + r"(?:device )?state change: (?P<old_state>[\w-]+) -> (?P<new_state>[\w-]+) "
              r"\(reason '(?P<reason>[^']*)'(?:, (?:sys-iface-state|managed-type): '(?P<managed>[^']*)')?",
              "network_manager", "state_change"),
        _rule(r"(?:manager: )?NetworkManager state is now (?P<new_state>\w+)", "network_manager", "manager_state"),
        _rule(r"(?:manager: )?(?:sleep: )?(?P<verb>sleep|wake) requested", "network_manager",
              _verb({"sleep": "sleep", "wake": "wake"})),
        _rule(_DEV + r"(?:carrier: )?link (?P<verb>connected|disconnected)(?: \((?P<detail>[^()]*)\))?",
              "network_manager", _verb({"connected": "carrier_gained", "disconnected": "carrier_lost"})),
        _rule(r"dhcp[46] \((?P<iface>[^()\s]{1,64})\): state changed "
              r"(?:(?P<old_state>[\w-]+) -> (?P<new_state>[\w-]+)|(?P<verb>[\w ]{1,40}?))"
              r"(?:, address=(?P<address>[^\s,]+))?$",
              "network_manager", _nm_dhcp_kind),
        _rule(_DEV + r"Activation: failed for connection '(?P<connection>[^']*)'", "network_manager",
              "activation_failed"),
        _rule(_DEV + r"supplicant interface state: (?P<old_state>[\w-]+) -> (?P<new_state>[\w-]+)", "wifi",
              "supplicant_state"),
        _rule(_DEV + r"link timed out", "wifi", "link_timeout"),
    ),
    "wpa_supplicant": tuple(
        _rule(r"(?:" + _IFACE + r": )?" + regex, "wifi", kind, **extra)
        for regex, kind, extra in (
            (r"CTRL-EVENT-DISCONNECTED bssid=(?P<bssid>\S+) reason=(?P<reason>\d+)"
             r"(?: locally_generated=(?P<locally_generated>1))?", "disconnected", {}),
            (r"CTRL-EVENT-CONNECTED - Connection to (?P<bssid>\S+) completed", "connected", {}),
            (r"CTRL-EVENT-BEACON-LOSS", "beacon_loss", {}),
            (r"CTRL-EVENT-SSID-TEMP-DISABLED id=\d+ ssid=\"(?P<ssid>[^\"]{0,96})\"(?: auth_failures=(?P<auth_failures>"
             r"\d+))?(?: duration=\d+)?(?: reason=(?P<reason>\S+))?", "auth_failed", {}),
            (r"CTRL-EVENT-AUTH-REJECT (?P<bssid>" + _MAC + r") .*?status_code=(?P<status_code>\d+)", "auth_failed", {}),
            (r"WPA: 4-Way Handshake failed", "auth_failed", {"reason": "4way_handshake"}),
            (r"CTRL-EVENT-ASSOC-REJECT (?:bssid=(?P<bssid>\S+) )?status_code=(?P<status_code>\d+)",
             "assoc_rejected", {}),
            (r"(?:SME: )?Trying to authenticate with (?P<bssid>" + _MAC + r")", "authenticating", {}),
            (r"Trying to associate with (?:SSID '(?P<ssid>[^']{0,96})'|(?P<bssid>" + _MAC + r"))", "associating", {}),
            (r"Associated with (?P<bssid>" + _MAC + r")", "associated", {}),
        )
    ),
    "networkd": (
        _rule(_IFACE + r": (?P<verb>Lost carrier|Gained carrier|Link DOWN|Link UP)$", "link",
              _verb({"lost carrier": "down", "link down": "down", "gained carrier": "up", "link up": "up"})),
        _rule(_IFACE + r": DHCP lease lost$", "dhcp", "lease_lost"),
        _rule(_IFACE + r": DHCPv4 address (?P<address>[^\s,]+),?(?: (?:gateway|via) (?P<gateway>[^\s,]+?))?"
              r"(?: acquired from (?P<server>\S+?))?\.?$", "dhcp", "lease_acquired"),
        _rule(_IFACE + r": DHCPv6 address (?P<address>\S+)", "dhcp", "lease_acquired"),
        _rule(_IFACE + r": Connected WiFi access point: (?P<ssid>.{0,96}) \((?P<bssid>" + _MAC + r")\)$", "wifi",
              "connected"),
    ),
    "dhclient": (
        _rule(r"DHCPDISCOVER on " + _IFACE + r" to (?P<server>\S+) port \d+(?: interval (?P<interval_secs>\d+))?",
              "dhcp", "discover"),
        _rule(r"DHCPOFFER (?:of (?P<address>\S+) )?from (?P<server>\S+)", "dhcp", "offer"),
        _rule(r"DHCPREQUEST (?:(?:for|of) (?P<address>\S+) )?on " + _IFACE + r" to (?P<server>\S+) port \d+", "dhcp",
              "request"),
        _rule(r"DHCPACK (?:of (?P<address>\S+) )?from (?P<server>\S+)", "dhcp", "ack"),
        _rule(r"DHCPNAK from (?P<server>\S+)", "dhcp", "nak"),
        _rule(r"bound to (?P<address>\S+) -- renewal in (?P<renewal_secs>\d+) seconds\.?$", "dhcp", "bound"),
        _rule(r"No DHCPOFFERS received\.?$", "dhcp", "no_offers"),
        _rule(r"No working leases in persistent database - sleeping\.?$", "dhcp", "lease_lost"),
    ),
    "cron": (
        _rule(r"\((?P<user>[^()\s]{1,64})\) CMD \((?P<command>.*)\)$", "cron", "job"),
        _rule(r"pam_unix\(crond?:session\): session (?P<verb>opened|closed) for user (?P<user>[^\s()]{1,64})",
              "cron", _verb({"opened": "session_opened", "closed": "session_closed"})),
    ),
    "timesyncd": (
        _rule(r"Initial clock synchronization to (?P<synced_time>.+?)\.?$", "time", "synchronized"),
        _rule(r"(?:Initial synchronization to|Synchronized to) time server (?:for the first time )?" + _SERVER + "$",
              "time", "synchronized"),
        _rule(r"Contacted time server " + _SERVER + "$", "time", "server_contacted"),
        _rule(r"Timed out waiting for reply from " + _SERVER + "$", "time", "server_timeout"),
        _rule(r"System clock time unset or jumped backwards, restor(?:ing|ed) from recorded timestamp:? "
              r"(?P<restored_time>.+?)\.?$", "time", "clock_restored"),
    ),
    "resolved": (
        _rule(r"Using degraded feature set \(?(?P<feature_set>[\w+-]+)\)?"
              r"(?: instead of \(?(?P<previous_feature_set>[\w+-]+)\)?)? for DNS server (?P<server>\S+?)\.?$",
              "dns", "degraded"),
        _rule(r"Grace period over, resuming full feature set \((?P<feature_set>[\w+-]+)\) for DNS server "
              r"(?P<server>\S+?)\.?$", "dns", "restored"),
        _rule(r"Clock change detected\. Flushing caches\.?$", "dns", "cache_flushed"),
        _rule(r"Switching to (?:(?P<verb>fallback|system) )?DNS server (?P<server>\S+?)"
              r"(?: for interface " + _IFACE + r")?\.?$", "dns", _resolved_switch_kind),
        _rule(r"(?:" + _IFACE + r": )?Bus client "
              r"(?:set DNS server list to:? ?(?P<servers>.*)|reset DNS server list\.?)$", "dns", "servers_changed"),
    ),
}

_NM_PREFIX = re.compile(r"<[a-z]{2,8}>\s*(?:\[[0-9]+(?:\.[0-9]+)?\]\s*)?")
# C0/C1 controls, and line/paragraph separators and bidi overrides that can disguise a line in a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JOB_VERB = re.compile(r"(?P<verb>Reached target|Stopped target|Starting|Finished|Started)\b")


def _get(entry: Mapping[str, object], name: str) -> object:
    try:
        return entry.get(name)
    except Exception:  # noqa: BLE001 - a foreign mapping that fails on lookup simply lacks the field
        return None


def _text(value: object, limit: int) -> str | None:
    """A field as ``str`` from either entry shape; a repeated field (the Reader gives a list) counts by its first."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bytes | bytearray):
        return bytes(value[: limit * 4]).decode("utf-8", "replace")[:limit]
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)[:limit]
        except ValueError:  # more digits than int→str allows
            return None
    return None


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _name(entry: Mapping[str, object], field: str) -> str | None:
    text = _text(_get(entry, field), _NAME_LIMIT)
    if text is None:
        return None
    return _clean(text) or None


def _message_id(entry: Mapping[str, object]) -> str | None:
    text = _text(_get(entry, "MESSAGE_ID"), 64)
    if text is None:
        return None
    text = text.strip().lower().replace("-", "")
    return text if _HEX32.fullmatch(text) else None


def _is_pid1(value: object) -> bool:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value == 1
    return _text(value, 16) == "1"


def _timestamp(value: object) -> str | None:
    """The entry's realtime as UTC ISO: an aware ``datetime`` from the Reader, or decimal microseconds as exported."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        if isinstance(value, datetime):
            # A naive value can only come from a hand-made entry; journald's realtime is UTC-based.
            return iso_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
        if isinstance(value, int) and not isinstance(value, bool):
            usec = value
        else:
            text = _text(value, 32)
            if text is None or not _DIGITS.fullmatch(text.strip()):
                return None
            usec = int(text.strip())
        if usec <= 0:
            return None
        return iso_utc(_EPOCH + timedelta(microseconds=usec))
    except (OverflowError, ValueError, TypeError):  # beyond datetime's range, or a tzinfo that misbehaves
        return None


def _source(entry: Mapping[str, object]) -> str | None:
    """Which program wrote the entry, or None for everything the correlator does not care about.

    Compared exactly as stored (no trimming), because the journal's own matches in :data:`JOURNAL_MATCHES` are exact:
    anything accepted here must also be something the Reader would have been asked for.
    """
    if _text(_get(entry, "_TRANSPORT"), _NAME_LIMIT) == "kernel":
        return "kernel"
    ident = _text(_get(entry, "SYSLOG_IDENTIFIER"), _NAME_LIMIT)
    if _is_pid1(_get(entry, "_PID")) and ident in (None, "systemd"):
        return "pid1"
    unit = _text(_get(entry, "_SYSTEMD_UNIT"), _NAME_LIMIT)
    if ident is None:
        return _UNIT_SOURCES.get(unit) if unit is not None else None
    source = _IDENT_SOURCES.get(ident)
    if source is None:
        return None
    if unit is None or source in _ROAMING or _UNIT_SOURCES.get(unit) == source:
        return source
    return None


def _apply(rules: tuple[_Rule, ...], text: str) -> _Hit | None:
    for rule in rules:
        match = rule.pattern.match(text)
        if match is None:
            continue
        kind = rule.kind if isinstance(rule.kind, str) else rule.kind(match)
        if kind is None:
            return None
        fields = {name: _clean(value)[:_FIELD_LIMIT] for name, value in match.groupdict().items()
                  if value and name not in _PRIVATE_GROUPS}
        fields.update(rule.extra)
        iface = match.group("iface") if "iface" in rule.pattern.groupindex else None
        return _Hit(rule.category, kind, iface, {name: value for name, value in fields.items() if value})
    return None


def _sleep_job(unit: str, text: str) -> _Hit | None:
    """PID 1's job lines for sleep.target and systemd-*.service, recognised by the UNIT field and the leading verb."""
    match = _JOB_VERB.match(text)
    if match is None:
        return None
    sleep_type = _SLEEP_JOB_UNITS[unit]
    kind = _job_kind(match.group("verb").lower(), sleep_type)
    if kind is None:
        return None
    fields = {"job_unit": unit}
    if sleep_type is not None:
        fields["sleep_type"] = sleep_type
    return _Hit("suspend", kind, None, fields)


def _classify(source: str, text: str, entry: Mapping[str, object]) -> _Hit | None:
    message_id = _message_id(entry)
    rules = _RULES[source]
    if source == "sleep" and message_id in (_SLEEP_START, _SLEEP_STOP):
        worded = _apply(rules, text)
        sleep_type = _name(entry, "SLEEP") or (worded.fields.get("sleep_type") if worded else None)
        kind = _sleep_kind(sleep_type) if message_id == _SLEEP_START else "resume"
        return _Hit("suspend", kind, None, {"sleep_type": sleep_type[:_FIELD_LIMIT]} if sleep_type else {})
    if source == "logind" and message_id == _SHUTDOWN_SCHEDULED:
        action = _name(entry, "ACTION")
        if action is not None:
            if action not in _SLEEP_ACTIONS:
                return None
            return _Hit("suspend", _sleep_kind(action), None, {"sleep_type": action})
    if source == "timesyncd" and message_id == _TIME_SYNC:
        worded = _apply(rules, text)
        return _Hit("time", "synchronized", None, worded.fields if worded and worded.kind == "synchronized" else {})
    if source == "pid1":
        if message_id == _TIME_CHANGE:
            return _Hit("time", "time_changed", None, {})
        unit = _name(entry, "UNIT")
        if unit is not None:
            return _sleep_job(unit, text) if unit in _SLEEP_JOB_UNITS else None
    return _apply(rules, text)


def _interface(entry: Mapping[str, object], hit: _Hit) -> str | None:
    for field in ("INTERFACE", "NM_DEVICE"):
        name = _name(entry, field)
        if name is not None:
            return name[:64]
    if hit.interface:
        return hit.interface
    if _name(entry, "_KERNEL_SUBSYSTEM") == "net":  # for pci/platform devices the sysname is a bus address
        sysname = _name(entry, "_UDEV_SYSNAME")
        return sysname[:64] if sysname else None
    return None


def normalize(entry: Mapping[str, object]) -> HostEvent | None:
    """The host event an entry stands for, or None (unrelated, unrecognised, or too broken to place in time)."""
    time = _timestamp(_get(entry, "__REALTIME_TIMESTAMP"))
    if time is None:
        return None
    source = _source(entry)
    if source is None:
        return None
    text = _clean(_text(_get(entry, "MESSAGE"), _SCAN_LIMIT) or "")
    if source == "networkmanager":
        prefix = _NM_PREFIX.match(text)
        if prefix is not None:
            text = text[prefix.end():]
    hit = _classify(source, text, entry)
    if hit is None:
        return None
    unit = _name(entry, "_SYSTEMD_UNIT")
    return HostEvent(time=time, category=hit.category, kind=hit.kind, message=text[:MESSAGE_LIMIT],
                     unit=unit, interface=_interface(entry, hit), fields=hit.fields)


_BACK_KINDS = frozenset({
    ("link", "up"), ("network_manager", "carrier_gained"), ("network_manager", "dhcp_lease"),
    ("network_manager", "wake"), ("wifi", "connected"), ("dhcp", "bound"), ("dhcp", "ack"),
    ("dhcp", "lease_acquired"), ("suspend", "resume"),
})


def network_came_back(event: HostEvent) -> bool:
    """Whether this event says connectivity may be back: worth reconnecting now rather than at the next backoff."""
    if (event.category, event.kind) in _BACK_KINDS:
        return True
    state = event.fields.get("new_state", "").lower()
    if event.kind == "manager_state":
        return state.startswith("connected")
    return event.category == "network_manager" and event.kind == "state_change" and state == "activated"
