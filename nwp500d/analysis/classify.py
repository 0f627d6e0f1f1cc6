"""The classifier (pure, deterministic): drops + their host events → causes with evidence and the guide's fixes.

It follows the guide's pattern table — regular intervals → server limit; irregular → network/NAT; after many
messages → rate limiting; during system events → host configuration — refined by what a client can observe of AWS
IoT's server-side reasons (reference/anchors.md §B4). Two passes:

1. each drop on its own: credentials and keep-alive mistakes, strong host events in its causal window (suspend, link
   down, Wi-Fi loss, NetworkManager leaving "activated"), DNS, publish rate, a hang-up right after a publish, session
   ages that match known server lifetimes, then the error name;
2. the history: weak host events (cron, time, DHCP renewals) count only if they accompany most drops — a cron job
   every ten minutes lands near some drops by chance; session ages or intervals that cluster (low coefficient of
   variation) mark a server-side period; ping-pong sessions of seconds mark a duplicate client id; timeouts that
   follow idle periods mark a NAT idle timeout.

Every verdict lists the facts it used, in words a user can check against their own export.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nwp500d.analysis.verdict import Analysis, DropVerdict, Finding
from nwp500d.clock import iso_utc, parse_iso_utc
from nwp500d.model import ConnectionDropEvent, ConnectionEvent
from nwp500d.summary import format_duration

AWS_PUBLISH_LIMIT = 100.0  # publishes per second per connection
WEBSOCKET_LIFETIME = 86_400.0
KEEP_ALIVE_MISCONFIG_PERIOD = 1_800.0  # keep-alive > 1200 s: AWS uses 1200, closes at 1.5x
NAT_IDLE_SUSPECT = 240.0  # home NAT idle timeouts start around 240-300 s
DUPLICATE_ID_SESSION = 10.0
CAUSAL_BEFORE = 30.0  # host events this long before the last good moment can still be the cause
CAUSAL_AFTER = 5.0
WEAK_MAJORITY = 0.5
REGULAR_CV = 0.1
LOSS_RETRANS = 10
LOSS_TIMEOUTS = 3
REACHABLE_CONNECT_SECS = 0.5

CATEGORY_PRIORITY = ("suspend", "link", "wifi", "network_manager", "dhcp", "time", "cron")
_RANK = {category: rank for rank, category in enumerate(CATEGORY_PRIORITY)}
WEAK_CATEGORIES = frozenset({"cron", "time", "dhcp"})
STRONG_KINDS = {
    "suspend": {"suspend", "resume", "hibernate"},
    "link": {"down"},
    "wifi": {"disconnected", "deauthenticated", "disassociated", "beacon_loss", "link_timeout", "auth_failed",
             "assoc_rejected"},
    "network_manager": {"state_change", "sleep", "carrier_lost", "activation_failed", "dhcp_lease_lost"},
    "dhcp": {"lease_lost", "no_offers", "nak"},
}
CREDENTIAL_ERRORS = ("AWS_ERROR_HTTP_WEBSOCKET_UPGRADE_FAILURE", "CONNACK_NOT_AUTHORIZED",
                     "CONNACK_BAD_USERNAME_OR_PASSWORD", "CONNACK_IDENTIFIER_REJECTED")
NETWORK_DOWN_ERRORS = ("AWS_IO_SOCKET_NETWORK_DOWN", "AWS_IO_SOCKET_NO_ROUTE_TO_HOST")

RECOMMENDATIONS = {
    ("server_timeout", "websocket_lifetime"): (
        "AWS IoT closes WebSocket connections after 24 hours; nothing on this host causes these drops and "
        "nwp500d reconnects with fresh credentials at once. No fix is needed unless the reconnect fails."),
    ("server_timeout", "credential_lifetime"): (
        "Sessions end when the temporary AWS credentials expire; this is server-side. nwp500d signs in again "
        "before reconnecting. If it hurts, report the period to Navien (the AWS account owner)."),
    ("server_timeout", None): (
        "Regular drops point to a server-side limit or a scheduled event (the guide: AWS timeout, check "
        "CloudWatch). CloudWatch belongs to Navien's AWS account: keep the daemon running 24 h+ to confirm the "
        "period, then report it to Navien support with this export."),
    ("network", "nat_idle_timeout"): (
        "A NAT or firewall forgets idle connections before the keep-alive refreshes them: set "
        "mqtt.keep_alive_secs below the NAT idle timeout (60-120 s; the guide's fix), or raise the router's "
        "TCP established timeout."),
    ("network", "dns"): (
        "DNS resolution is failing or degraded: check the resolver (systemd-resolved, the router) and consider a "
        "stable upstream DNS server."),
    ("network", "packet_loss"): (
        "Retransmissions and timeouts point to packet loss: check Wi-Fi signal strength (RSSI), cabling and the "
        "router; a wired link or a better access point usually fixes it."),
    ("network", "link"): (
        "The network went away under the session: check the interface, cable or Wi-Fi association at those "
        "times."),
    ("network", None): (
        "Irregular drops without host events point to the network path (the guide: NAT timeout, Wi-Fi): reduce "
        "mqtt.keep_alive_secs to 60-120 s, check Wi-Fi signal and the router's NAT idle timeout."),
    ("rate_limit", None): (
        "Drops follow bursts of messages (AWS IoT allows 100 publishes/s per connection): reduce the message "
        "rate or spread commands out."),
    ("system_event", "suspend"): (
        "The host suspends: disable suspend for this machine (e.g. `systemctl mask sleep.target "
        "suspend.target`) or accept a drop per sleep."),
    ("system_event", "wifi"): (
        "Wi-Fi drops the association: disable Wi-Fi power saving (NetworkManager: wifi.powersave = 2), check "
        "signal strength, or use a wired link."),
    ("system_event", "link"): (
        "The network link goes down: check the cable, switch port or driver power management (ethtool, "
        "EEE)."),
    ("system_event", "network_manager"): (
        "NetworkManager takes the connection down: check `journalctl -u NetworkManager` at those times "
        "(connectivity checks, power saving, connection profile changes)."),
    ("system_event", "dhcp"): (
        "DHCP renewals disturb the connection: lengthen the lease on the router or give the host a static "
        "address."),
    ("system_event", "cron"): (
        "A scheduled job runs at the time of the drops: reschedule it or find what it does to the network."),
    ("system_event", "time"): (
        "Clock jumps coincide with the drops: make time synchronisation reliable (an RTC, or NTP before "
        "nwp500d starts: After=time-sync.target)."),
    ("client_config", "duplicate_client_id"): (
        "Another client uses the same MQTT client id and the broker keeps switching between the two: make sure "
        "only one nwp500d (or other client) runs per account with this id (mqtt.client_id: null gives each "
        "installation its own)."),
    ("client_config", "credentials"): (
        "The broker refused the credentials: check the host's clock (SigV4 fails on a skewed clock) and that "
        "sign-in works (`journalctl -u nwp500d`)."),
    ("client_config", "keep_alive"): (
        "mqtt.keep_alive_secs is outside AWS IoT's 30-1200 s range; AWS then uses 1200 s and closes idle "
        "sessions after 30 minutes: set 60-120 s."),
    ("client_config", "policy"): (
        "The broker hangs up right after a publish: the topic or payload is not allowed by the cloud's policy "
        "(or exceeds 128 KB). Check what was sent just before."),
}


@dataclass(frozen=True)
class Settings:
    keep_alive_secs: int = 60
    ping_timeout_secs: float = 10.0
    credential_lifetime_secs: float = 3600.0
    min_drops: int = 3
    baseline_hours: float = 24.0
    nat_bracket: tuple[int | None, int | None] | None = None  # from `nwp500d experiment keepalive`: (lower, upper]


@dataclass
class _Call:
    """A drop's classification in progress (mutable between the two passes)."""

    drop: ConnectionDropEvent
    cause: str
    subcause: str | None
    evidence: list[str]
    weak: str | None = None  # a weak host-event category seen in the causal window


