"""Completes each drop with the host events of its window, once that window has closed.

A drop is recorded at once; here it gets its second record (``drop_completed``) ``journal.after_secs`` after
detection, when everything the journal will ever say about that moment has been written. Drops left pending by a
restart or a crash are completed at the next start, from the same journal. When the journal cannot be read the
drop is completed as ``unavailable`` (never as an empty list, which would read as "nothing happened on the host").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from nwp500d import logfields
from nwp500d.clock import Clock, SystemClock, parse_iso_utc
from nwp500d.config import JournalConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.journal.correlate import drop_window, summarize
from nwp500d.journal.reader import HostEventSource, JournalUnavailable
from nwp500d.model import ConnectionDropEvent, HostEvent

Explainer = Callable[[ConnectionDropEvent], tuple[str | None, str | None]]
"""Given the completed drop, its cause and sub-cause (the classifier, run over the whole history)."""

Enricher = Callable[[ConnectionDropEvent], Awaitable[dict[str, Any] | None]]
"""More network evidence for the drop (the probe started when it was detected), merged into its record."""

_log = logging.getLogger("nwp500d.journal")


class Correlator:
    def __init__(
        self,
        collector: MqttDiagnosticsCollector,
        source: HostEventSource | None,
        config: JournalConfig,
        *,
        ping_timeout_secs: float,
        explain: Explainer | None = None,
        enrich: Enricher | None = None,
        without_source: str = "unavailable",
        clock: Clock | None = None,
    ) -> None:
        self._collector = collector
        self._source = source
        self._config = config
        self._ping_timeout = ping_timeout_secs
        self._clock = clock or SystemClock()
        self._explain = explain
        self._enrich = enrich
        self._without_source = without_source  # "unavailable" (cannot read) or "disabled" (journal.enabled: false)
        self._warned = False
        self._tasks: set[asyncio.Task[None]] = set()

    def on_drop(self, drop: ConnectionDropEvent) -> None:
        """The collector's drop listener: schedule the completion for when the window closes."""
        task = asyncio.create_task(self._complete_later(drop), name="nwp500d.correlate")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def complete_pending(self) -> int:
        """Drops a previous run recorded but never completed (their windows closed long ago)."""
        pending = [d for d in self._collector.get_recent_drops(self._collector.max_events_retained)
                   if d.correlation == "pending" and d.drop_id]
        for drop in pending:
            await self._complete(drop)
        return len(pending)

    async def drain(self) -> None:
        """Wait for every scheduled completion (tests; a shutdown cancels them instead, see ``close``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _complete_later(self, drop: ConnectionDropEvent) -> None:
        closes = parse_iso_utc(drop.timestamp) + timedelta(seconds=self._config.after_secs)
        wait = (closes - self._clock.wall()).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._complete(drop)

    async def _complete(self, drop: ConnectionDropEvent) -> None:
        assert drop.drop_id is not None
        detected = parse_iso_utc(drop.timestamp)
        window = drop_window(
            detected,
            seconds_since_last_activity=drop.seconds_since_last_activity,
            suspended_seconds=drop.suspended_seconds,
            keep_alive_secs=drop.keep_alive_secs,
            ping_timeout_secs=self._ping_timeout,
            before_secs=self._config.before_secs,
            after_secs=self._config.after_secs,
        )
        events: list[HostEvent] | None = None
        correlation = self._without_source
        if self._source is not None:
            try:
                events = await asyncio.to_thread(self._source.window, window.start, window.end)
                correlation = "done"
            except (JournalUnavailable, OSError) as exc:
                correlation = "unavailable"
                if not self._warned:
                    _log.warning("journal unreadable, drops are recorded without host events: %s", exc)
                    self._warned = True
        host_events = None if events is None else [event.to_dict() for event in events]
        network = await self._enrich(drop) if self._enrich is not None else None
        cause, subcause = (None, None)
        if self._explain is not None:
            merged = {**(drop.network or {}), **(network or {})} or None
            cause, subcause = self._explain(dataclasses.replace(drop, correlation=correlation,
                                                                host_events=host_events, network=merged))
        self._collector.complete_drop(drop.drop_id, correlation=correlation, host_events=host_events,
                                      cause=cause, subcause=subcause, network=network)
        if events is None:
            return
        because = f"; cause {cause}" + (f"/{subcause}" if subcause else "") if cause else ""
        _log.info("drop at %s (%s) window %s … %s: %s%s", drop.timestamp, drop.error_name or "unknown error",
                  _short(window.start), _short(window.end), summarize(events), because,
                  extra=logfields.event("drop_correlated", NWP_ERROR_NAME=drop.error_name or "",
                                        NWP_HOST_EVENTS=len(events), NWP_HOST_SUMMARY=summarize(events),
                                        NWP_CAUSE=f"{cause}/{subcause}" if subcause else (cause or "")))


def _short(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")
