"""The keep-alive experiment's pure half: what to try next, what outcomes prove, what to recommend."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nwp500d.errors import ErrorInfo
from nwp500d.netdiag.keepalive import (
    Outcome,
    Progress,
    Result,
    Trial,
    contradictions,
    derived_client_id,
    hold_seconds,
    plan_round,
    recommend,
    seconds_until_due,
    update_bracket,
)

# ---------------------------------------------------------------------------------------------- examples


def test_first_round_spans_aws_iot_range_on_a_log_scale() -> None:
    assert plan_round(None, None) == [30, 190, 1200]
    assert plan_round(None, None, parallel=1) == [190]
    assert plan_round(None, None, lo_limit=1, hi_limit=8) == [1, 3, 8]


def test_open_side_is_log_spaced_up_to_the_limit_on_that_side() -> None:
    assert plan_round(190, None) == [351, 649, 1200]
    assert plan_round(None, 190) == [30, 56, 103]
    assert plan_round(30, None, parallel=1) == [1200]
    assert plan_round(None, 1200, parallel=1) == [30]


def test_closed_bracket_is_split_evenly() -> None:
    assert plan_round(100, 200, parallel=1) == [150]
    assert plan_round(190, 1200) == [442, 695, 948]
    assert plan_round(3, 8, lo_limit=1, hi_limit=8) == [4, 6, 7]
    assert plan_round(3, 5) == []  # 3 and 5 lie outside AWS IoT's range: nothing allowed to try
    assert plan_round(33, 35) == [34]


def test_nothing_left_to_try() -> None:
    assert plan_round(2, 3, lo_limit=1, hi_limit=8) == []  # resolved to 1 s
    assert plan_round(1200, None) == []  # survived the longest allowed keep-alive
    assert plan_round(None, 30) == []  # dropped even at the shortest
    assert plan_round(100, 110, resolution=10) == []
    assert plan_round(100, 111, resolution=10) != []


def test_evidence_outside_the_limits_is_ignored_by_the_planner() -> None:
    assert plan_round(10, None) == plan_round(None, None)
    assert plan_round(None, 5000) == plan_round(None, None)


@pytest.mark.parametrize(
    "kwargs", [{"parallel": 0}, {"lo_limit": 0}, {"lo_limit": 10, "hi_limit": 10}, {"resolution": 0}]
)
def test_invalid_planning_arguments_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"."):
        plan_round(None, None, **kwargs)


def test_bracket_from_outcomes() -> None:
    assert update_bracket(None, None, {30: True, 190: False, 1200: False}) == (30, 190)
    assert update_bracket(None, None, {30: True, 190: True, 1200: True}) == (1200, None)
    assert update_bracket(None, None, {30: False, 190: False}) == (None, 30)
    assert update_bracket(30, 190, {75: True, 120: False, 150: False}) == (75, 120)
    assert update_bracket(30, 190, {}) == (30, 190)


def test_outcomes_that_contradict_are_ignored_and_reported() -> None:
    # A drop at or below a survivor is a passing outage, not the NAT.
    assert update_bracket(None, None, {30: False, 190: True, 1200: False}) == (190, 1200)
    assert contradictions(None, None, {30: False, 190: True, 1200: False}) == [30]
    # A survival at or above a proven drop cannot widen the bracket.
    assert update_bracket(30, 190, {200: True, 100: False}) == (30, 100)
    assert contradictions(30, 190, {200: True, 100: False}) == [200]
    assert contradictions(30, 190, {75: True, 120: False}) == []


def test_recommendation() -> None:
    assert recommend(349, 642) == 321  # half the shortest drop
    assert recommend(None, 50) == 30  # half would be below AWS IoT's minimum
    assert recommend(None, 30) == 30  # nothing in range is below the timeout; the shortest is the least bad
    assert recommend(700, None) == 700  # no drop: the longest survivor
    assert recommend(1200, None) == 1200
    assert recommend(None, None) == 30  # no evidence
    assert recommend(2, 3, lo_limit=1, hi_limit=8) == 1


def test_hold_time_and_trial_ids() -> None:
    assert hold_seconds(30, 10_000, 2) == 80.0
    assert hold_seconds(3, 500, 1) == 3.5
    assert derived_client_id("nwp500d-abc", 190) == "nwp500d-abc-ka190"


def _trial(k: int, outcome: Outcome, idle: float | None, error: str | None = None, round_number: int = 1) -> Trial:
    info = ErrorInfo(error, None, error) if error else None
    return Trial(k, f"id-ka{k}", outcome, info, (idle or 0.0) + 0.1, idle, round_number, 1)


def _result(lower: int | None, upper: int | None, trials: tuple[Trial, ...], ignored: tuple[int, ...] = ()) -> Result:
    return Result(lower, upper, recommend(lower, upper), trials, 2, 10_000, 30, 1200, 321.0, ignored)


def test_summary_reads_as_a_diagnosis() -> None:
    trials = (
        _trial(30, "survived", 80.0),
        _trial(190, "survived", 400.0),
        _trial(1200, "dropped", 1210.02, "AWS_ERROR_MQTT_TIMEOUT"),
        _trial(442, "survived", 904.0, round_number=2),
        _trial(695, "dropped", 705.01, "AWS_ERROR_MQTT_TIMEOUT", round_number=2),
        _trial(948, "inconclusive", 12.5, "AWS_IO_SOCKET_CLOSED", round_number=2),
    )
    text = _result(442, 695, trials).summary
    assert text.splitlines()[0] == "NAT idle timeout estimate: more than 442 s, at most 695 s."
    assert "Recommended keep_alive_secs: 347 (half the shortest keep-alive that dropped" in text
    assert "round 1: K=1200s dropped after 1210.02 s idle (AWS_ERROR_MQTT_TIMEOUT)" in text
    assert "round 2: K=948s inconclusive: lost after 12.50 s idle (AWS_IO_SOCKET_CLOSED)" in text
    assert "contradicted" not in text


def test_summary_edge_cases() -> None:
    survived_all = _result(1200, None, (_trial(1200, "survived", 2420.0),)).summary
    assert "No idle drop even at the longest keep-alive allowed (1200 s)" in survived_all
    assert "noticed up to keep-alive + ping timeout after it dies (1210 s here)" in survived_all
    dropped_all = _result(None, 30, (_trial(30, "dropped", 40.0, "AWS_ERROR_MQTT_TIMEOUT"),)).summary
    assert "Even the shortest keep-alive allowed (30 s) dropped" in dropped_all
    assert "Recommended keep_alive_secs: 30 (the shortest allowed; it is not below the NAT timeout)" in dropped_all
    refused = _result(None, None, (_trial(30, "inconclusive", None, "AWS_IO_SOCKET_CONNECTION_REFUSED"),)).summary
    assert "No conclusive trial" in refused
    assert "the IoT policy may allow only the daemon's own client id" in refused
    assert "K=30s inconclusive: connect failed" in refused
    noisy = _result(190, 1200, (_trial(30, "dropped", 40.0, "AWS_ERROR_MQTT_TIMEOUT"),), ignored=(30,)).summary
    assert "contradicted the others were ignored (keep-alive 30 s)" in noisy


def test_result_as_dict_is_plain_data() -> None:
    result = _result(442, 695, (_trial(695, "dropped", 705.0, "AWS_ERROR_MQTT_TIMEOUT"),))
    data = result.as_dict()
    assert data["lower_secs"] == 442 and data["upper_secs"] == 695
    assert data["recommended_keep_alive_secs"] == 347
    assert data["trials"][0]["error"] == {"name": "AWS_ERROR_MQTT_TIMEOUT", "code": None,
                                          "message": "AWS_ERROR_MQTT_TIMEOUT"}
    assert data["trials"][0]["keep_alive_secs"] == 695
    assert result.bracket == (442, 695)


def test_progress_text() -> None:
    start = Progress("round", 1, (30, 190, 1200), 2420.0)
    assert start.text == (
        "round 1: holding idle sessions at keep-alive 30 s, 190 s, 1200 s (up to 2420 s; bracket (?, ?])"
    )
    done = Progress("trial", 1, trial=_trial(30, "survived", 80.0))
    assert done.text == "round 1: K=30s survived 80.0 s idle"


# ---------------------------------------------------------------------------------------------- properties


@st.composite
def limits(draw: st.DrawFn) -> tuple[int, int]:
    lo = draw(st.integers(1, 60))
    hi = draw(st.integers(lo + 1, 2000))
    return lo, hi


@st.composite
def brackets(draw: st.DrawFn) -> tuple[int, int, int | None, int | None]:
    """Limits and a consistent bracket inside them (lower < upper), either side possibly unknown."""
    lo, hi = draw(limits())
    lower = draw(st.none() | st.integers(lo, hi))
    upper_floor = lo if lower is None else lower + 1
    upper = draw(st.none() | st.integers(upper_floor, max(upper_floor, hi)))
    if upper is not None and upper > hi:
        upper = None
    return lo, hi, lower, upper


@given(brackets(), st.dictionaries(st.integers(1, 2500), st.booleans(), max_size=8))
def test_brackets_only_shrink(case: tuple[int, int, int | None, int | None], results: dict[int, bool]) -> None:
    _, _, lower, upper = case
    new_lower, new_upper = update_bracket(lower, upper, results)
    if lower is not None:
        assert new_lower is not None and new_lower >= lower
    if upper is not None:
        assert new_upper is not None and new_upper <= upper
    if new_lower is not None and new_upper is not None:
        assert new_lower < new_upper
    # Every outcome either moved the bracket consistently or is reported as a contradiction.
    ignored = set(contradictions(lower, upper, results))
    for k, alive in results.items():
        if k in ignored:
            continue
        if alive:
            assert new_lower is not None and k <= new_lower
        else:
            assert new_upper is not None and k >= new_upper


@given(brackets(), st.integers(1, 6), st.integers(1, 20))
def test_plans_stay_inside_the_bracket_and_the_limits(
    case: tuple[int, int, int | None, int | None], parallel: int, resolution: int
) -> None:
    lo, hi, lower, upper = case
    plan = plan_round(lower, upper, lo_limit=lo, hi_limit=hi, parallel=parallel, resolution=resolution)
    assert plan == sorted(set(plan))
    assert len(plan) <= parallel
    for k in plan:
        assert lo <= k <= hi
        assert lower is None or k > lower
        assert upper is None or k < upper
    candidates = [k for k in range(lo, hi + 1) if (lower is None or k > lower) and (upper is None or k < upper)]
    narrow = lower is not None and upper is not None and upper - lower <= resolution
    assert (plan == []) == (not candidates or narrow)


@given(limits(), st.one_of(st.none(), st.integers(1, 2500)), st.one_of(st.none(), st.integers(1, 2500)))
def test_recommendations_are_allowed_and_below_the_upper_bound(
    limit: tuple[int, int], lower: int | None, upper: int | None
) -> None:
    lo, hi = limit
    value = recommend(lower, upper, lo_limit=lo, hi_limit=hi)
    assert lo <= value <= hi
    if upper is not None and upper > lo:
        assert value < upper
    if upper is None and lower is not None:
        assert value == min(max(lower, lo), hi)


@given(limits(), st.floats(0.5, 2100, allow_nan=False), st.integers(1, 5))
def test_search_converges_on_a_deterministic_nat(limit: tuple[int, int], nat: float, parallel: int) -> None:
    """Against an ideal NAT (a keep-alive survives exactly when it is shorter than the timeout) every search ends
    with a bracket that holds the timeout: resolved to 1 s, or pinned against the limit it lies beyond."""
    lo, hi = limit
    lower: int | None = None
    upper: int | None = None
    for _ in range(64):
        plan = plan_round(lower, upper, lo_limit=lo, hi_limit=hi, parallel=parallel)
        if not plan:
            break
        lower, upper = update_bracket(lower, upper, {k: k < nat for k in plan})
        assert lower is None or lower < nat
        assert upper is None or nat <= upper
    else:
        pytest.fail("the search did not converge in 64 rounds")
    if nat <= lo:
        assert (lower, upper) == (None, lo)
    elif nat > hi:
        assert (lower, upper) == (hi, None)
    else:
        assert lower is not None and upper is not None
        assert upper - lower == 1 and lower < nat <= upper
        assert recommend(lower, upper, lo_limit=lo, hi_limit=hi) < nat or upper <= lo + 1
        assert recommend(lower, upper, lo_limit=lo, hi_limit=hi) == max(lo, math.floor(upper / 2))


# ---------------------------------------------------------------------------------------------- daemon schedule

DAY = 86400.0


def test_the_daemon_runs_it_when_nothing_is_saved_and_again_once_the_result_is_old() -> None:
    now = 1_800_000_000.0
    assert seconds_until_due(None, now, 30) == 0.0
    assert seconds_until_due(None, now, 0) == 0.0  # repeat_days 0 still measures once
    assert seconds_until_due(now - DAY, now, 30) == 29 * DAY
    assert seconds_until_due(now - 31 * DAY, now, 30) == 0.0
    assert seconds_until_due(now - 31 * DAY, now, 0) is None  # kept for good


def test_a_result_dated_in_the_future_waits_one_period_at_most() -> None:
    now = 1_800_000_000.0
    assert seconds_until_due(now + 365 * DAY, now, 30) == 30 * DAY


@given(st.floats(0, 4e9), st.floats(0, 4e9), st.floats(0.001, 3650))
def test_the_wait_is_never_negative_nor_longer_than_a_period(finished: float, now: float, days: float) -> None:
    wait = seconds_until_due(finished, now, days)
    assert wait is not None
    assert 0.0 <= wait <= days * DAY