def classify(
    drops: Sequence[ConnectionDropEvent],
    *,
    connections: Sequence[ConnectionEvent] = (),
    observed_hours: float | None = None,
    settings: Settings | None = None,
) -> Analysis:
    settings = settings or Settings()
    ordered = sorted(drops, key=lambda d: d.timestamp)
    hours = observed_hours if observed_hours is not None else _span_hours(ordered, connections)
    norm = _median([d.publish_rate_60s for d in ordered if d.publish_rate_60s is not None])
    calls = [_classify_one(drop, settings, norm) for drop in ordered]
    _weak_host_events(calls)
    _duplicate_client_id(calls)
    _regular_periods(calls, settings)
    _nat_idle(calls, settings)
    verdicts = tuple(
        DropVerdict(c.drop.timestamp, c.drop.error_name, c.cause, c.subcause, tuple(c.evidence),
                    c.drop.duration_connected_seconds, c.drop.host_events or [], c.drop.drop_id)
        for c in calls
    )
    primary, secondary = _findings(calls, settings, hours)
    sessions = sum(1 for d in ordered if d.duration_connected_seconds) + (1 if connections else 0)
    return Analysis(primary, secondary, verdicts, hours, sessions)


# ------------------------------------------------------------------------------------------------ pass 1


def _classify_one(drop: ConnectionDropEvent, settings: Settings, publish_norm: float | None) -> _Call:
    error = drop.error_name or ""
    keep_alive = drop.keep_alive_secs or settings.keep_alive_secs
    duration = drop.duration_connected_seconds
    if error.startswith(CREDENTIAL_ERRORS):
        return _Call(drop, "client_config", "credentials", [f"{error}: the broker refused the credentials"])
    if not 30 <= keep_alive <= 1200:
        return _Call(drop, "client_config", "keep_alive",
                     [f"keep-alive {keep_alive} s is outside AWS IoT's 30-1200 s range"])
    causal = _causal_events(drop)
    strong, weak = _host_evidence(causal)
    if strong is None:
        strong = _link_evidence(drop)
    if strong is not None:
        category, facts = strong
        return _Call(drop, "system_event", category, facts)
    if (drop.suspended_seconds or 0) >= 5:
        return _Call(drop, "system_event", "suspend",
                     [f"the host was suspended for {format_duration(drop.suspended_seconds)} during the session "
                      "(CLOCK_BOOTTIME - CLOCK_MONOTONIC)"])
    network = drop.network if isinstance(drop.network, dict) else {}
    probe_errors = _errors_of(network.get("probe"))
    if "dns" in probe_errors:
        return _Call(drop, "network", "dns",
                     [f"resolving the endpoint failed right after the drop: {probe_errors['dns']}"])
    if error.startswith("AWS_IO_DNS") or any(e.get("category") == "dns" for e in causal):
        return _Call(drop, "network", "dns", [f"{error or 'the drop'} with DNS trouble in the window"])
    rate = drop.publish_rate_60s
    if rate is not None and (rate >= 0.8 * AWS_PUBLISH_LIMIT or
                             (publish_norm and rate >= max(1.0, 5 * publish_norm))):
        norm_text = f" (usual {publish_norm:.2f}/s)" if publish_norm else ""
        return _Call(drop, "rate_limit", None,
                     [f"{rate:.1f} publishes/s in the last minute before the drop{norm_text}; AWS IoT allows 100/s"])
    idle = drop.seconds_since_last_activity
    if error == "AWS_ERROR_MQTT_UNEXPECTED_HANGUP" and idle is not None and idle < 0.5 and \
            drop.messages_published_in_session > 0:
        return _Call(drop, "client_config", "policy",
                     [f"the broker hung up {idle * 1000:.0f} ms after our last publish"])
    if duration is not None and abs(duration - WEBSOCKET_LIFETIME) <= 0.02 * WEBSOCKET_LIFETIME:
        return _Call(drop, "server_timeout", "websocket_lifetime",
                     [f"the session lasted {format_duration(duration)}, AWS IoT's 24 h WebSocket limit"])
    if error.startswith(NETWORK_DOWN_ERRORS):
        return _Call(drop, "network", "link", [f"{error}: no route to the endpoint"])
    if error == "AWS_ERROR_MQTT_TIMEOUT" and idle is not None and idle >= keep_alive and _reachable(network):
        # The ping was the only packet for a whole keep-alive, it went unanswered, yet a new connection to the same
        # endpoint worked at once: the path is fine, the idle connection's NAT/firewall entry was forgotten. The
        # kernel's retransmissions of that one ping are the symptom here, not packet loss.
        return _Call(drop, "network", "nat_idle_timeout",
                     [f"AWS_ERROR_MQTT_TIMEOUT after {format_duration(idle)} without traffic (only the ping), while a "
                      f"new connection to the endpoint succeeded right after: the idle connection was forgotten"])
    lossy = _loss_evidence(network)
    if lossy is not None:
        return _Call(drop, "network", "packet_loss", [lossy])
    facts = [f"{error or 'unknown error'} after a {format_duration(duration)} session"]
    if weak is not None:
        facts.append(f"a {weak} event was near")
    return _Call(drop, "unexplained", None, facts, weak=weak)


