"""The keep-alive experiment run by the daemon itself (``netdiag.keepalive_experiment.enabled``).

The search is :func:`nwp500d.netdiag.keepalive.run_experiment`, the one ``nwp500d experiment keepalive`` runs; what
this adds is what running it unattended takes:

* it starts ``start_delay_secs`` after the monitored session first came up, only while it is up, and only when
  the saved result is older than ``repeat_days`` (a result from the command line counts too; so does one kept in
  memory when the state directory could not take it, so a full disk cannot make it run back to back);
* a run during which the monitored session dropped, or dropped within ``settle_secs`` after it (a drop is noticed
  up to keep-alive + ping timeout late), is thrown away: the same fault most likely cut trials too, and a trial cut
  by anything but idleness would be read as a NAT timeout. So is a run in which no trial was conclusive (an IoT
  policy that admits only the daemon's own client id): it would replace a good result with "unknown". Both are
  tried again after ``retry_delay_secs``;
* the AWS credentials the trials sign with are kept fresh while a run lasts (rounds at real keep-alives last
  tens of minutes, longer than the credentials);
* the result is saved where ``report`` reads it and handed to the classifier at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nwp500d import logfields
from nwp500d.clock import Clock, SystemClock
from nwp500d.config import KeepAliveExperimentConfig
from nwp500d.mqtt.session import SessionEvent
from nwp500d.netdiag.keepalive import Progress, Result, TrialFactory, run_experiment, seconds_until_due
from nwp500d.state import keepalive_result_time, save_keepalive_result

_log = logging.getLogger("nwp500d.experiment")

UP_KINDS = ("connected", "rebuilt", "deep_reconnected")
CREDENTIALS_CHECK_SECS = 300.0
LONGEST_SLEEP_SECS = 86400.0  # the due time is re-read at least daily: clocks move, and the CLI may save a result

Bracket = tuple[int | None, int | None]


class KeepAliveExperimentService:
    """One daemon task: wait until due, run the experiment beside the monitored session, keep the result."""

    def __init__(
        self,
        settings: KeepAliveExperimentConfig,
        *,
        base_client_id: str,
        ping_timeout_ms: int,
        factory_for: TrialFactory,
        state_dir: Path,
        on_result: Callable[[Bracket], None],
        refresh_credentials: Callable[[], Awaitable[Any]] | None = None,
        clock: Clock | None = None,
        connect_timeout: float = 30.0,
        settle_secs: float = 0.0,
    ) -> None:
        self.settings = settings
        self._base_client_id = base_client_id
        self._ping_timeout_ms = ping_timeout_ms
        self._factory_for = factory_for
        self._state_dir = state_dir
        self._on_result = on_result
        self._refresh_credentials = refresh_credentials
        self._clock = clock or SystemClock()
        self._connect_timeout = connect_timeout
        self.settle_secs = settle_secs
        self._kept_at: float | None = None  # epoch seconds of the last run kept, saved or not
        self._interrupted = asyncio.Event()
        self._up = asyncio.Event()
        self._drops = 0
        self._changed = asyncio.Event()
        self.next_run_in: float | None = None  # seconds, as last decided; None: not decided yet, or never again
        self.rounds_started = 0
        self.kept = 0
        self.discarded = 0
        self.inconclusive = 0
        self.failed = 0

    def on_session_event(self, event: SessionEvent) -> None:
        if event.kind in UP_KINDS:
            self._up.set()
        elif event.kind == "interrupted":
            self._up.clear()
            self._drops += 1
            self._interrupted.set()

    async def wait_until(self, predicate: Callable[[KeepAliveExperimentService], bool]) -> None:
        """Until ``predicate(self)`` holds (it is re-checked at every round start and at the end of every run)."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def run(self) -> None:
        settings = self.settings
        await self._session_up()
        await asyncio.sleep(settings.start_delay_secs)
        while True:
            wait = seconds_until_due(self._last_finished(), self._clock.wall().timestamp(), settings.repeat_days)
            self.next_run_in = wait
            self._notify()
            if wait is None:
                _log.info("keep-alive experiment: a result is saved and repeat_days is 0; not running it again")
                return
            if wait > 0:
                _log.debug("keep-alive experiment: next run in %.0f s", wait)
                await asyncio.sleep(min(wait, LONGEST_SLEEP_SECS))
                continue
            await self._session_up()
            try:
                kept = await self._run_once()
            except Exception:  # noqa: BLE001 - a bug here must cost this run, not the experiment for good
                _log.exception("keep-alive experiment failed unexpectedly; trying again in %.0f s",
                               settings.retry_delay_secs)
                kept = False
            self._notify()
            if not kept:
                await asyncio.sleep(settings.retry_delay_secs)

    async def _session_up(self) -> None:
        while not self._up.is_set():  # set and cleared again before this task ran counts as down
            await self._up.wait()

    def _last_finished(self) -> float | None:
        saved = keepalive_result_time(self._state_dir)
        known = [t for t in (saved, self._kept_at) if t is not None]
        return max(known) if known else None

    async def _run_once(self) -> bool:
        """One whole search; False when it produced nothing worth keeping (try again after retry_delay_secs)."""
        settings = self.settings
        drops_before = self._drops
        _log.info(
            "keep-alive experiment started: up to %d rounds of %d idle sessions, keep-alive %d-%d s, on client ids "
            "%s-ka<keep-alive>", settings.rounds, settings.parallel, settings.min_secs, settings.max_secs,
            self._base_client_id, extra=logfields.event("keepalive_experiment_started"),
        )
        refresher = asyncio.create_task(self._keep_credentials_fresh(), name="nwp500d.experiment-credentials")
        try:
            result = await run_experiment(
                self._factory_for, base_client_id=self._base_client_id, rounds=settings.rounds,
                parallel=settings.parallel, lo_limit=settings.min_secs, hi_limit=settings.max_secs,
                ping_timeout_ms=self._ping_timeout_ms, connect_timeout=self._connect_timeout,
                on_progress=self._on_progress, clock=self._clock,
            )
        except Exception as exc:  # noqa: BLE001 - a failed experiment must never take the monitoring down with it
            self.failed += 1
            _log.warning("keep-alive experiment failed (%s: %s); trying again in %.0f s", type(exc).__name__, exc,
                         settings.retry_delay_secs)
            return False
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        if self.settle_secs > 0 and self._drops == drops_before:
            # A fault in the last cycle cut trials at once but the session notices it only at its next ping.
            self._interrupted.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settle_secs):
                    await self._interrupted.wait()
        dropped = self._drops - drops_before
        if dropped:
            self.discarded += 1
            _log.warning(
                "keep-alive experiment discarded: the monitored session dropped %d time(s) while it ran, so trial "
                "drops cannot be told from that fault; trying again in %.0f s", dropped, settings.retry_delay_secs,
                extra=logfields.event("keepalive_experiment_discarded", NWP_DROPS=dropped),
            )
            return False
        if result.lower is None and result.upper is None:
            self.inconclusive += 1
            lines = result.summary.splitlines()
            why = " ".join([lines[0], *(line for line in lines if line.startswith("No trial connection"))])
            _log.warning("keep-alive experiment inconclusive: %s Keeping the previous result; trying again in %.0f s",
                         why, settings.retry_delay_secs)
            return False
        self._keep(result)
        self.kept += 1
        return True

    def _keep(self, result: Result) -> None:
        finished = self._clock.wall()
        self._kept_at = finished.timestamp()
        try:
            save_keepalive_result(self._state_dir, result.as_dict(), finished_at=finished, source="daemon")
        except OSError as exc:
            _log.warning("keep-alive experiment result not saved in %s (%s); it is used until the next start",
                         self._state_dir, exc.strerror or exc)
        self._on_result(result.bracket)
        verdict = result.summary.splitlines()[0]
        _log.info(
            "keep-alive experiment finished: %s Recommended keep_alive_secs: %d.", verdict, result.recommendation,
            extra=logfields.event("keepalive_experiment_finished", NWP_NAT_TIMEOUT=_bracket_text(result.bracket),
                                  NWP_RECOMMENDED_KEEP_ALIVE=result.recommendation),
        )

    def _on_progress(self, progress: Progress) -> None:
        """Rounds at INFO (a handful over hours), trials at DEBUG."""
        _log.log(logging.INFO if progress.trial is None else logging.DEBUG, "keep-alive experiment: %s",
                 progress.text)
        if progress.kind == "round":
            self.rounds_started += 1
            self._notify()

    async def _keep_credentials_fresh(self) -> None:
        if self._refresh_credentials is None:
            return
        while True:
            try:
                await self._refresh_credentials()
            except Exception as exc:  # noqa: BLE001 - trials then fail as inconclusive; the session reports it
                _log.debug("keep-alive experiment: credentials not refreshed (%s)", type(exc).__name__)
            await asyncio.sleep(CREDENTIALS_CHECK_SECS)




def _bracket_text(bracket: Bracket) -> str:
    """Only kept results get here, and a kept result has at least one side (inconclusive runs are not kept)."""
    lower, upper = bracket
    return f"({lower if lower is not None else 0}, {upper if upper is not None else 'inf'}] s"
