"""Keeps systemd's view of the daemon current: READY=1 once, and the one-line STATUS= of ``systemctl status``.

The line itself is pure (``nwp500d.status``); this is the part that follows session events and owns the timing:
READY at the first session or after a bounded start, EXTEND_TIMEOUT_USEC while a slow start still makes progress,
and a refresh so that uptime and the 24-hour drop count in the line do not go stale between events.
"""

from __future__ import annotations

import asyncio

from nwp500d.clock import Clock, SystemClock
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.mqtt.session import SessionEvent, SessionSupervisor
from nwp500d.status import drops_within, status_line
from nwp500d.systemd import Notifier

START_EXTENSION_SECS = 60.0
STATUS_REFRESH_SECS = 30.0


class StatusReporter:
    """Keeps STATUS= current and sends READY=1 once: at the first session, or after a bounded start."""

    def __init__(self, notifier: Notifier, supervisor: SessionSupervisor, collector: MqttDiagnosticsCollector,
                 clock: Clock | None = None) -> None:
        self._notifier = notifier
        self._supervisor = supervisor
        self._collector = collector
        self._clock = clock or SystemClock()
        self._since = self._clock.monotonic()
        self._state = "starting"
        self._last_error: str | None = None

    def on_session_event(self, event: SessionEvent) -> None:
        if event.kind in ("connected", "rebuilt", "deep_reconnected"):
            self._state, self._since = "connected", event.monotonic
            self.publish(ready=True)
            return
        if event.error is not None:
            self._last_error = event.error.name
        if event.kind == "interrupted":
            self._state, self._since = "reconnecting", event.monotonic
        elif event.kind == "failed" and not self._notifier.ready_sent:
            self._notifier.extend_timeout(START_EXTENSION_SECS)
        self.publish()

    def line(self) -> str:
        retained = self._collector.get_recent_drops(self._collector.max_events_retained)
        last = retained[-1] if retained else None
        cause = None
        if last is not None and last.cause and last.error_name == self._last_error:
            cause = f"{last.cause}/{last.subcause}" if last.subcause else last.cause
        return status_line(
            state=self._state,
            state_seconds=self._clock.monotonic() - self._since,
            drops_24h=drops_within([d.timestamp for d in retained], self._clock.wall()),
            last_error=self._last_error,
            cause=cause,
        )

    def publish(self, *, ready: bool = False) -> None:
        if ready and not self._notifier.ready_sent:
            self._notifier.ready(self.line())
        else:
            self._notifier.status(self.line())

    async def run(self, ready_after_secs: float) -> None:
        """READY after ``ready_after_secs`` even if the cloud is unreachable: the boot must not hang on us."""
        await asyncio.sleep(ready_after_secs)
        if not self._notifier.ready_sent:
            self._state = "starting: cloud unreachable, still retrying"
            self._notifier.ready(self.line())
        while True:
            self.publish()
            await asyncio.sleep(STATUS_REFRESH_SECS)