def _causal_events(drop: ConnectionDropEvent) -> list[dict[str, object]]:
    """Host events in [last good moment - CAUSAL_BEFORE, detection + CAUSAL_AFTER]: earlier ones are history, later
    ones are effects of the drop (the reconnect's DHCP renewal), not its cause."""
    if not drop.host_events:
        return []
    idle = (drop.seconds_since_last_activity or 0.0) + (drop.suspended_seconds or 0.0)
    stamp = drop.timestamp
    if len(stamp) == 24 and stamp.endswith("Z"):  # our canonical form: naive arithmetic, no time zones to convert
        naive = datetime.fromisoformat(stamp[:-1])
        low = (naive - timedelta(seconds=idle + CAUSAL_BEFORE)).isoformat(timespec="milliseconds") + "Z"
        high = (naive + timedelta(seconds=CAUSAL_AFTER)).isoformat(timespec="milliseconds") + "Z"
    else:
        detected = parse_iso_utc(stamp)
        low = iso_utc(detected - timedelta(seconds=idle + CAUSAL_BEFORE))
        high = iso_utc(detected + timedelta(seconds=CAUSAL_AFTER))
    try:
        return [event for event in drop.host_events if low <= event["time"] <= high]
    except (TypeError, KeyError):  # an imported export with odd host events: take the careful path
        pass
    start, end = parse_iso_utc(low), parse_iso_utc(high)
    chosen = []
    for event in drop.host_events:
        when = _time(event.get("time")) if isinstance(event, dict) else None
        if when is not None and start <= when <= end:
            chosen.append(event)
    return chosen


