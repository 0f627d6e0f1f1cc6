"""Renderers of an Analysis: terminal text, JSON, and the self-contained HTML page, on hand-built analyses.

The HTML is checked with a real parser rather than substring tests where it matters (escaping, external references,
balanced tags), because a hostile journal line that breaks out of an attribute only shows up as structure.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from nwp500d.analysis.report import CATEGORY_COLOURS, CAUSE_COLOURS, render_html, render_json, render_text
from nwp500d.analysis.verdict import CAUSES, Analysis, DropVerdict, Finding
from nwp500d.clock import iso_utc
from nwp500d.model import HOST_EVENT_CATEGORIES, ConnectionEvent, HostEvent

T0 = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(2)>'
HOSTILE_QUOTE = "' onmouseover='alert(3)"
VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "source", "area", "base", "col", "embed", "track"}


def at(seconds: float) -> str:
    return iso_utc(T0 + timedelta(seconds=seconds))


def event(seconds: float, category: str, kind: str, message: str, interface: str | None = None) -> dict[str, Any]:
    return HostEvent(time=at(seconds), category=category, kind=kind, message=message, interface=interface).to_dict()


def empty_analysis() -> Analysis:
    return Analysis(
        verdict=Finding("insufficient_data", None, 0.0, ("no drops in 2.0 h of observation",),
                        "Leave the daemon running for a day or two."),
        secondary=(), drops=(), observed_hours=2.0, sessions=0,
    )


def one_drop_analysis() -> Analysis:
    drop = DropVerdict(
        timestamp=at(4000), error_name="AWS_ERROR_MQTT_UNEXPECTED_HANGUP", cause="network",
        subcause="wifi_disconnect", evidence=("wlan0 disconnected 12 s before the drop",),
        duration_connected_seconds=3990.0,
        host_events=[event(3988, "wifi", "disconnected", "wlan0: CTRL-EVENT-DISCONNECTED reason=4", "wlan0"),
                     event(3995, "dhcp", "ack", "DHCPACK of 192.168.1.20", "wlan0")],
    )
    return Analysis(
        verdict=Finding("network", "wifi_disconnect", 0.8, ("the only drop follows a Wi-Fi disconnect",),
                        "Check the access point's logs around the drop."),
        secondary=(), drops=(drop,), observed_hours=1.2, sessions=1,
    )


# What each kind of drop looks like on a real host: (cause, subcause, error, session length range in s, events).
@dataclass(frozen=True)
class _Pattern:
    cause: str
    subcause: str | None
    error: str
    length: tuple[float, float]
    events: tuple[tuple[float, str, str, str, str | None], ...] = field(default=())


_PATTERNS = (
    _Pattern("network", "wifi_disconnect", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", (1200, 5 * 3600), (
        (-41, "wifi", "disconnected", "wlan0: CTRL-EVENT-DISCONNECTED bssid=aa:bb:cc:dd:ee:ff reason=4", "wlan0"),
        (-40, "link", "down", "wlan0: link is not ready", "wlan0"),
        (-39, "network_manager", "state_change", "device (wlan0): state change: activated -> disconnected",
         "wlan0"),
        (-12, "wifi", "connected", "wlan0: CTRL-EVENT-CONNECTED - Connection to aa:bb:cc:dd:ee:ff completed",
         "wlan0"),
        (-9, "dhcp", "ack", "DHCPACK of 192.168.1.20 from 192.168.1.1", "wlan0"),
        (-8, "dns", "server_switched", "Switching to DNS server 192.168.1.1 for interface wlan0.", "wlan0"),
    )),
    _Pattern("system_event", "suspend", "AWS_ERROR_MQTT_TIMEOUT", (2 * 3600, 9 * 3600), (
        (-7200, "suspend", "suspend", "The system will suspend now!", None),
        (-30, "suspend", "resume", "System returned from sleep operation 'suspend'.", None),
        (-28, "network_manager", "wake", "manager: wake requested (sleeping: yes  enabled: yes)", None),
        (-20, "time", "synchronized", "Contacted time server 192.168.1.1:123 (ntp.lan).", None),
    )),
    _Pattern("server_timeout", "session_limit", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", (86000, 86400), (
        (-600, "cron", "job", "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)", None),
    )),
    _Pattern("rate_limit", "throttled", "AWS_ERROR_MQTT_CONNECTION_DESTROYED", (8, 50), (
        (-2, "dns", "degraded", "Using degraded feature set UDP instead of UDP+EDNS0 for DNS server 1.1.1.1.",
         None),
    )),
    _Pattern("client_config", "keep_alive", "AWS_ERROR_MQTT_TIMEOUT", (1230, 1260), (
        (-100, "cron", "session_opened", "pam_unix(cron:session): session opened for user root(uid=0)", None),
    )),
    _Pattern("unexplained", None, "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", (300, 3000)),
)
_MIX = "NNSNRRRRNCNSTNNCRRRNSNUNCNNSNN"  # ~30 drops, network first, as a flaky Wi-Fi at home would look


def realistic_analysis(*, hostile: bool = True) -> tuple[Analysis, list[ConnectionEvent]]:
    """A few days of a laptop-hosted daemon: ~30 drops of every cause, host events of every category."""
    rng = random.Random(500)
    patterns = dict(zip("NSTRCU", _PATTERNS, strict=True))
    drops: list[DropVerdict] = []
    connections = [ConnectionEvent(timestamp=at(0), event_type="connected")]
    now = 0.0
    for index, letter in enumerate(_MIX):
        pattern = patterns[letter]
        length = rng.uniform(*pattern.length)
        dropped = now + length
        events = [event(dropped + offset + rng.uniform(-1, 1), category, kind, message, iface)
                  for offset, category, kind, message, iface in pattern.events]
        error = pattern.error
        if hostile and index == 7:
            error = HOSTILE_SCRIPT
            events.append(event(dropped - 5, "wifi", "auth_failed", HOSTILE_ATTR, "wlan0"))
        drops.append(DropVerdict(
            timestamp=at(dropped), error_name=error, cause=pattern.cause, subcause=pattern.subcause,
            evidence=(f"{pattern.subcause or 'no host event'} within the window",),
            duration_connected_seconds=None if index == 11 else round(length, 1), host_events=events,
        ))
        now = dropped + rng.uniform(2, 40)
        connections.append(ConnectionEvent(timestamp=at(now), event_type="rebuilt", attempt_number=1))
    counts = {cause: sum(1 for d in drops if d.cause == cause) for cause in {d.cause for d in drops}}
    total = len(drops)
    verdict = Finding(
        "network", "wifi_disconnect", 0.78,
        (f"{counts['network']} of {total} drops follow a wlan0 disconnect within 45 s",
         "the access point's BSSID changes at most of them (roaming)",
         "sessions on wired Ethernet would not see these"),
        "Pin the access point (BSSID) or fix roaming thresholds; a wired link avoids the pattern.",
        share=counts["network"] / total,
    )
    secondary = tuple(
        Finding(cause, sub, conf, (f"{counts[cause]} drops match {sub}",), "see the drops", share=counts[cause] / total)
        for cause, sub, conf in (("rate_limit", "throttled", 0.7), ("system_event", "suspend", 0.9),
                                 ("client_config", "keep_alive", 0.5), ("server_timeout", "session_limit", 0.6))
    )
    hours = now / 3600
    return Analysis(verdict, secondary, tuple(drops), observed_hours=hours, sessions=total + 1), connections


class Tree(HTMLParser):
    """Elements and attributes as a browser would build them, plus a check that every element is closed."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def tags(self, element: str, /, **attrs: str) -> list[dict[str, str | None]]:
        return [a for tag, a in self.elements
                if tag == element and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def classed(self, name: str, cls: str) -> list[dict[str, str | None]]:
        return [a for tag, a in self.elements if tag == name and cls in (a.get("class") or "").split()]


def html_of(analysis: Analysis, connections: list[ConnectionEvent] | None = None, **kwargs: str) -> Tree:
    page = render_html(analysis, connections=connections or (), title=kwargs.get("title", "NaviLink drops"),
                       generated_at=kwargs.get("generated_at", "2026-11-22T09:00:00Z"))
    tree = Tree(page)
    assert tree.errors == []
    return tree


# ---------------------------------------------------------------- text


def test_text_puts_the_verdict_first_then_secondary_then_drops() -> None:
    analysis, _ = realistic_analysis(hostile=False)
    lines = render_text(analysis, title="home").splitlines()
    assert lines[0] == "home"
    assert lines[1].startswith("verdict: network/wifi_disconnect  confidence 78%")
    assert lines[2].startswith("  - ") and "wlan0 disconnect" in lines[2]
    recommendation = next(i for i, line in enumerate(lines) if line.startswith("  recommendation: Pin"))
    secondary = lines.index("secondary causes:")
    first_drop = next(i for i, line in enumerate(lines) if line.startswith("  2026-11-"))
    assert 2 < recommendation < secondary < first_drop
    assert sum(1 for line in lines if re.match(r"  2026-11-\d\d \d\d:\d\d:\d\d  ", line)) == len(analysis.drops)


def test_text_columns_are_aligned() -> None:
    analysis, _ = realistic_analysis(hostile=False)
    lines = render_text(analysis, title="home").splitlines()
    shares = {line.index(" share ") for line in lines[lines.index("secondary causes:") + 1:] if " share " in line}
    assert len(shares) == 1
    drop_lines = [line for line in lines if re.match(r"  2026-", line)]
    cause_columns = {len(line) - len(line.split()[-1]) for line in drop_lines}
    assert len(cause_columns) == 1


def test_text_one_drop_lists_its_host_events_briefly() -> None:
    text = render_text(one_drop_analysis(), title="t")
    drop_line, events_line = text.splitlines()[-2:]
    assert drop_line.split() == ["2026-11-18", "07:06:40", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", "1h06m",
                                 "network/wifi_disconnect"]
    assert events_line.strip() == "wifi: wlan0 disconnected · dhcp: wlan0 ack"


def test_text_of_an_empty_analysis() -> None:
    text = render_text(empty_analysis(), title="nothing yet")
    assert "verdict: insufficient_data  confidence 0%" in text
    assert "recommendation: Leave the daemon running" in text
    assert text.endswith("no drops recorded")
    assert "secondary" not in text


def test_text_neutralises_terminal_control_sequences() -> None:
    drop = DropVerdict(timestamp=at(10), error_name="X\x1b[2J\x1b]0;pwned\x07", cause="network", subcause=None,
                       evidence=(), host_events=[event(5, "wifi", "disconnected\u202e", "m", "wlan0\x1b[31m")])
    analysis = Analysis(Finding("network", "a\rb", 0.5, ("e\x9bvil",), "r\x00"), (), (drop,), 1.0, 1)
    text = render_text(analysis, title="t\x1b[1m")
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", text)


# ---------------------------------------------------------------- json


def test_json_is_the_analysis_dict_indented() -> None:
    analysis, _ = realistic_analysis()
    text = render_json(analysis)
    assert json.loads(text) == analysis.to_dict()
    assert text.splitlines()[1] == '  "schema_version": 1,'
    assert json.loads(render_json(empty_analysis()))["drops"] == []


# ---------------------------------------------------------------- html


def test_html_is_one_self_contained_phone_ready_page() -> None:
    analysis, connections = realistic_analysis()
    page = render_html(analysis, connections=connections, title="home", generated_at="2026-11-22T09:00:00Z")
    tree = Tree(page)
    assert tree.errors == []
    assert page.startswith("<!DOCTYPE html>")
    assert tree.tags("meta", name="viewport") == [{"name": "viewport",
                                                   "content": "width=device-width, initial-scale=1"}]
    csp = tree.tags("meta", http_equiv="Content-Security-Policy")
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")
    assert not tree.tags("script") and not tree.tags("link") and not tree.tags("img") and not tree.tags("iframe")
    for tag, attrs in tree.elements:
        for name, value in attrs.items():
            assert name not in ("src", "href", "xlink:href", "srcset", "action"), (tag, name, value)
            assert not name.startswith("on"), (tag, name)
    assert not re.search(r"https?://", page)
    assert "url(" not in page and "@import" not in page
    svgs = tree.tags("svg")
    assert len(svgs) == 2 and all(re.fullmatch(r"0 0 720 \d+", a["viewBox".lower()] or "") for a in svgs)
    assert "svg.chart{display:block;width:100%" in page


def test_html_puts_the_verdict_at_the_top() -> None:
    analysis, connections = realistic_analysis()
    page = render_html(analysis, connections=connections, title="home", generated_at="g")
    body = page[page.index("<body>"):]
    verdict = body.index('class="verdict"')
    assert verdict < body.index("<svg")
    for needle in ("Network", "/ wifi_disconnect", "78%", "wlan0 disconnect within 45 s", "What to do:",
                   "Pin the access point", "Also contributing", "Rate limit", "System event", "Server timeout"):
        assert verdict <= body.index(needle) < body.index("<svg"), needle
    assert re.search(r'<div class="meter"><span style="width:78%;background:#0072b2">', page)


def test_html_draws_every_drop_session_and_host_event_category() -> None:
    analysis, connections = realistic_analysis()
    tree = html_of(analysis, connections)
    drops = tree.classed("circle", "drop")
    assert len(drops) == len(analysis.drops)
    assert {d["fill"] for d in drops} == {CAUSE_COLOURS[c] for c in {d.cause for d in analysis.drops}}
    # One drop lacks a duration; the connection before it supplies the start. One more session is still up.
    assert len(tree.classed("rect", "session")) == len(analysis.drops) + 1
    ticks = tree.classed("rect", "host-event")
    assert {t["fill"] for t in ticks} == set(CATEGORY_COLOURS.values())
    assert set(CATEGORY_COLOURS) == set(HOST_EVENT_CATEGORIES)
    assert set(CAUSE_COLOURS) == {*CAUSES, "unexplained"}
    assert len(set(CATEGORY_COLOURS.values())) == len(CATEGORY_COLOURS)
    unique = {(e["time"], e["category"], e["kind"], e["message"]) for d in analysis.drops for e in d.host_events}
    assert len(ticks) == len(unique)
    text = " ".join(tree.text)
    for category in HOST_EVENT_CATEGORIES:
        assert re.search(rf"{category} \(\d+\)", text), category
    assert len(tree.classed("tr", "drop-row")) == len(analysis.drops)
    assert sum(int(t["data-count"] or 0) for t in tree.classed("text", "count")) == len(analysis.drops)


def test_html_histogram_bins() -> None:
    lengths = (5, 59.9, 60, 599, 600, 3599, 3600, 21599, 21600, 86399, 86400, 200000)
    expected = (2, 2, 2, 2, 2, 2)
    drops = tuple(DropVerdict(timestamp=at(300000 * (i + 1)), error_name="E", cause="network", subcause=None,
                              evidence=(), duration_connected_seconds=length) for i, length in enumerate(lengths))
    analysis = Analysis(Finding("network", None, 0.5, (), ""), (), drops, 1000.0, len(drops))
    tree = html_of(analysis)
    counts = tuple(int(t["data-count"] or 0) for t in tree.classed("text", "count"))
    assert counts == expected
    assert "≥24 h" in " ".join(tree.text)


def test_html_of_one_drop() -> None:
    tree = html_of(one_drop_analysis())
    assert len(tree.classed("circle", "drop")) == 1
    assert len(tree.classed("rect", "host-event")) == 2
    [session] = tree.classed("rect", "session")
    assert float(session["x"] or 0) < float(tree.classed("circle", "drop")[0]["cx"] or 0)
    assert [int(t["data-count"] or 0) for t in tree.classed("text", "count")] == [0, 0, 0, 1, 0, 0]
    assert len(tree.classed("tr", "drop-row")) == 1
    assert "2026-11-18 07:06:40" in tree.text


def test_html_of_an_empty_analysis() -> None:
    tree = html_of(empty_analysis())
    text = " ".join(tree.text)
    assert "Insufficient data" in text and "Leave the daemon running" in text
    assert "Nothing to draw yet" in text and "No drops recorded." in text
    assert not tree.tags("svg") and not tree.tags("table")


def test_html_shows_the_session_still_up_from_connections_alone() -> None:
    connections = [ConnectionEvent(timestamp=at(0)), ConnectionEvent(timestamp=at(7200), event_type="resumed")]
    tree = html_of(empty_analysis(), connections)
    [session] = tree.classed("rect", "session")
    assert session["fill-opacity"] == "0.55"
    assert not tree.classed("circle", "drop")
    assert "No ended session of known length yet." in " ".join(tree.text)


def test_html_takes_a_session_start_from_connections_when_the_drop_lacks_a_duration() -> None:
    drop = DropVerdict(timestamp=at(3600), error_name="E", cause="network", subcause=None, evidence=())
    analysis = Analysis(Finding("network", None, 0.5, (), ""), (), (drop,), 1.0, 1)
    tree = html_of(analysis, [ConnectionEvent(timestamp=at(600))])
    [session] = tree.classed("rect", "session")
    assert tree.elements[tree.elements.index(("rect", session)) + 1][0] == "title"
    assert "session 2026-11-18 06:10:00 → 2026-11-18 07:00:00 (ended by network)" in tree.text
    assert [int(t["data-count"] or 0) for t in tree.classed("text", "count")] == [0, 0, 1, 0, 0, 0]
    lone = html_of(analysis)  # without connections the session's start is unknown, and said so
    assert not lone.classed("rect", "session")
    assert "No ended session of known length yet." in " ".join(lone.text)


def test_html_survives_bad_timestamps_and_junk_host_events() -> None:
    junk: list[Any] = [{"time": "?", "category": "wifi", "kind": "x", "message": "m"}, "junk", {"category": 5},
                       {"time": at(1), "category": "bluetooth", "kind": "k"}]  # as a hand-edited export may hold
    drops = (
        DropVerdict(timestamp="not a time", error_name=None, cause="mystery", subcause=None, evidence=(),
                    duration_connected_seconds=float("nan"), host_events=junk),
        DropVerdict(timestamp=at(100), error_name="E", cause="network", subcause=None, evidence=(),
                    duration_connected_seconds=1e300),
    )
    analysis = Analysis(Finding("mystery", None, float("nan"), (), ""), (), drops, float("nan"), 2)
    tree = html_of(analysis)
    assert len(tree.classed("tr", "drop-row")) == 2
    assert len(tree.classed("circle", "drop")) == 1
    assert "not a time" in tree.text and "unknown error" in tree.text
    render_text(analysis, title="t")


@pytest.mark.parametrize("hostile", [HOSTILE_SCRIPT, HOSTILE_ATTR, HOSTILE_QUOTE, "</style><script>x()</script>",
                                     "</svg><img src=https://evil.example/p.png>", "javascript:alert(4)"])
def test_html_escapes_every_string_from_the_data(hostile: str) -> None:
    drop = DropVerdict(
        timestamp=at(500), error_name=hostile, cause=hostile, subcause=hostile, evidence=(hostile,),
        duration_connected_seconds=400.0,
        host_events=[{"time": at(490), "category": "wifi", "kind": hostile, "message": hostile, "interface": hostile},
                     {"time": at(491), "category": hostile, "kind": hostile, "message": hostile}],
    )
    finding = Finding(hostile, hostile, 0.5, (hostile, hostile), hostile)
    analysis = Analysis(finding, (finding,), (drop,), 1.0, 1)
    page = render_html(analysis, connections=[ConnectionEvent(timestamp=hostile)], title=hostile,
                       generated_at=hostile)
    tree = Tree(page)
    assert tree.errors == []
    assert hostile not in page if any(ch in hostile for ch in "<>\"'") else True
    assert not tree.tags("script") and not tree.tags("img")
    assert all(not name.startswith("on") for _, attrs in tree.elements for name in attrs)
    assert all(name not in ("src", "href") for _, attrs in tree.elements for name in attrs)
    assert sum(hostile in chunk for chunk in tree.text) >= 8  # shown, as text
    css = page[page.index("<style>"):page.index("</style>")]
    assert hostile not in css
