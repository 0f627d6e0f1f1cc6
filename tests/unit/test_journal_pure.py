"""Export-format parsing, window arithmetic and summaries (pure parts of the journal correlation)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nwp500d.journal.correlate import drop_window, summarize
from nwp500d.journal.export_format import ExportFormatError, format_export, parse_export
from nwp500d.journal.reader import journal_file_span
from nwp500d.model import HostEvent

DETECTED = datetime(2026, 11, 21, 6, 1, 0, tzinfo=UTC)


def test_export_round_trip_with_binary_and_multiline_values() -> None:
    entries: list[dict[str, str | bytes]] = [
        {"MESSAGE": "plain", "__REALTIME_TIMESTAMP": "1"},
        {"MESSAGE": "two\nlines", "BLOB": b"\xff\x00\xfe", "__REALTIME_TIMESTAMP": "2"},
    ]
    assert list(parse_export(format_export(entries))) == entries


def test_invalid_field_names_are_skipped_like_systemd() -> None:
    data = b"MESSAGE=ok\nlower=x\n9BAD=y\nFOO-BAR=z\n_TRUSTED=t\n\n"
    assert list(parse_export(data)) == [{"MESSAGE": "ok", "_TRUSTED": "t"}]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"MESSAGE=x\n", "not ended by a blank line"),
        (b"MESSAGE=x", "not ended by a blank line"),
        (b"BLOB\n\x05\x00", "has no length"),
        (b"BLOB\n" + struct.pack("<Q", 1 << 40) + b"x\n\n", "claims"),
        (b"BLOB\n" + struct.pack("<Q", 2) + b"abX\n", "not ended by a newline"),
    ],
)
def test_broken_framing_is_one_clear_error(data: bytes, problem: str) -> None:
    with pytest.raises(ExportFormatError, match=problem):
        list(parse_export(data, "bug-report.export"))


@given(st.binary(max_size=2000))
def test_parser_never_crashes_on_garbage(data: bytes) -> None:
    try:
        for entry in parse_export(data):
            assert all(isinstance(key, str) for key in entry)
    except ExportFormatError:
        pass


def test_window_reaches_back_over_idle_and_suspend() -> None:
    window = drop_window(DETECTED, seconds_since_last_activity=60, suspended_seconds=4 * 3600, keep_alive_secs=60,
                         ping_timeout_secs=10, before_secs=120, after_secs=30)
    assert window.last_good == DETECTED - timedelta(seconds=60 + 4 * 3600)
    assert window.start == window.last_good - timedelta(seconds=120)
    assert window.end == DETECTED + timedelta(seconds=30)
    assert window.contains(DETECTED)
    fallback = drop_window(DETECTED, seconds_since_last_activity=None, suspended_seconds=None, keep_alive_secs=1200,
                           ping_timeout_secs=3, before_secs=0, after_secs=0)
    assert fallback.start == DETECTED - timedelta(seconds=1203)


def test_summary_orders_by_what_explains_most() -> None:
    def event(category: str, kind: str, interface: str | None = None) -> HostEvent:
        return HostEvent("2026-11-21T06:00:00.000Z", category, kind, "m", interface=interface)

    events = [event("cron", "job"), event("wifi", "disconnected", "wlan0"), event("wifi", "disconnected", "wlan0"),
              event("suspend", "resume")]
    assert summarize(events) == "suspend: resume · wifi: wlan0 disconnected x2 · cron: job"
    assert summarize([]) == "no host events in the window"


def test_journal_file_span_reads_the_header(tmp_path: Path) -> None:
    header = b"LPKSHHRH" + bytes(176) + struct.pack("<QQ", 1_700_000_000_000_000, 1_700_000_100_000_000)
    (tmp_path / "a.journal").write_bytes(header + bytes(64))
    assert journal_file_span(tmp_path / "a.journal") == (1_700_000_000_000_000, 1_700_000_100_000_000)
    (tmp_path / "b.journal").write_bytes(b"not a journal")
    assert journal_file_span(tmp_path / "b.journal") is None
    assert journal_file_span(tmp_path / "missing.journal") is None


@pytest.mark.parametrize(
    ("category", "kind", "fields", "back"),
    [
        ("link", "up", {}, True),
        ("link", "down", {}, False),
        ("network_manager", "manager_state", {"new_state": "CONNECTED_GLOBAL"}, True),
        ("network_manager", "manager_state", {"new_state": "DISCONNECTED"}, False),
        ("network_manager", "state_change", {"new_state": "activated"}, True),
        ("network_manager", "state_change", {"new_state": "failed"}, False),
        ("suspend", "resume", {}, True),
        ("cron", "job", {}, False),
    ],
)
def test_network_came_back(category: str, kind: str, fields: dict[str, str], back: bool) -> None:
    from nwp500d.journal.events import network_came_back

    assert network_came_back(HostEvent("2026-11-21T06:00:00.000Z", category, kind, "m", fields=fields)) is back