def _host_evidence(events: list[dict[str, object]]) -> tuple[tuple[str, list[str]] | None, str | None]:
    """(the most telling strong category and its facts, or None; the most telling weak category, or None).

    One pass over the events: this runs for every drop of a possibly years-long history."""
    best: str | None = None
    weak: str | None = None
    for event in events:
        category = event.get("category")
        if not isinstance(category, str) or category not in _RANK:
            continue
        rank = _RANK[category]
        if _is_strong(category, event):
            if best is None or rank < _RANK[best]:
                best = category
        elif category in WEAK_CATEGORIES and (weak is None or rank < _RANK[weak]):
            weak = category
    if best is None:
        return None, weak
    facts = [_describe(e) for e in events if e.get("category") == best and _is_strong(best, e)]
    return (best, facts[:3]), None


def _link_evidence(drop: ConnectionDropEvent) -> tuple[str, list[str]] | None:
    """rtnetlink's own record (no journal needed): the link or default route went away in the causal window."""
    network = drop.network if isinstance(drop.network, dict) else {}
    events = network.get("link_events")
    if not isinstance(events, list):
        return None
    as_host = [{"time": e.get("time"), "category": "link", "kind": e.get("kind")}
               for e in events if isinstance(e, dict)]
    window = _causal_events(dataclasses.replace(drop, host_events=as_host))
    lost = [e for e in window if e.get("kind") in ("carrier_down", "default_route_lost")]
    if not lost:
        return None
    facts = [f"{str(e.get('time'))[11:19]} rtnetlink: {e.get('kind')}" for e in lost[:3]]
    return "link", facts


