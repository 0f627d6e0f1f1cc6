"""DeviceMonitor: the end-to-end probe. Polls each water heater's status over the session and times the round trip.

A session can look connected while nothing comes back (the broker dropped our subscriptions, a policy hang-up
half-happened, a NAT rebinding ate the return path). After ``deaf_after_timeouts`` unanswered requests in a row the
monitor ends the session as a drop named ``NWP500D_DEVICE_DEAF`` so the supervisor rebuilds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nwp500d import logfields
from nwp500d.clock import Clock, SystemClock
from nwp500d.errors import ErrorInfo
from nwp500d.navilink import topics
from nwp500d.navilink.topics import DeviceRef

_log = logging.getLogger("nwp500d.monitor")

DEVICE_DEAF = "NWP500D_DEVICE_DEAF"


@dataclass
class DeviceHealth:
    mac_address: str
    requests: int = 0
    replies: int = 0
    unanswered_in_a_row: int = 0
    last_rtt_seconds: float | None = None
    last_status: dict[str, object] | None = None
    pending_since: float | None = None
    rtts: list[float] = field(default_factory=list)


class SessionLike(Protocol):
    """What the monitor needs from the session (the SessionSupervisor)."""

    @property
    def is_connected(self) -> bool: ...

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], Awaitable[None] | None]) -> None: ...
    async def publish(self, topic: str, payload: bytes) -> bool: ...
    def force_rebuild(self, info: ErrorInfo) -> None: ...


class DeviceMonitor:
    def __init__(
        self,
        session: SessionLike,
        devices: Sequence[DeviceRef],
        *,
        client_id: str,
        session_id: str,
        interval_secs: float,
        reply_timeout_secs: float,
        deaf_after: int,
        clock: Clock | None = None,
        on_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        self._session = session
        self._devices = list(devices)
        self._client_id = client_id
        self._session_id = session_id
        self._interval = interval_secs
        self._reply_timeout = reply_timeout_secs
        self._deaf_after = deaf_after
        self._clock = clock or SystemClock()
        self._on_round_trip = on_round_trip
        self.health = {device.mac_address: DeviceHealth(device.mac_address) for device in self._devices}
        self._replied: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        for device in self._devices:
            for topic in topics.subscriptions(device, self._client_id):
                await self._session.subscribe(topic, self._on_message)

    async def run(self) -> None:
        """Poll forever; one round per interval, every device in parallel."""
        while True:
            if self._session.is_connected:
                await asyncio.gather(*(self.poll(device) for device in self._devices))
            await asyncio.sleep(self._interval)

    async def poll(self, device: DeviceRef) -> float | None:
        """One status request; the round-trip time, or None if unanswered in time."""
        health = self.health[device.mac_address]
        replied = self._replied[device.mac_address] = asyncio.Event()
        command = topics.status_request(device, self._client_id, self._session_id)
        started = self._clock.monotonic()
        health.requests += 1
        health.pending_since = started
        if not await self._session.publish(command.topic, command.payload):
            return None  # queued: the session is down, which the supervisor already records
        try:
            async with asyncio.timeout(self._reply_timeout):
                await replied.wait()
        except TimeoutError:
            health.unanswered_in_a_row += 1
            _log.info("no status reply from %s within %g s (%d in a row)", _short(device.mac_address),
                      self._reply_timeout, health.unanswered_in_a_row)
            if health.unanswered_in_a_row >= self._deaf_after:
                health.unanswered_in_a_row = 0
                _log.warning("connected but deaf: %d status requests in a row unanswered; rebuilding the session",
                             self._deaf_after, extra=logfields.event("device_deaf"))
                self._session.force_rebuild(ErrorInfo(
                    DEVICE_DEAF, None,
                    f"connected but {self._deaf_after} status requests in a row went unanswered",
                ))
            return None
        rtt = self._clock.monotonic() - started
        health.last_rtt_seconds = rtt
        health.rtts = [*health.rtts[-99:], rtt]
        if self._on_round_trip is not None:
            self._on_round_trip(rtt)
        return rtt

    def _on_message(self, topic: str, payload: bytes) -> None:
        status = topics.parse_status(payload)
        if status is None:
            return
        for mac, health in self.health.items():
            if f"navilink-{mac}/" in topic:
                health.replies += 1
                health.unanswered_in_a_row = 0
                health.last_status = status
                health.pending_since = None
                event = self._replied.get(mac)
                if event is not None:
                    event.set()


def _short(mac: str) -> str:
    return f"…{mac[-4:]}"
