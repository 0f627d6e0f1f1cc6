"""An :class:`Analysis` rendered for people: a terminal report, the JSON export, and one self-contained HTML page.

Pure (strings in, strings out) so that ``report``, ``analyze`` and the tests share one renderer and a page written on
a headless box can be mailed, attached to a bug, or opened on a phone with no network.

Everything taken from the data (error names, evidence, journal messages, interface names) is untrusted: a journal
line is whatever some process on the host chose to log. The text report replaces control and bidi characters so a
line cannot drive the terminal; the page escapes every value and also declares a Content-Security-Policy that allows
no scripts and no loads at all, so one missed escape can neither run code nor reach the network.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nwp500d.analysis.verdict import CAUSES, Analysis, DropVerdict, Finding
from nwp500d.clock import parse_iso_utc
from nwp500d.journal.correlate import summarize
from nwp500d.model import HOST_EVENT_CATEGORIES, ConnectionEvent, HostEvent
from nwp500d.summary import format_duration

__all__ = ["CATEGORY_COLOURS", "CAUSE_COLOURS", "render_html", "render_json", "render_text"]

# Okabe-Ito hues for causes: the drop markers must stay tellable apart for colour-blind readers.
CAUSE_COLOURS: dict[str, str] = {
    "server_timeout": "#d55e00",
    "network": "#0072b2",
    "rate_limit": "#cc79a7",
    "system_event": "#e69f00",
    "client_config": "#009e73",
    "insufficient_data": "#8c8c8c",
    "unexplained": "#4d4d4d",
}
# Host categories each get their own lane, so colour only has to separate neighbours, not carry meaning alone.
CATEGORY_COLOURS: dict[str, str] = {
    "suspend": "#7b3fa0",
    "network_manager": "#1f6fb4",
    "wifi": "#12a4b8",
    "dhcp": "#2e9a3e",
    "link": "#c8312f",
    "cron": "#7a7a7a",
    "time": "#a59a12",
    "dns": "#e0711a",
}
_LANE_LABELS = {"network_manager": "netmgr"}  # the only id too wide for the lane-label column on a phone
_OTHER_COLOUR = "#666666"
_SESSION_COLOUR = "#8da2b8"
_CAUSE_ORDER = (*CAUSES, "unexplained")

_HISTOGRAM_BINS: tuple[tuple[str, float], ...] = (  # upper bounds; \u2013 is an en dash
    ("<1 min", 60.0), ("1\u201310 min", 600.0), ("10\u201360 min", 3600.0),
    ("1\u20136 h", 6 * 3600.0), ("6\u201324 h", 86400.0), ("\u226524 h", math.inf),
)
_TICK_STEPS = (60, 300, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400)
_EVENTS_PER_DROP = 6  # the table is a summary; the journal has the rest
_MESSAGE_LIMIT = 160
_TEXT_LIMIT = 400

# C0/C1 controls, zero-width and bidi-override characters: enough to rewrite a terminal line or reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


# ---------------------------------------------------------------- shared helpers


def _clean(value: object, limit: int = _TEXT_LIMIT) -> str:
    """Untrusted text made inert for a terminal or a page, and bounded so one entry cannot flood the report."""
    text = _UNSAFE.sub(lambda m: " " if m.group() in "\t\n\r" else "?", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _e(value: object, limit: int = _TEXT_LIMIT) -> str:
    return html.escape(_clean(value, limit), quote=True)


def _percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return "n/a"
    return f"{round(min(1.0, max(0.0, fraction)) * 100)}%"


def _duration(seconds: float | None) -> str:
    """``format_duration`` for values read back from JSON, where NaN or infinity may have been written."""
    if seconds is None or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "n/a"
    return format_duration(seconds)


def _cause_text(cause: str, subcause: str | None) -> str:
    return f"{cause}/{subcause}" if subcause else cause


def _cause_colour(cause: str) -> str:
    return CAUSE_COLOURS.get(cause, _OTHER_COLOUR)


def _cause_title(cause: str) -> str:
    return cause.replace("_", " ").capitalize()


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_iso_utc(text)
    except (ValueError, OverflowError):
        return None


def _clock(moment: datetime | None, raw: object) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else _clean(raw, 40)


def _host_events(raw: Iterable[Any]) -> list[HostEvent]:
    """Tolerant: an export may have been edited by hand or written by an older version; bad entries are skipped."""
    events = []
    for item in raw or ():
        if not isinstance(item, dict) or not isinstance(item.get("category"), str):
            continue
        interface = item.get("interface")
        events.append(HostEvent(time=str(item.get("time", "")), category=item["category"],
                                kind=str(item.get("kind", "")), message=str(item.get("message", "")),
                                interface=interface if isinstance(interface, str) else None))
    return events


# ---------------------------------------------------------------- text


def render_text(analysis: Analysis, *, title: str) -> str:
    """The terminal report: verdict first because most readers stop there; drops after, one line each."""
    verdict = analysis.verdict
    lines = [_clean(title),
             f"verdict: {_clean(_cause_text(verdict.cause, verdict.subcause))}"
             f"  confidence {_percent(verdict.confidence)}, explains {_percent(verdict.share)} of drops"]
    lines += [f"  - {_clean(item)}" for item in verdict.evidence]
    if verdict.recommendation:
        lines.append(f"  recommendation: {_clean(verdict.recommendation)}")
    if analysis.secondary:
        lines.append("secondary causes:")
        names = [_clean(_cause_text(f.cause, f.subcause)) for f in analysis.secondary]
        width = max(len(name) for name in names)
        for name, finding in zip(names, analysis.secondary, strict=True):
            lines.append(f"  {name:<{width}}  share {_percent(finding.share):>4}"
                         f"  confidence {_percent(finding.confidence):>4}")
    lines.append(f"observed {_duration(analysis.observed_hours * 3600)}, {analysis.sessions} sessions, "
                 f"{len(analysis.drops)} drops")
    if not analysis.drops:
        lines.append("no drops recorded")
        return "\n".join(lines)
    rows = [(_clock(_moment(d.timestamp), d.timestamp), _clean(d.error_name or "unknown error", 80),
             _duration(d.duration_connected_seconds), _clean(_cause_text(d.cause, d.subcause), 80))
            for d in analysis.drops]
    error_width = max(len(row[1]) for row in rows)
    after_width = max(len(row[2]) for row in rows)
    lines.append("drops (UTC; error, time connected, cause; host events in the window below each):")
    for row, drop in zip(rows, analysis.drops, strict=True):
        when, error, after, cause = row
        lines.append(f"  {when:<19}  {error:<{error_width}}  {after:>{after_width}}  {cause}")
        events = _host_events(drop.host_events)
        lines.append(f"      {_clean(summarize(events)) if events else 'no host events'}")
    return "\n".join(lines)


def render_json(analysis: Analysis) -> str:
    return json.dumps(analysis.to_dict(), indent=2)


# ---------------------------------------------------------------- timeline geometry (pure)


@dataclass(frozen=True)
class _Session:
    start: datetime
    end: datetime
    cause: str | None  # of the drop that ended it; None while it is still up


@dataclass(frozen=True)
class _Axis:
    start: datetime
    end: datetime
    left: float
    right: float

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        return self.left + (self.right - self.left) * (moment - self.start).total_seconds() / span


def _sessions(drops: Sequence[tuple[datetime, DropVerdict]], ups: Sequence[datetime]) -> tuple[list[_Session], int]:
    """Sessions as (start, end) and how many ended ones have no known start.

    The drop's own ``duration_connected_seconds`` wins (it was measured on the monotonic clock); a connection record
    only fills in where that is missing. A connection after the last drop is the session still up.
    """
    sessions: list[_Session] = []
    unknown = 0
    previous: datetime | None = None
    for moment, drop in sorted(drops, key=lambda pair: pair[0]):
        start: datetime | None = None
        duration = drop.duration_connected_seconds
        if isinstance(duration, int | float) and math.isfinite(duration) and duration >= 0:
            try:
                start = moment - timedelta(seconds=duration)
            except OverflowError:
                start = None
        if start is None:
            candidates = [up for up in ups if up <= moment and (previous is None or up > previous)]
            start = max(candidates) if candidates else None
        if start is None:
            unknown += 1
        else:
            sessions.append(_Session(start, moment, drop.cause))
        previous = moment
    still_up = [up for up in ups if previous is None or up > previous]
    if still_up:
        start = max(still_up)
        sessions.append(_Session(start, start, None))  # its end is stretched to the axis end once that is known
    return sessions, unknown


def _span(moments: Sequence[datetime]) -> tuple[datetime, datetime]:
    """The drawn span: every known moment, a little margin, and at least an hour so a lone drop is not a smear."""
    start, end = min(moments), max(moments)
    if end - start < timedelta(hours=1):
        middle = start + (end - start) / 2
        start, end = middle - timedelta(minutes=30), middle + timedelta(minutes=30)
    margin = (end - start) * 0.02
    return start - margin, end + margin


def _ticks(start: datetime, end: datetime, most: int = 6) -> list[tuple[datetime, str]]:
    """Round UTC moments to label the axis: dates when a step is a day or more or a tick falls on midnight."""
    seconds = (end - start).total_seconds()
    step = next((s for s in _TICK_STEPS if seconds / s <= most), None)
    if step is None:
        step = 86400 * math.ceil(seconds / most / 86400)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = math.ceil((start - epoch).total_seconds() / step) * step
    ticks = []
    moment = epoch + timedelta(seconds=first)
    while moment <= end:
        midnight = moment.hour == 0 and moment.minute == 0
        ticks.append((moment, moment.strftime("%b %d") if step >= 86400 or midnight else moment.strftime("%H:%M")))
        moment += timedelta(seconds=step)
    return ticks


def _bin_index(seconds: float) -> int:
    return next(i for i, (_, upper) in enumerate(_HISTOGRAM_BINS) if seconds < upper)


def _cause_sort_key(cause: str) -> tuple[int, str]:
    return (_CAUSE_ORDER.index(cause) if cause in _CAUSE_ORDER else len(_CAUSE_ORDER), cause)


# ---------------------------------------------------------------- html


_CSS = """
:root{--fg:#1c2230;--muted:#5d6677;--line:#dde2ea;--card:#f4f6f9}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif;overflow-wrap:break-word}
main{max-width:880px;margin:0 auto;padding:16px 14px 40px}
h1{font-size:1.25rem;margin:0 0 2px}
h2{font-size:1.1rem;margin:28px 0 8px}
.meta{color:var(--muted);font-size:.9rem;margin:0}
.verdict{margin:16px 0 0;padding:14px 16px;border-left:6px solid;background:var(--card);border-radius:6px}
.verdict .eyebrow{margin:0;text-transform:uppercase;letter-spacing:.06em;font-size:.75rem;color:var(--muted)}
.verdict .cause{font-size:1.6rem;font-weight:700;margin:2px 0 6px;line-height:1.2}
.verdict .sub{font-size:1rem;font-weight:600;color:var(--muted)}
.meter{height:8px;background:#dfe4eb;border-radius:4px;overflow:hidden;max-width:320px;margin:4px 0}
.meter span{display:block;height:100%}
.verdict ul{margin:8px 0;padding-left:20px}
.recommend{margin:10px 0 0;padding:10px 12px;background:#fff;border:1px solid var(--line);border-radius:6px}
.secondary{list-style:none;padding:0;margin:8px 0 0}
.secondary li{padding:4px 0}
.sw{display:inline-block;width:12px;height:12px;border-radius:50%;margin-right:6px;vertical-align:-1px}
.sw.bar{border-radius:2px;width:18px;height:9px}
.sw.tick{border-radius:1px;width:4px;height:13px}
svg.chart{display:block;width:100%;height:auto}
.chart text{font-size:13px;fill:#4a5261;font-family:system-ui,"DejaVu Sans",sans-serif}
.chart .count{font-weight:600;fill:#1c2230}
.legend{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.85rem}
.note{color:var(--muted);font-size:.85rem;margin:4px 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;vertical-align:top;padding:8px 6px;border-bottom:1px solid var(--line)}
th:nth-child(2){width:22%}
th:nth-child(3){width:22%}
td:first-child{white-space:nowrap}
.after{display:block}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
td code{font-size:.85rem}
.small{font-size:.8rem;color:var(--muted)}
ul.events,ul.why{list-style:none;padding:0;margin:0}
ul.events li{margin:0 0 3px}
.cat{font-weight:600}
details{margin-top:2px}
summary{cursor:pointer}
ul.journal{margin:4px 0 0;padding-left:16px;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
time{white-space:nowrap}
footer{margin-top:32px;color:var(--muted);font-size:.8rem}
@media (max-width:600px){
.chart text{font-size:21px}
.chart circle.drop{r:9px}
.chart rect.host-event{width:4px}
main{padding:12px 12px 32px}
thead{display:none}
table,tbody,tr,td{display:block;width:100%}
tr{border-bottom:2px solid var(--line);padding:6px 0}
td{border:0;padding:2px 0}
td:first-child{font-weight:600}
.after{display:inline;font-weight:400;margin-left:6px}
}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render_html(analysis: Analysis, *, connections: Sequence[ConnectionEvent] = (), title: str,
                generated_at: str) -> str:
    """One file with nothing to fetch: opened from a mail attachment or a phone's downloads, it must just work."""
    drops = [(m, d) for d in analysis.drops if (m := _moment(d.timestamp)) is not None]
    ups = [m for c in connections if (m := _moment(c.timestamp)) is not None]
    events: dict[tuple[str, str, str, str], tuple[datetime, HostEvent]] = {}
    for drop in analysis.drops:
        for event in _host_events(drop.host_events):  # neighbouring windows overlap: draw each entry once
            moment = _moment(event.time)
            if moment is not None:
                events.setdefault((event.time, event.category, event.kind, event.message), (moment, event))
    sessions, unknown = _sessions(drops, ups)

    body = [
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="meta">observed {_e(_duration(analysis.observed_hours * 3600))} · {analysis.sessions} '
        f"sessions · {len(analysis.drops)} drops · generated {_e(generated_at, 60)}</p></header>",
        _verdict_html(analysis.verdict, analysis.secondary),
        "<section><h2>Timeline</h2>",
        _timeline_html(drops, sessions, sorted(events.values(), key=lambda pair: pair[0]), ups),
        "</section><section><h2>How long sessions lasted</h2>",
        _histogram_html(sessions, unknown),
        "</section><section><h2>Drops</h2>",
        _drops_html(analysis.drops),
        "</section>",
        "<footer>nwp500d report · times in UTC · cause ids are stable across versions</footer>",
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body><main>",
        *body,
        "</main></body></html>",
        "",
    ])


def _verdict_html(verdict: Finding, secondary: Sequence[Finding]) -> str:
    colour = _cause_colour(verdict.cause)
    sub = f' <span class="sub">/ {_e(verdict.subcause)}</span>' if verdict.subcause else ""
    confidence = verdict.confidence if math.isfinite(verdict.confidence) else 0.0
    width = round(min(1.0, max(0.0, confidence)) * 100)
    parts = [
        f'<section class="verdict" style="border-color:{colour}">',
        '<p class="eyebrow">Most likely cause</p>',
        f'<p class="cause"><span class="sw" style="background:{colour}"></span>{_e(_cause_title(verdict.cause))}'
        f"{sub}</p>",
        f'<div class="meter"><span style="width:{width}%;background:{colour}"></span></div>',
        f'<p class="meta"><strong>{_percent(verdict.confidence)}</strong> confidence · explains '
        f"{_percent(verdict.share)} of drops</p>",
    ]
    if verdict.evidence:
        parts.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in verdict.evidence) + "</ul>")
    if verdict.recommendation:
        parts.append(f'<p class="recommend"><strong>What to do:</strong> {_e(verdict.recommendation)}</p>')
    parts.append("</section>")
    if secondary:
        parts.append('<h2>Also contributing</h2><ul class="secondary">')
        for finding in secondary:
            sub = f" / {_e(finding.subcause)}" if finding.subcause else ""
            parts.append(
                f'<li><span class="sw" style="background:{_cause_colour(finding.cause)}"></span>'
                f"<strong>{_e(_cause_title(finding.cause))}</strong>{sub} — {_percent(finding.share)} of drops, "
                f"{_percent(finding.confidence)} confidence"
                + (f'<div class="small">{_e(finding.evidence[0])}</div>' if finding.evidence else "")
                + "</li>")
        parts.append("</ul>")
    return "\n".join(parts)


_VIEW_WIDTH = 720
_PLOT_LEFT = 104.0
_PLOT_RIGHT = 712.0
_SESSION_LANE = (6.0, 34.0)
_DROP_LANE = (34.0, 64.0)
_HOST_TOP = 66.0
_HOST_LANE = 24.0


def _timeline_html(drops: Sequence[tuple[datetime, DropVerdict]], sessions: Sequence[_Session],
                   events: Sequence[tuple[datetime, HostEvent]], ups: Sequence[datetime]) -> str:
    moments = [m for m, _ in drops] + [s.start for s in sessions] + [m for m, _ in events] + list(ups)
    if not moments:
        return '<p class="note">Nothing to draw yet: no sessions, drops or host events were recorded.</p>'
    start, end = _span(moments)
    axis = _Axis(start, end, _PLOT_LEFT, _PLOT_RIGHT)
    host_bottom = _HOST_TOP + _HOST_LANE * len(HOST_EVENT_CATEGORIES)
    height = host_bottom + 34
    svg = [f'<svg class="chart timeline" viewBox="0 0 {_VIEW_WIDTH} {height:.0f}" role="img" '
           f'aria-label="Timeline of sessions, drops and host events">']
    for index, category in enumerate(HOST_EVENT_CATEGORIES):  # zebra bands so a tick reads against its lane
        top = _HOST_TOP + index * _HOST_LANE
        if index % 2 == 0:
            svg.append(f'<rect x="{_PLOT_LEFT}" y="{top}" width="{_PLOT_RIGHT - _PLOT_LEFT}" height="{_HOST_LANE}" '
                       'fill="#f3f5f8"/>')
        svg.append(f'<text x="{_PLOT_LEFT - 8}" y="{top + _HOST_LANE / 2}" text-anchor="end" '
                   f'dominant-baseline="central">{_LANE_LABELS.get(category, category)}</text>')
    for label, (top, bottom) in (("sessions", _SESSION_LANE), ("drops", _DROP_LANE)):
        svg.append(f'<text x="{_PLOT_LEFT - 8}" y="{(top + bottom) / 2}" text-anchor="end" '
                   f'dominant-baseline="central">{label}</text>')
    for moment, label in _ticks(start, end):
        x = axis.x(moment)
        svg.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_SESSION_LANE[0]}" y2="{host_bottom + 4}" '
                   'stroke="#c9d0da" stroke-width="1"/>')
        # Near an edge a centred label would be clipped by the viewBox: hang it inwards instead.
        anchor = "end" if x > _PLOT_RIGHT - 30 else "start" if x < _PLOT_LEFT + 30 else "middle"
        svg.append(f'<text x="{x:.1f}" y="{host_bottom + 24}" text-anchor="{anchor}">{label}</text>')
    for session in sessions:
        x0 = axis.x(session.start)
        x1 = axis.x(end) if session.cause is None else axis.x(session.end)
        tip = f"session {session.start:%Y-%m-%d %H:%M:%S} → "
        tip += "still up" if session.cause is None else f"{session.end:%Y-%m-%d %H:%M:%S} (ended by {session.cause})"
        opacity = ' fill-opacity="0.55"' if session.cause is None else ""
        svg.append(f'<rect class="session" x="{x0:.1f}" y="{_SESSION_LANE[0] + 6}" width="{max(x1 - x0, 1.5):.1f}" '
                   f'height="{_SESSION_LANE[1] - _SESSION_LANE[0] - 12}" rx="2" fill="{_SESSION_COLOUR}"{opacity}>'
                   f"<title>{_e(tip)}</title></rect>")
    for moment, drop in drops:
        x = axis.x(moment)
        colour = _cause_colour(drop.cause)
        svg.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_DROP_LANE[1]}" y2="{host_bottom}" stroke="{colour}" '
                   'stroke-opacity="0.3" stroke-width="1"/>')
    for moment, drop in drops:
        tip = (f"{moment:%Y-%m-%d %H:%M:%S} {drop.error_name or 'unknown error'} — "
               f"{_cause_text(drop.cause, drop.subcause)}")
        svg.append(f'<circle class="drop" cx="{axis.x(moment):.1f}" cy="{sum(_DROP_LANE) / 2}" r="7" '
                   f'fill="{_cause_colour(drop.cause)}" stroke="#fff" stroke-width="1.5"><title>{_e(tip)}</title>'
                   "</circle>")
    for moment, event in events:
        if event.category not in HOST_EVENT_CATEGORIES:
            continue
        top = _HOST_TOP + HOST_EVENT_CATEGORIES.index(event.category) * _HOST_LANE
        where = f" {event.interface}" if event.interface else ""
        tip = f"{moment:%Y-%m-%d %H:%M:%S} {event.category} {event.kind}{where}: {event.message}"
        svg.append(f'<rect class="host-event" x="{axis.x(moment) - 1.25:.1f}" y="{top + 4}" width="2.5" '
                   f'height="{_HOST_LANE - 8}" fill="{CATEGORY_COLOURS[event.category]}">'
                   f"<title>{_e(tip)}</title></rect>")
    svg.append("</svg>")

    causes = Counter(drop.cause for _, drop in drops)
    categories = Counter(event.category for _, event in events)
    legend = ['<ul class="legend">', f'<li><span class="sw bar" style="background:{_SESSION_COLOUR}"></span>'
              "session</li>"]
    legend += [f'<li><span class="sw" style="background:{_cause_colour(cause)}"></span>drop: {_e(cause)} '
               f"({count})</li>" for cause, count in sorted(causes.items(), key=lambda item: _cause_sort_key(item[0]))]
    legend.append('</ul><ul class="legend">')
    legend += [f'<li><span class="sw tick" style="background:{CATEGORY_COLOURS[category]}"></span>{category}'
               f" ({categories.get(category, 0)})</li>" for category in HOST_EVENT_CATEGORIES]
    legend.append("</ul>")
    note = (f'<p class="note">UTC, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}; host events are those in the '
            "drops' journal windows. Each mark has a tooltip.</p>")
    return "\n".join([*svg, *legend, note])