def _is_strong(category: str, event: dict[str, object]) -> bool:
    """cron and time have no strong kinds: they only ever count as weak."""
    if event.get("kind") not in STRONG_KINDS.get(category, ()):
        return False
    return not (category == "network_manager" and _to_activated(event))


def _to_activated(event: dict[str, object]) -> bool:
    fields = event.get("fields")
    return isinstance(fields, dict) and str(fields.get("new_state", "")).lower() == "activated"


def _describe(event: dict[str, object]) -> str:
    when = str(event.get("time", ""))[11:19]
    where = f" {event.get('interface')}" if event.get("interface") else ""
    return f"{when} {event.get('category')}{where} {event.get('kind')}: {event.get('message')}"


# ------------------------------------------------------------------------------------------------ pass 2


def _weak_host_events(calls: list[_Call]) -> None:
    """A weak category explains drops only if it accompanies most of them; otherwise it is coincidence."""
    counts = Counter(c.weak for c in calls if c.weak)
    for category, seen in counts.items():
        if seen >= 2 and seen / len(calls) >= WEAK_MAJORITY:
            for call in calls:
                if call.weak == category and call.cause == "unexplained":
                    call.cause, call.subcause = "system_event", category
                    call.evidence = [f"a {category} event in the drop's window, as for {seen} of "
                                     f"{len(calls)} drops"]
        else:
            for call in calls:
                if call.weak == category:
                    call.evidence.append(f"{category} events are near only {seen} of {len(calls)} drops: "
                                         "coincidence, not the cause")


