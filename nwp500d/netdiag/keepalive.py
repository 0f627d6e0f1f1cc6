"""The NAT keep-alive experiment: find how long the path between this host and the cloud keeps an idle TCP
connection, by holding idle MQTT sessions at several keep-alive values and seeing which ones the path kills.

Why it works (reference/netns-lab.md §3): a NAT or stateful firewall forgets an idle connection's mapping after its
idle timeout T, and from then on drops the connection's packets silently. An idle MQTT client sends its first
PINGREQ K seconds after the last packet, so with K < T every ping refreshes the mapping and the session lives
forever, while with K >= T the ping is lost and awscrt reports ``AWS_ERROR_MQTT_TIMEOUT`` at K + ping timeout. The
survivors therefore bound T from below and the ping-timeout drops bound it from above.

The module is split so the search can be tested without a network:

* pure: :func:`plan_round` (which keep-alives to try next), :func:`update_bracket` (what a round's outcomes prove),
  :func:`recommend` (the keep-alive to configure), :func:`seconds_until_due` (when the daemon runs it again),
  :class:`Result` (with the text the CLI prints);
* IO: :func:`run_experiment`, which runs each round's trials in parallel, each on its OWN connection under a client
  id derived from the daemon's (a second connection with the daemon's id would knock the monitored session off),
  and :func:`crt_trial_factory`, which builds those connections from the daemon's transport settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from nwp500d.clock import Clock, SystemClock
from nwp500d.config import AWS_IOT_MAX_CLIENT_ID_LENGTH
from nwp500d.errors import ErrorInfo
from nwp500d.mqtt.session import Connection, ConnectionFactory
from nwp500d.mqtt.transport import CredentialsReader, CrtFactory, TransportError, TransportEvent, TransportSettings

AWS_IOT_MIN_KEEP_ALIVE = 30
AWS_IOT_MAX_KEEP_ALIVE = 1200
PING_TIMEOUT_ERROR = "AWS_ERROR_MQTT_TIMEOUT"
MAX_CLIENT_ID_LENGTH = AWS_IOT_MAX_CLIENT_ID_LENGTH  # a derived id over it would be refused at CONNECT
RETRY_PAUSE_SECS = 1.0  # AWS IoT throttles CONNECTs per client id to one a second; a retry must not hit that
SAFETY_FACTOR = 0.5

Outcome = Literal["survived", "dropped", "inconclusive"]


# ---------------------------------------------------------------------------------------------- pure planning


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def _geometric(start: float, stop: float, count: int, *, first: bool, last: bool) -> list[float]:
    """``count`` log-spaced points from ``start`` to ``stop``; ``first``/``last`` say whether the ends are included.

    Log spacing because nothing is known about the scale yet: NAT timeouts seen in the field run from tens of
    seconds (mobile carriers) to hours (enterprise firewalls), so equal ratios cover that range in few trials.
    """
    gaps = count - 1 + (0 if first else 1) + (0 if last else 1)
    if gaps == 0:
        return [math.sqrt(start * stop)]
    ratio = stop / start
    offset = 0 if first else 1
    return [start * ratio ** ((i + offset) / gaps) for i in range(count)]


def plan_round(
    lower: float | None,
    upper: float | None,
    *,
    lo_limit: int = AWS_IOT_MIN_KEEP_ALIVE,
    hi_limit: int = AWS_IOT_MAX_KEEP_ALIVE,
    parallel: int = 3,
    resolution: int = 1,
) -> list[int]:
    """The keep-alive values (seconds, ascending, at most ``parallel``) worth trying next; [] when done.

    ``lower`` is the longest keep-alive known to survive (the NAT timeout is above it), ``upper`` the shortest known
    to be dropped by a ping timeout (the NAT timeout is at or below it); None means no such evidence yet. Only
    values strictly between them can teach anything. With both known the bracket is split into ``parallel + 1``
    equal parts (bisection when ``parallel`` is 1); with a side open the candidates are log-spaced up to the limit
    on that side, which is itself tried, so a NAT slower than the longest allowed keep-alive (or faster than the
    shortest) is recognised in one round. The limits default to AWS IoT's accepted keep-alive range.
    """
    _check_limits(lo_limit=lo_limit, hi_limit=hi_limit, parallel=parallel, resolution=resolution)
    # Evidence outside the allowed range says nothing about which allowed value to try.
    if lower is not None and lower < lo_limit:
        lower = None
    if upper is not None and upper > hi_limit:
        upper = None
    floor = max(lo_limit, math.floor(lower) + 1) if lower is not None else lo_limit
    ceiling = min(hi_limit, math.ceil(upper) - 1) if upper is not None else hi_limit
    if floor > ceiling:
        return []
    if lower is not None and upper is not None:
        if upper - lower <= resolution:
            return []
        points = [lower + (upper - lower) * i / (parallel + 1) for i in range(1, parallel + 1)]
    elif upper is not None:
        points = _geometric(lo_limit, upper, parallel, first=True, last=False)
    elif lower is not None:
        points = _geometric(lower, hi_limit, parallel, first=False, last=True)
    else:
        points = _geometric(lo_limit, hi_limit, parallel, first=True, last=True)
    chosen = sorted({_clamp(round(point), floor, ceiling) for point in points})
    return chosen[:parallel]


def _check_limits(*, lo_limit: int, hi_limit: int, parallel: int, resolution: int) -> None:
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    if lo_limit < 1 or hi_limit <= lo_limit:
        raise ValueError("need 1 <= lo_limit < hi_limit")
    if resolution < 1:
        raise ValueError("resolution must be at least 1 s")


def update_bracket(
    lower: int | None, upper: int | None, results: Mapping[int, bool]
) -> tuple[int | None, int | None]:
    """What one round's conclusive outcomes (keep-alive → survived) prove about the NAT timeout.

    Survivals count for more than drops: a survival cannot happen if the NAT kills idle connections sooner, but a
    ping timeout can also come from a passing outage. So a drop at or below a survived keep-alive is discarded as
    noise; a survival at or above an already proven drop is discarded too, because the bracket must only ever
    shrink (the planner never proposes such a value, so only a caller-built mapping can contain one).
    """
    survived = [k for k, alive in results.items() if alive and (upper is None or k < upper)]
    if survived:
        lower = max(survived) if lower is None else max(lower, *survived)
    dropped = [k for k, alive in results.items() if not alive and (lower is None or k > lower)]
    if dropped:
        upper = min(dropped) if upper is None else min(upper, *dropped)
    return lower, upper


def contradictions(lower: int | None, upper: int | None, results: Mapping[int, bool]) -> list[int]:
    """The keep-alives whose outcome :func:`update_bracket` would ignore as inconsistent (a sign of a flaky path)."""
    new_lower, _ = update_bracket(lower, upper, results)
    return sorted(
        k
        for k, alive in results.items()
        if (alive and upper is not None and k >= upper) or (not alive and new_lower is not None and k <= new_lower)
    )


def recommend(
    lower: int | None,
    upper: int | None,
    *,
    lo_limit: int = AWS_IOT_MIN_KEEP_ALIVE,
    hi_limit: int = AWS_IOT_MAX_KEEP_ALIVE,
) -> int:
    """The keep-alive to configure: comfortably below the NAT timeout, within what the broker accepts.

    Half the shortest failing keep-alive, not the longest survivor: NAT tables shorten their timeouts under load,
    some routers count from the last packet in one direction only, and a lost ping costs a whole
    keep-alive + ping-timeout cycle before it is noticed; at 30 s and up a ping is cheap either way. With no drop
    seen, the longest survivor is known to be safe. With no conclusive trial at all, the shortest allowed value is
    the only one that cannot be too long. When even the shortest allowed value dropped, nothing in range is
    below the timeout, and the shortest is still the least bad.
    """
    if upper is not None:
        return _clamp(math.floor(upper * SAFETY_FACTOR), lo_limit, hi_limit)
    if lower is not None:
        return _clamp(lower, lo_limit, hi_limit)
    return lo_limit


def hold_seconds(keep_alive_secs: int, ping_timeout_ms: int, survive_cycles: int) -> float:
    """How long an idle trial must stay up to count as survived: ``survive_cycles`` keep-alive + ping cycles.

    The first ping goes out one keep-alive after CONNACK and a lost one is reported a ping timeout later, so one
    cycle is the least that can prove anything; the default of two leaves a whole cycle of slack for the CRT's
    timer jitter and for a NAT whose clock started a little after ours.
    """
    return survive_cycles * (keep_alive_secs + ping_timeout_ms / 1000)


def derived_client_id(base_client_id: str, keep_alive_secs: int) -> str:
    """A trial's own client id: related to the daemon's (so an IoT policy written for it is likely to allow it, and
    the broker log shows whose it is) but never equal, since one id can hold only one connection."""
    return f"{base_client_id}-ka{keep_alive_secs}"


DAY_SECS = 86400.0


def seconds_until_due(finished_at: float | None, now: float, repeat_days: float) -> float | None:
    """When the daemon should run the experiment again: 0 = now, None = never (a result is kept for good).

    A result dated in the future (the clock was wrong when it was saved, or has been set back since) waits at most
    one period, so a clock error cannot postpone the next run indefinitely.
    """
    if finished_at is None:
        return 0.0
    if repeat_days <= 0:
        return None
    period = repeat_days * DAY_SECS
    return max(0.0, min(finished_at + period - now, period))


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Trial:
    """One idle connection held at one keep-alive.

    ``idle_secs`` runs from CONNACK to the outcome: for a drop it is the measured detection time (expected
    keep-alive + ping timeout, since CONNACK was the last packet), for a survival the hold time.
    """

    keep_alive_secs: int
    client_id: str
    outcome: Outcome
    error: ErrorInfo | None
    duration_secs: float
    idle_secs: float | None
    round: int
    attempt: int

    def describe(self) -> str:
        head = f"K={self.keep_alive_secs}s"
        if self.outcome == "survived":
            return f"{head} survived {self.idle_secs or 0.0:.1f} s idle"
        name = self.error.name if self.error is not None else "no error"
        if self.outcome == "dropped":
            return f"{head} dropped after {self.idle_secs or 0.0:.2f} s idle ({name})"
        if self.idle_secs is None:
            return f"{head} inconclusive: connect failed after {self.duration_secs:.1f} s ({name})"
        return f"{head} inconclusive: lost after {self.idle_secs:.2f} s idle ({name})"


@dataclass(frozen=True)
class Progress:
    """What :func:`run_experiment` reports while it runs; rounds at real keep-alives take up to tens of minutes."""

    kind: Literal["round", "trial"]
    round: int
    keep_alives: tuple[int, ...] = ()
    expected_secs: float = 0.0
    lower: int | None = None
    upper: int | None = None
    trial: Trial | None = None

    @property
    def text(self) -> str:
        if self.trial is not None:
            return f"round {self.round}: {self.trial.describe()}"
        values = ", ".join(f"{k} s" for k in self.keep_alives)
        return (
            f"round {self.round}: holding idle sessions at keep-alive {values} "
            f"(up to {self.expected_secs:.0f} s; bracket {_bracket_text(self.lower, self.upper)})"
        )


def _bracket_text(lower: int | None, upper: int | None) -> str:
    return f"({'?' if lower is None else lower}, {'?' if upper is None else upper}]"


@dataclass(frozen=True)
class Result:
    """The experiment's answer: NAT timeout in (lower, upper] (None: no evidence on that side) and what to set."""

    lower: int | None
    upper: int | None
    recommendation: int
    trials: tuple[Trial, ...]
    rounds: int
    ping_timeout_ms: int
    lo_limit: int
    hi_limit: int
    elapsed_secs: float
    ignored: tuple[int, ...] = ()

    @property
    def bracket(self) -> tuple[int | None, int | None]:
        return self.lower, self.upper

    @property
    def summary(self) -> str:
        lines = [self._verdict(), f"Recommended keep_alive_secs: {self.recommendation} ({self._why()})."]
        if self.upper is None and self.lower is not None:
            lines.append(
                f"A dead link is noticed up to keep-alive + ping timeout after it dies "
                f"({self.recommendation + self.ping_timeout_ms / 1000:g} s here); choose less for faster detection."
            )
        if self.ignored:
            lines.append(
                "Outcomes that contradicted the others were ignored (keep-alive "
                + ", ".join(f"{k} s" for k in self.ignored)
                + "): the path also drops connections for reasons other than idleness."
            )
        refused = [t for t in self.trials if t.outcome == "inconclusive" and t.idle_secs is None]
        if refused and len(refused) == len(self.trials):
            lines.append(
                "No trial connection was accepted: the IoT policy may allow only the daemon's own client id."
            )
        lines.append(f"{len(self.trials)} trials in {self.rounds} rounds, {self.elapsed_secs:.0f} s:")
        lines.extend(f"  round {t.round}: {t.describe()}" for t in self.trials)
        return "\n".join(lines)

    def _verdict(self) -> str:
        lower, upper = self.lower, self.upper
        if lower is None and upper is None:
            return "No conclusive trial: the NAT idle timeout is unknown."
        if upper is None:
            if lower == self.hi_limit:
                return f"No idle drop even at the longest keep-alive allowed ({lower} s): no NAT timeout in range."
            return f"No idle drop up to keep-alive {lower} s: the NAT idle timeout (if any) is above {lower} s."
        if lower is None:
            if upper <= self.lo_limit:
                return (
                    f"Even the shortest keep-alive allowed ({upper} s) dropped: the NAT idle timeout is at most "
                    f"{upper} s; a kernel TCP keepalive shorter than that is the remaining remedy."
                )
            return f"No keep-alive survived: the NAT idle timeout is at most {upper} s."
        return f"NAT idle timeout estimate: more than {lower} s, at most {upper} s."

    def _why(self) -> str:
        if self.upper is not None and self.recommendation < self.upper:
            return f"half the shortest keep-alive that dropped, clamped to {self.lo_limit}-{self.hi_limit} s"
        if self.upper is not None:
            return "the shortest allowed; it is not below the NAT timeout"
        if self.lower is not None:
            return "the longest keep-alive that survived"
        return "the shortest allowed, for lack of evidence"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json``); error triples become mappings."""
        return {
            "lower_secs": self.lower,
            "upper_secs": self.upper,
            "recommended_keep_alive_secs": self.recommendation,
            "rounds": self.rounds,
            "ping_timeout_ms": self.ping_timeout_ms,
            "limits": [self.lo_limit, self.hi_limit],
            "elapsed_secs": round(self.elapsed_secs, 3),
            "ignored": list(self.ignored),
            "trials": [
                {
                    **{f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name != "error"},
                    "error": dataclasses.asdict(t.error) if t.error is not None else None,
                }
                for t in self.trials
            ],
        }


# ---------------------------------------------------------------------------------------------- IO


class TrialFactory(Protocol):
    """Builds the connection factory for one trial: its keep-alive, its (derived) client id and its ping timeout."""

    def __call__(self, keep_alive_secs: int, client_id: str, ping_timeout_ms: int, /) -> ConnectionFactory: ...


def crt_trial_factory(settings: TransportSettings, credentials: CredentialsReader) -> TrialFactory:
    """Trial factories over the daemon's own transport (same endpoint, TLS, signing), changed only where a trial
    must differ: clean sessions, so no trial leaves a persistent session behind on the broker, and no kernel TCP
    keepalive, whose probes would refresh the NAT mapping and make every trial survive."""

    def build(keep_alive_secs: int, client_id: str, ping_timeout_ms: int, /) -> CrtFactory:
        trial = dataclasses.replace(
            settings,
            client_id=client_id,
            keep_alive_secs=keep_alive_secs,
            ping_timeout_ms=ping_timeout_ms,
            clean_session=True,
            tcp_keepalive=False,
        )
        return CrtFactory(trial, credentials)

    return build


@dataclass
class _Probe:
    """Shared between a trial and its transport callback, which runs on the loop."""

    loop: asyncio.AbstractEventLoop
    clock: Clock
    connection: Connection | None = None
    down_at: float | None = None
    down: asyncio.Future[ErrorInfo] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.down = self.loop.create_future()

    def on_event(self, event: TransportEvent) -> None:
        if event.kind not in ("interrupted", "closed") or self.down.done():
            return
        if self.connection is not None:
            # Before the CRT's own reconnect, which would open a second connection and measure nothing.
            self.connection.close_now()
        self.down_at = self.clock.monotonic()
        self.down.set_result(event.error or ErrorInfo("NWP500D_CLOSED", None, "connection closed by the CRT"))


async def _trial(
    factory_for: TrialFactory,
    keep_alive_secs: int,
    client_id: str,
    *,
    ping_timeout_ms: int,
    survive_cycles: int,
    connect_timeout: float,
    disconnect_timeout: float,
    clock: Clock,
    round_number: int,
    attempt: int,
) -> Trial:
    """Connect, stay silent, and see whether the connection outlives the hold time.

    Nothing is published or subscribed: any packet would postpone the ping and refresh the NAT mapping, and the
    point is to measure idleness. On every exit path the connection is shut: a clean DISCONNECT after a survival,
    an immediate close otherwise (cancellation included), never a wait on a connection that may be stuck; only a
    connect still in progress is closed later, when the CRT lets it be.
    """
    loop = asyncio.get_running_loop()
    started = clock.monotonic()
    # Building a CRT factory loads the trust store and starts a CRT thread: not on the loop.
    factory = await asyncio.to_thread(factory_for, keep_alive_secs, client_id, ping_timeout_ms)
    probe = _Probe(loop, clock)
    connection = factory.new_connection(loop, probe.on_event)
    probe.connection = connection

    def finish(outcome: Outcome, error: ErrorInfo | None, idle: float | None, end: float) -> Trial:
        return Trial(keep_alive_secs, client_id, outcome, error, round(end - started, 3),
                     None if idle is None else round(idle, 3), round_number, attempt)

    connecting = asyncio.ensure_future(connection.connect(connect_timeout))
    try:
        await asyncio.shield(connecting)
    except TransportError as exc:
        connection.close_now()
        return finish("inconclusive", exc.info, None, clock.monotonic())
    except BaseException:
        # awscrt refuses disconnect() before CONNACK (AWS_ERROR_MQTT_NOT_CONNECTED) and keeps connecting until its
        # own CONNACK deadline, so a close now would be lost and a late CONNACK would leave a live connection behind.
        # Close it when the connect settles instead; that is bounded by the CRT's deadlines, not by us.
        _settling.add(connecting)  # the loop holds tasks weakly; this one must live until it has closed
        connecting.add_done_callback(lambda _done: _close_after_connect(connecting, connection))
        raise
    try:
        up = clock.monotonic()
        try:
            async with asyncio.timeout(hold_seconds(keep_alive_secs, ping_timeout_ms, survive_cycles)):
                error = await asyncio.shield(probe.down)
        except TimeoutError:
            end = clock.monotonic()
            if not await connection.disconnect(disconnect_timeout):
                connection.close_now()
            return finish("survived", None, end - up, end)
        connection.close_now()
        down_at = probe.down_at if probe.down_at is not None else clock.monotonic()
        outcome: Outcome = "dropped" if error.name == PING_TIMEOUT_ERROR else "inconclusive"
        return finish(outcome, error, down_at - up, down_at)
    except BaseException:
        connection.close_now()  # cancellation: no awaiting here, the close must happen whatever else is going on
        raise


_settling: set[asyncio.Future[Any]] = set()


def _close_after_connect(connecting: asyncio.Future[Any], connection: Connection) -> None:
    _settling.discard(connecting)
    if not connecting.cancelled():
        connecting.exception()  # retrieved: a failed connect needs no close, and must not be logged as unhandled
    connection.close_now()


async def run_experiment(
    factory_for: TrialFactory,
    *,
    base_client_id: str,
    rounds: int = 4,
    parallel: int = 3,
    lo_limit: int = AWS_IOT_MIN_KEEP_ALIVE,
    hi_limit: int = AWS_IOT_MAX_KEEP_ALIVE,
    ping_timeout_ms: int = 10_000,
    survive_cycles: int = 2,
    resolution: int = 1,
    connect_timeout: float = 30.0,
    disconnect_timeout: float = 5.0,
    retry_pause: float = RETRY_PAUSE_SECS,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Clock | None = None,
) -> Result:
    """Search for the NAT idle timeout in up to ``rounds`` rounds of up to ``parallel`` simultaneous idle trials.

    A trial that ends for any reason other than a ping timeout (refused connect, peer close, ...) says nothing
    about idleness: it is retried once after ``retry_pause`` and then left out of the bracket. Each trial is bounded
    by ``connect_timeout`` + its hold time + ``disconnect_timeout``, so a round is bounded by its slowest trial.
    Cancelling the returned coroutine closes every connected trial before the cancellation propagates; a trial
    still waiting for CONNACK is closed as soon as the CRT ends its connect (CONNACK, or its own deadline: the ping
    timeout on TCP), because awscrt cannot abort a connect in progress.
    """
    if rounds < 1 or survive_cycles < 1:
        raise ValueError("rounds and survive_cycles must be at least 1")
    if lo_limit * 1000 <= ping_timeout_ms:
        # awscrt refuses a keep-alive that is not longer than the ping timeout.
        raise ValueError(f"ping_timeout_ms ({ping_timeout_ms}) must be below lo_limit ({lo_limit} s)")
    if len(derived_client_id(base_client_id, hi_limit)) > MAX_CLIENT_ID_LENGTH:
        raise ValueError(f"client id too long to derive trial ids from (max {MAX_CLIENT_ID_LENGTH} characters)")
    clock = clock or SystemClock()
    _check_limits(lo_limit=lo_limit, hi_limit=hi_limit, parallel=parallel, resolution=resolution)
    started = clock.monotonic()
    lower: int | None = None
    upper: int | None = None
    trials: list[Trial] = []
    ignored: list[int] = []
    rounds_run = 0

    def report(progress: Progress) -> None:
        if on_progress is not None:
            on_progress(progress)

    async def attempt_all(keep_alive_secs: int, round_number: int) -> list[Trial]:
        done: list[Trial] = []
        for attempt in (1, 2):
            if attempt == 2:
                await asyncio.sleep(retry_pause)  # a rate limit, not a synchronisation: there is no event to await
            trial = await _trial(
                factory_for, keep_alive_secs, derived_client_id(base_client_id, keep_alive_secs),
                ping_timeout_ms=ping_timeout_ms, survive_cycles=survive_cycles, connect_timeout=connect_timeout,
                disconnect_timeout=disconnect_timeout, clock=clock, round_number=round_number, attempt=attempt,
            )
            done.append(trial)
            report(Progress("trial", round_number, lower=lower, upper=upper, trial=trial))
            if trial.outcome != "inconclusive":
                break
        return done

    for round_number in range(1, rounds + 1):
        plan = plan_round(lower, upper, lo_limit=lo_limit, hi_limit=hi_limit, parallel=parallel,
                          resolution=resolution)
        if not plan:
            break
        rounds_run = round_number
        expected = max(hold_seconds(k, ping_timeout_ms, survive_cycles) for k in plan)
        report(Progress("round", round_number, tuple(plan), expected, lower, upper))
        batches = await _gather_all(attempt_all(k, round_number) for k in plan)
        round_trials = [trial for batch in batches for trial in batch]
        trials.extend(round_trials)
        results = {t.keep_alive_secs: t.outcome == "survived" for t in round_trials if t.outcome != "inconclusive"}
        ignored.extend(contradictions(lower, upper, results))
        lower, upper = update_bracket(lower, upper, results)
    return Result(
        lower=lower,
        upper=upper,
        recommendation=recommend(lower, upper, lo_limit=lo_limit, hi_limit=hi_limit),
        trials=tuple(trials),
        rounds=rounds_run,
        ping_timeout_ms=ping_timeout_ms,
        lo_limit=lo_limit,
        hi_limit=hi_limit,
        elapsed_secs=clock.monotonic() - started,
        ignored=tuple(sorted(set(ignored))),
    )


_CANCEL_BOUND = 5.0
_T = TypeVar("_T")


async def _gather_all(coroutines: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run the coroutines concurrently; if one fails or the caller is cancelled, cancel the rest and wait (bounded)
    until each has shut its connection, so nothing outlives the experiment."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=_CANCEL_BOUND)
        raise
