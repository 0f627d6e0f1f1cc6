"""The saved keep-alive experiment result: what the classifier, `report` and the daemon's scheduler read back."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nwp500d.state import (
    EXPORTS_DIR,
    KEEPALIVE_RESULT,
    keepalive_result_time,
    load_nat_bracket,
    save_keepalive_result,
)

FINISHED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_a_saved_result_reads_back_with_when_and_by_whom(tmp_path: Path) -> None:
    path = save_keepalive_result(tmp_path, {"lower_secs": 16, "upper_secs": 20}, finished_at=FINISHED, source="cli")
    assert path == tmp_path / EXPORTS_DIR / KEEPALIVE_RESULT
    assert path.stat().st_mode & 0o777 == 0o640
    data = json.loads(path.read_text())
    assert (data["finished_at"], data["source"]) == ("2026-11-21T12:00:00.000Z", "cli")
    assert keepalive_result_time(tmp_path) == FINISHED.timestamp()
    assert load_nat_bracket(tmp_path) == (16, 20)


def test_a_result_from_before_the_timestamp_field_counts_from_its_file_time(tmp_path: Path) -> None:
    path = tmp_path / EXPORTS_DIR / KEEPALIVE_RESULT
    path.parent.mkdir()
    path.write_text(json.dumps({"lower_secs": 30, "upper_secs": None}))
    os.utime(path, (FINISHED.timestamp(), FINISHED.timestamp()))
    assert keepalive_result_time(tmp_path) == FINISHED.timestamp()
    assert load_nat_bracket(tmp_path) == (30, None)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"lower_secs": "16"}', '{"lower_secs": true}', "\ud800"])
def test_a_damaged_result_is_as_good_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / EXPORTS_DIR / KEEPALIVE_RESULT
    path.parent.mkdir()
    path.write_text(text, errors="surrogatepass")
    assert load_nat_bracket(tmp_path) is None
    if not text.startswith("{\""):
        assert keepalive_result_time(tmp_path) is None


def test_nothing_saved_means_no_evidence_and_run_now(tmp_path: Path) -> None:
    assert load_nat_bracket(tmp_path) is None
    assert keepalive_result_time(tmp_path) is None