def _duplicate_client_id(calls: list[_Call]) -> None:
    short = [c for c in calls if c.cause == "unexplained" and c.drop.duration_connected_seconds is not None
             and 0 < c.drop.duration_connected_seconds < DUPLICATE_ID_SESSION
             and (c.drop.error_name or "") in ("AWS_IO_SOCKET_CLOSED", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP")]
    if len(short) >= 3:
        for call in short:
            call.cause, call.subcause = "client_config", "duplicate_client_id"
            call.evidence = [f"dropped {format_duration(call.drop.duration_connected_seconds)} after connecting "
                             f"({call.drop.error_name}), like {len(short)} other sessions: a ping-pong takeover"]


def _regular_periods(calls: list[_Call], settings: Settings) -> None:
    """Session ages or drop intervals that cluster tightly are a server-side period, not chance."""
    pool = [c for c in calls if c.cause in ("unexplained", "network", "server_timeout")
            and c.subcause in (None, "websocket_lifetime")]
    durations = [c.drop.duration_connected_seconds or 0.0 for c in pool]
    period = _regular(durations)
    basis = "session ages"
    if period is None:
        times = [parse_iso_utc(c.drop.timestamp) for c in pool]
        intervals = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        period = _regular(intervals)
        basis = "intervals between drops"
    if period is None:
        return
    label, cause, subcause = _name_period(period, settings)
    for call in pool:
        call.cause, call.subcause = cause, subcause
        call.evidence = [f"{len(pool)} drops at regular {basis} of {format_duration(period)} "
                         f"(within ±{REGULAR_CV:.0%}){label}", *call.evidence[:1]]


def _regular(values: Sequence[float]) -> float | None:
    values = [v for v in values if v > 0]
    if len(values) < 3:
        return None
    mean = statistics.fmean(values)
    if mean <= 0 or statistics.pstdev(values) / mean > REGULAR_CV:
        return None
    return statistics.median(values)


def _name_period(period: float, settings: Settings) -> tuple[str, str, str | None]:
    def near(target: float, tolerance: float = 0.05) -> bool:
        return abs(period - target) <= tolerance * target

    if near(WEBSOCKET_LIFETIME, 0.02):
        return ": AWS IoT's 24 h WebSocket limit", "server_timeout", "websocket_lifetime"
    if near(KEEP_ALIVE_MISCONFIG_PERIOD) and settings.keep_alive_secs > 1200:
        return ": 1.5 x the 1200 s AWS uses for an out-of-range keep-alive", "client_config", "keep_alive"
    if near(settings.credential_lifetime_secs):
        return ": the lifetime of the AWS credentials", "server_timeout", "credential_lifetime"
    if near(1.5 * settings.keep_alive_secs, 0.1):
        return ": 1.5 x keep-alive, the broker's idle cut-off (pings are not reaching it)", "network", \
            "nat_idle_timeout"
    return "", "server_timeout", None


def _nat_idle(calls: list[_Call], settings: Settings) -> None:
    """Timeouts that follow idle periods (or a keep-alive above NAT timeouts) point at a NAT forgetting us."""
    timeouts = [c for c in calls if c.cause == "unexplained" and c.drop.error_name == "AWS_ERROR_MQTT_TIMEOUT"]
    if not timeouts:
        return
    idle = [c for c in timeouts if (c.drop.seconds_since_last_activity or 0) >= NAT_IDLE_SUSPECT]
    keep_alive = max((c.drop.keep_alive_secs or settings.keep_alive_secs) for c in timeouts)
    measured = settings.nat_bracket[1] if settings.nat_bracket else None
    if measured is not None and keep_alive >= measured:
        lower = settings.nat_bracket[0] if settings.nat_bracket else None
        for call in timeouts:
            call.cause, call.subcause = "network", "nat_idle_timeout"
            call.evidence = [f"the keep-alive experiment measured the NAT forgetting idle connections after "
                             f"{lower or 0}-{measured} s; keep-alive {keep_alive} s is above that"]
        return
    if len(idle) / len(timeouts) >= 0.6 or keep_alive >= NAT_IDLE_SUSPECT:
        for call in timeouts:
            call.cause, call.subcause = "network", "nat_idle_timeout"
            quiet = call.drop.seconds_since_last_activity
            call.evidence = [
                f"AWS_ERROR_MQTT_TIMEOUT after {format_duration(quiet)} without traffic" if quiet is not None
                else "AWS_ERROR_MQTT_TIMEOUT (ping unanswered)",
                f"{len(idle)} of {len(timeouts)} timeouts followed >= {NAT_IDLE_SUSPECT:.0f} s idle; keep-alive "
                f"{keep_alive} s" + (" is above typical NAT idle timeouts (240-600 s)"
                                     if keep_alive >= NAT_IDLE_SUSPECT else ""),
            ]


# ------------------------------------------------------------------------------------------------ verdict


def _findings(calls: list[_Call], settings: Settings, hours: float) -> tuple[Finding, tuple[Finding, ...]]:
    for call in calls:
        if call.cause == "unexplained":  # irregular, no host evidence: the guide's "network/NAT"
            call.cause = "network"
    total = len(calls)
    groups: dict[tuple[str, str | None], list[_Call]] = {}
    for call in calls:
        groups.setdefault((call.cause, call.subcause), []).append(call)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), _priority(item[0][0])))
    findings = [_finding(key, members, total) for key, members in ranked]
    if total < settings.min_drops:
        return _insufficient(total, hours, settings), tuple(findings)
    return findings[0], tuple(findings[1:])


