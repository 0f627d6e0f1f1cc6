"""Window queries, live follow and correlation on real ``.journal`` files, and the same through the export parser."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from nwp500d.cli import main
from nwp500d.clock import iso_utc
from nwp500d.config import JournalConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.journal.correlate import drop_window
from nwp500d.journal.correlator import Correlator
from nwp500d.journal.reader import ExportFile, HostEventSource, SystemdJournal, system_journal_problem
from nwp500d.model import HostEvent
from tests.fakes import CrtLikeError, FakeClock
from tests.journal_fixtures import JournalBuilder, build_corpus, journal_remote_available, kernel, write_journal

pytestmark = pytest.mark.skipif(not journal_remote_available(),
                                reason="systemd-journal-remote is not installed (make test installs it as root)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[JournalBuilder, dict[str, datetime], Path, Path]:
    """One corpus, written as two rotated .journal files in one directory and as one export file."""
    builder = JournalBuilder()
    marks = build_corpus(builder)
    base = tmp_path_factory.mktemp("journal")
    directory = base / "journal"
    boot_b = next(i for i, e in enumerate(builder.entries) if int(str(e["__REALTIME_TIMESTAMP"])) >=
                  int(marks["boot_b"].timestamp() * 1e6))
    older, newer = builder.entries[:boot_b], builder.entries[boot_b:]
    write_journal(directory / "system@0000000000000000000000000000000a-0000000000000001-0006000000000000.journal",
                  builder.export_text(older), len(older))
    write_journal(directory / "system.journal", builder.export_text(newer), len(newer))
    export = base / "journal.export"
    export.write_bytes(builder.export_text())
    return builder, marks, directory, export


def sources(corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path]) -> list[HostEventSource]:
    _builder, _marks, directory, export = corpus
    return [SystemdJournal(directory), ExportFile(export)]


@pytest.mark.parametrize("kind", ["journal", "export"])
def test_window_spans_rotated_files_and_boots_and_excludes_the_rest(
    corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path], kind: str
) -> None:
    _builder, marks, _directory, _export = corpus
    source = sources(corpus)[0 if kind == "journal" else 1]
    everything = source.window(marks["wifi_trouble"] - timedelta(days=1), marks["end"] + timedelta(days=1))
    categories = {event.category for event in everything}
    assert categories == {"suspend", "network_manager", "wifi", "dhcp", "link", "cron", "time", "dns"}
    assert not [e for e in everything if "nginx" in e.message or "Session 3" in e.message]
    assert [e.time for e in everything] == sorted(e.time for e in everything)
    # A window from 5 s before to 2.5 s after boot B's e1000e link loss holds only boot B's first three lines.
    around = source.window(marks["boot_b"] - timedelta(seconds=5), marks["boot_b"] + timedelta(seconds=2.5))
    assert [(e.category, e.kind) for e in around] == [("link", "down"), ("link", "down"), ("dhcp", "lease_lost")]
    assert {e.interface for e in around} == {"eth0"}


@pytest.mark.parametrize("kind", ["journal", "export"])
def test_each_category_in_two_wordings(
    corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path], kind: str
) -> None:
    _builder, marks, _directory, _export = corpus
    source = sources(corpus)[0 if kind == "journal" else 1]
    events = source.window(marks["wifi_trouble"] - timedelta(days=1), marks["end"] + timedelta(days=1))
    by_category: dict[str, set[str]] = {}
    for event in events:
        by_category.setdefault(event.category, set()).add(event.message)
    for category, messages in by_category.items():
        assert len(messages) >= 2, category
    suspend_kinds = [e.kind for e in events if e.category == "suspend"]
    assert "suspend" in suspend_kinds
    assert "resume" in suspend_kinds
    # Both the 252 and the <= 245 systemd-sleep wordings, and the kernel's PM lines.
    messages = {e.message for e in events if e.category == "suspend"}
    assert {"Entering sleep state 'suspend'...", "Suspending system...", "System resumed.",
            "PM: suspend entry (deep)"} <= messages


@pytest.mark.parametrize("kind", ["journal", "export"])
def test_a_drop_noticed_after_resume_sees_the_suspend_hours_earlier(
    corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path], kind: str
) -> None:
    _builder, marks, _directory, _export = corpus
    source = sources(corpus)[0 if kind == "journal" else 1]
    detected = marks["drop_after_resume"]
    # The collector measured 60 s of idle on the monotonic clock and 4 h suspended from BOOTTIME - MONOTONIC.
    suspended = (marks["resume"] - marks["suspend"]).total_seconds() - 10
    window = drop_window(detected, seconds_since_last_activity=60, suspended_seconds=suspended,
                         keep_alive_secs=60, ping_timeout_secs=10, before_secs=120, after_secs=30)
    events = source.window(window.start, window.end)
    assert "Entering sleep state 'suspend'..." in {e.message for e in events}
    assert "The system will suspend now!" in {e.message for e in events}
    # Without the suspended time the window would miss it: the "±5 minutes around detection" mistake.
    naive = drop_window(detected, seconds_since_last_activity=60, suspended_seconds=0, keep_alive_secs=60,
                        ping_timeout_secs=10, before_secs=120, after_secs=30)
    assert "Entering sleep state 'suspend'..." not in {e.message for e in source.window(naive.start, naive.end)}


async def test_live_follow_picks_up_appended_entries(tmp_path: Path) -> None:
    builder = JournalBuilder()
    kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Down")
    path = tmp_path / "j" / "system.journal"
    write_journal(path, builder.export_text(), 1)
    received: asyncio.Queue[HostEvent] = asyncio.Queue()
    stop = SystemdJournal(tmp_path / "j").follow(asyncio.get_running_loop(), received.put_nowait)
    try:
        first = builder.entries[0]
        builder.entries.clear()
        builder.boot.boot_id = str(first["_BOOT_ID"])
        builder.add("unrelated line", _SYSTEMD_UNIT="nginx.service")
        kernel(builder, "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx")
        await asyncio.to_thread(write_journal, path, builder.export_text(), 2)  # appends to the same file
        async with asyncio.timeout(10):
            event = await received.get()
        assert (event.category, event.kind, event.interface) == ("link", "up", "eth0")
        assert received.empty()  # the unrelated line was not delivered, the earlier one not replayed
    finally:
        stop()


async def test_correlator_completes_drops_with_their_window(
    corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path]
) -> None:
    _builder, marks, directory, _export = corpus
    clock = FakeClock(start=marks["drop_after_resume"])
    collector = MqttDiagnosticsCollector(clock=clock)
    await collector.record_connection_success()
    clock.advance(0)
    collector.record_activity()
    correlator = Correlator(collector, SystemdJournal(directory), JournalConfig(after_secs=0),
                            ping_timeout_secs=10, clock=FakeClock(start=marks["end"] + timedelta(days=1)))
    collector.on_connection_drop(correlator.on_drop)
    drop = await collector.record_connection_drop(
        error=CrtLikeError("AWS_ERROR_MQTT_TIMEOUT", 5129), suspended_seconds=4 * 3600 - 10, keep_alive_secs=60
    )
    await correlator.drain()
    completed = collector.get_recent_drops(1)[0]
    assert completed.drop_id == drop.drop_id
    assert completed.correlation == "done"
    assert completed.host_events is not None
    assert {"suspend"} <= {e["category"] for e in completed.host_events}


async def test_without_a_journal_drops_are_marked_unavailable_not_empty() -> None:
    collector = MqttDiagnosticsCollector()
    correlator = Correlator(collector, None, JournalConfig(after_secs=0), ping_timeout_secs=10)
    collector.on_connection_drop(correlator.on_drop)
    await collector.record_connection_drop(error=CrtLikeError("AWS_IO_SOCKET_CLOSED", 1051))
    await correlator.drain()
    drop = collector.get_recent_drops(1)[0]
    assert drop.correlation == "unavailable"
    assert drop.host_events is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_unreadable_journal_names_the_missing_group() -> None:
    base = Path(tempfile.mkdtemp(prefix="nwp-journal-perm-", dir="/tmp"))  # pytest's own tmp is 0700
    try:
        check_unreadable_journal(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check_unreadable_journal(tmp_path: Path) -> None:
    journal_dir = tmp_path / "log" / "0123456789abcdef0123456789abcdef"
    journal_dir.mkdir(parents=True)
    (journal_dir / "system.journal").write_bytes(b"x")
    (journal_dir / "system.journal").chmod(0o640)
    for directory in (tmp_path, tmp_path / "log", journal_dir):
        directory.chmod(0o755)
    code = ("import sys; from pathlib import Path; from nwp500d.journal.reader import system_journal_problem;"
            f"print(system_journal_problem([Path({str(tmp_path / 'log')!r})]))")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                             code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "cannot read" in result.stdout
    assert "'root' group" in result.stdout
    assert system_journal_problem([tmp_path / "log"]) is None  # root can read it


def test_analyze_cli_from_journal_dir_and_export_agree(
    corpus: tuple[JournalBuilder, dict[str, datetime], Path, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _builder, marks, directory, export = corpus
    # An export as written by the upstream nwp500 library: no extension fields at all.
    upstream = {
        "timestamp": iso_utc(marks["end"]),
        "metrics": {"total_connection_drops": 1},
        "recent_drops": [{"timestamp": iso_utc(marks["boot_b"] + timedelta(seconds=30)),
                          "error_name": "AWS_ERROR_MQTT_UNEXPECTED_HANGUP", "error_message": "hangup",
                          "error_code": 5134, "reconnect_attempt": 0, "duration_connected_seconds": 5000.0,
                          "active_subscriptions": 2, "queued_commands": 0}],
        "recent_connections": [], "aws_error_counts": {"AWS_ERROR_MQTT_UNEXPECTED_HANGUP": 1},
        "session_history_summary": {"total_sessions": 1, "sample_durations": [5000.0]},
    }
    path = tmp_path / "upstream.json"
    path.write_text(json.dumps(upstream))
    outputs = []
    for option, value in (("--journal-dir", directory), ("--journal-export", export)):
        assert main(["analyze", str(path), option, str(value), "--format", "json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    kinds = {(e["category"], e["kind"]) for e in outputs[0]["drops"][0]["host_events"]}
    assert ("link", "down") in kinds  # the NIC lost its link 30 s before the hang-up was noticed
    assert main(["analyze", str(path), "--journal-dir", str(directory)]) == 0
    text = capsys.readouterr().out
    assert "AWS_ERROR_MQTT_UNEXPECTED_HANGUP" in text
    assert "NIC Link is Down" in text


def test_analyze_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["analyze", str(bad)]) == 65
    expected = f"nwp500d: {bad}:1: not JSON: Expecting property name enclosed in double quotes"
    assert capsys.readouterr().err.strip() == expected
    bad.write_text(json.dumps({"metrics": {}}))
    assert main(["analyze", str(bad)]) == 65
    assert "missing recent_drops" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"metrics": {}, "recent_drops": []}))
    truncated = tmp_path / "journal.export"
    truncated.write_bytes(b"MESSAGE=hello\n__REALTIME_TIMESTAMP=1\n")
    assert main(["analyze", str(good), "--journal-export", str(truncated)]) == 65
    assert "not ended by a blank line" in capsys.readouterr().err
    assert main(["analyze", str(good), "--journal-dir", str(tmp_path / "none")]) == 66
    assert "not a directory" in capsys.readouterr().err