def _histogram_html(sessions: Sequence[_Session], unknown: int) -> str:
    ended = [s for s in sessions if s.cause is not None]
    if not ended:
        return '<p class="note">No ended session of known length yet.</p>'
    counts: list[Counter[str]] = [Counter() for _ in _HISTOGRAM_BINS]
    for session in ended:
        counts[_bin_index((session.end - session.start).total_seconds())][session.cause or ""] += 1
    tallest = max(sum(c.values()) for c in counts)
    top, bottom, left, right = 30.0, 190.0, 12.0, 708.0
    slot = (right - left) / len(_HISTOGRAM_BINS)
    svg = [f'<svg class="chart histogram" viewBox="0 0 {_VIEW_WIDTH} 232" role="img" '
           'aria-label="Histogram of session durations">',
           f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#9aa3b0" stroke-width="1"/>']
    for index, ((label, _), count) in enumerate(zip(_HISTOGRAM_BINS, counts, strict=True)):
        x = left + slot * index + slot * 0.14
        width = slot * 0.72
        y = bottom
        for cause in sorted(count, key=_cause_sort_key):
            height = (bottom - top) * count[cause] / tallest
            y -= height
            svg.append(f'<rect class="bin-part" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
                       f'fill="{_cause_colour(cause)}"><title>{_e(label)}: {count[cause]} ended by '
                       f"{_e(cause)}</title></rect>")
        total = sum(count.values())
        centre = x + width / 2
        svg.append(f'<text class="count" data-bin="{index}" data-count="{total}" x="{centre:.1f}" y="{y - 7:.1f}" '
                   f'text-anchor="middle">{total}</text>')
        svg.append(f'<text x="{centre:.1f}" y="{bottom + 26}" text-anchor="middle">{_e(label)}</text>')
    svg.append("</svg>")
    note = f"{len(ended)} ended sessions, coloured by the cause of the drop that ended them."
    if unknown:
        note += f" {unknown} more of unknown length are not shown."
    return "\n".join([*svg, f'<p class="note">{note}</p>'])


def _drops_html(drops: Sequence[DropVerdict]) -> str:
    if not drops:
        return '<p class="note">No drops recorded.</p>'
    rows = ['<div class="scroll"><table><thead><tr><th>Time (UTC)</th><th>Error</th><th>Cause</th><th>Host events</th>'
            "</tr></thead><tbody>"]
    for drop in drops:
        moment = _moment(drop.timestamp)
        stamp = f'<time datetime="{_e(drop.timestamp, 40)}">{_e(_clock(moment, drop.timestamp))}</time>'
        after = (f'<span class="small after">after {_e(_duration(drop.duration_connected_seconds))}</span>'
                 if drop.duration_connected_seconds is not None else "")
        why = "".join(f"<li>{_e(item)}</li>" for item in drop.evidence)
        cause = (f'<span class="sw" style="background:{_cause_colour(drop.cause)}"></span>'
                 f"{_e(_cause_text(drop.cause, drop.subcause)).replace('/', '/<wbr>')}"
                 + (f'<ul class="why small">{why}</ul>' if why else ""))
        error = _e(drop.error_name or "unknown error", 120).replace("_", "_<wbr>")  # break codes at words
        rows.append(f'<tr class="drop-row"><td>{stamp}{after}</td><td><code>{error}</code></td><td>{cause}</td>'
                    f"<td>{_events_html(_host_events(drop.host_events))}</td></tr>")
    rows.append("</tbody></table></div>")
    return "\n".join(rows)


def _events_html(events: Sequence[HostEvent]) -> str:
    """One short line per event; the journal wording folds away so thirty drops stay scrollable on a phone."""
    if not events:
        return '<span class="small">none in the window</span>'
    ordered = sorted(events, key=lambda e: _moment(e.time) or datetime.min.replace(tzinfo=UTC))
    shown = ordered[:_EVENTS_PER_DROP]
    items = []
    for event in shown:
        moment = _moment(event.time)
        colour = CATEGORY_COLOURS.get(event.category, _OTHER_COLOUR)
        where = f" {_e(event.interface, 40)}" if event.interface else ""
        items.append(f'<li><time>{moment.strftime("%H:%M:%S") if moment else "?"}</time> '
                     f'<span class="cat" style="color:{colour}">{_e(event.category, 40)}</span> '
                     f"{_e(event.kind, 60)}{where}</li>")
    if len(ordered) > _EVENTS_PER_DROP:
        items.append(f'<li class="small">+{len(ordered) - _EVENTS_PER_DROP} more</li>')
    messages = "".join(f"<li>{_e(event.message, _MESSAGE_LIMIT)}</li>" for event in shown if event.message)
    journal = (f'<details class="small"><summary>journal lines</summary><ul class="journal">{messages}</ul>'
               "</details>" if messages else "")
    return '<ul class="events">' + "".join(items) + "</ul>" + journal