def _finding(key: tuple[str, str | None], members: list[_Call], total: int) -> Finding:
    cause, subcause = key
    share = len(members) / total
    evidence = [f"{len(members)} of {total} drops: {cause}" + (f"/{subcause}" if subcause else "")]
    seen: set[str] = set()
    for call in members:
        for fact in call.evidence:
            if fact not in seen and len(evidence) < 6:
                seen.add(fact)
                evidence.append(fact)
    errors = Counter(c.drop.error_name or "unknown" for c in members)
    evidence.append("errors: " + ", ".join(f"{name} x{n}" for name, n in errors.most_common(3)))
    if cause == "network" and subcause is None and len(members) >= 3:
        times = [parse_iso_utc(c.drop.timestamp) for c in members]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        if gaps and statistics.fmean(gaps) > 0:
            evidence.append(f"irregular: intervals vary by {statistics.pstdev(gaps) / statistics.fmean(gaps):.0%}, "
                            "no host events in the windows")
    confidence = min(0.95, share * (0.5 + 0.5 * min(1.0, len(members) / 5)))
    recommendation = RECOMMENDATIONS.get(key) or RECOMMENDATIONS.get((cause, None), "")
    return Finding(cause, subcause, confidence, tuple(evidence), recommendation, share)


def _insufficient(total: int, hours: float, settings: Settings) -> Finding:
    needed = settings.min_drops - total
    rate = total / hours if hours > 0 else 0.0
    if rate > 0:
        more = f"about {needed / rate:.0f} more hours at the current rate ({rate:.2f} drops/h)"
    else:
        more = f"at least {max(settings.baseline_hours - hours, 0):.0f} more hours (the guide's 24 h baseline)"
    evidence = (f"{total} drop{'s' if total != 1 else ''} in {hours:.1f} h observed; a pattern needs at least "
                f"{settings.min_drops}",)
    return Finding("insufficient_data", None, 0.0, evidence,
                   f"Keep nwp500d running: {needed} more drop{'s' if needed != 1 else ''} needed, {more}.", 1.0)


def _priority(cause: str) -> int:
    order = ("client_config", "system_event", "rate_limit", "server_timeout", "network")
    return order.index(cause) if cause in order else len(order)


def _span_hours(drops: Sequence[ConnectionDropEvent], connections: Sequence[ConnectionEvent]) -> float:
    stamps = [parse_iso_utc(d.timestamp) for d in drops] + [parse_iso_utc(c.timestamp) for c in connections]
    first = drops[0] if drops else None
    if first is not None and first.duration_connected_seconds:
        stamps.append(parse_iso_utc(first.timestamp) - timedelta(seconds=first.duration_connected_seconds))
    if len(stamps) < 2:
        return 0.0
    return (max(stamps) - min(stamps)).total_seconds() / 3600


def _errors_of(probe: object) -> dict[str, str]:
    errors = probe.get("errors") if isinstance(probe, dict) else None
    return {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else {}


def _reachable(network: dict[str, Any]) -> bool:
    """The probe right after the drop connected at once (no SYN retransmission): the path itself worked."""
    probe = network.get("probe")
    if not isinstance(probe, dict) or probe.get("ok") is not True:
        return False
    seconds = probe.get("tcp_seconds")
    return isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds < REACHABLE_CONNECT_SECS


def _loss_evidence(network: dict[str, Any]) -> str | None:
    """Kernel counters that say packets were lost (host-wide, so only clear excesses count)."""
    for key, span in (("netstat_last_minute", "in the last minute"), ("netstat_session", "during the session")):
        counters = network.get(key)
        if not isinstance(counters, dict):
            continue
        retrans = _int(counters.get("RetransSegs"))
        timeouts = _int(counters.get("TCPTimeouts"))
        if retrans >= LOSS_RETRANS or timeouts >= LOSS_TIMEOUTS:
            return f"{retrans} TCP retransmissions and {timeouts} TCP timeouts {span} before the drop"
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso_utc(value)
    except ValueError:
        return None
