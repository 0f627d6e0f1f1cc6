"""NavienMqttClient: the guide's client surface on top of the SessionSupervisor.

``NavienMqttClient(auth_client, config=MqttConnectionConfig(...))``, ``await connect()``, ``await disconnect()``,
``.on('connection_interrupted' | 'connection_resumed' | ..., handler)``, ``is_connected``, ``queued_commands_count`` and
``set_dhw_temperature(device, value)`` behave as the guide's samples expect, so those samples run with only their
import line changed. Handlers may be plain functions, coroutine functions, or lambdas that return a coroutine or a
task (the guide's samples do all three); whatever they return is awaited, and a failing handler is logged, not raised.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.mqtt.session import ConnectionFactory, SessionDropped, SessionEvent, SessionSupervisor
from nwp500d.mqtt.transport import CredentialsReader, CrtFactory, settings_from_config
from nwp500d.navilink import topics
from nwp500d.navilink.topics import DeviceRef

_log = logging.getLogger("nwp500d.client")

EVENTS = ("connected", "connection_interrupted", "connection_resumed", "reconnection_failed", "message")


@dataclass(frozen=True)
class _Subscriptions:
    subscriptions: tuple[str, ...]


@dataclass(frozen=True)
class ConnectionInterruptedEvent:
    error: Exception


@dataclass(frozen=True)
class ConnectionResumedEvent:
    return_code: int
    session_present: bool
    event_type: str = "rebuilt"


@dataclass(frozen=True)
class ReconnectionFailedEvent:
    error: Exception
    attempt: int


class NavienMqttClient:
    def __init__(
        self,
        auth_client: Any,
        config: MqttConnectionConfig | None = None,
        *,
        client_id: str | None = None,
        diagnostics: MqttDiagnosticsCollector | None = None,
        factory: ConnectionFactory | None = None,
    ) -> None:
        self.config = config or MqttConnectionConfig()
        self.client_id = self.config.client_id or client_id or f"nwp500d-{os.urandom(6).hex()}"
        self.session_id = os.urandom(16).hex()
        self.diagnostics = diagnostics or MqttDiagnosticsCollector()
        reader: CredentialsReader = auth_client.aws_credentials
        self._factory = factory or CrtFactory(settings_from_config(self.config, self.client_id), reader)
        self.supervisor = SessionSupervisor(
            config=self.config, factory=self._factory, credentials=auth_client, collector=self.diagnostics
        )
        self.supervisor.on_event(self._on_session_event)
        self._handlers: dict[str, list[Callable[[Any], Any]]] = {name: [] for name in EVENTS}
        self._run_task: asyncio.Task[None] | None = None
        self._first_up: asyncio.Future[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    # ---------------------------------------------------------------- guide surface

    def on(self, event: str, handler: Callable[[Any], Any]) -> None:
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self._handlers[event].append(handler)

    @property
    def is_connected(self) -> bool:
        return self.supervisor.is_connected

    @property
    def queued_commands_count(self) -> int:
        return self.supervisor.queued_commands_count

    @property
    def _subscription_manager(self) -> _Subscriptions:
        """The guide's class-based sample counts subscriptions through this (upstream-private) attribute."""
        return _Subscriptions(self.supervisor.subscribed_topics)

    async def connect(self, timeout: float | None = None) -> None:
        """Start the session and return once it is up. The supervisor keeps retrying (with backoff) meanwhile."""
        if self._run_task is None:
            loop = asyncio.get_running_loop()
            self._first_up = loop.create_future()
            self._run_task = asyncio.create_task(self.supervisor.run(), name="nwp500d.session")
            self._run_task.add_done_callback(self._run_finished)
        assert self._first_up is not None
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._first_up)

    async def disconnect(self) -> None:
        """Clean MQTT DISCONNECT, even while reconnecting; waits for the supervisor to finish."""
        self.supervisor.stop()
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], Any]) -> None:
        await self.supervisor.subscribe(topic, handler)

    async def publish(self, topic: str, payload: bytes) -> bool:
        return await self.supervisor.publish(topic, payload)

    async def request_status(self, device: DeviceRef) -> bool:
        command = topics.status_request(device, self.client_id, self.session_id)
        return await self.publish(command.topic, command.payload)

    async def set_dhw_temperature(self, device: DeviceRef, temperature_f: float) -> bool:
        command = topics.set_dhw_temperature(device, self.client_id, self.session_id, temperature_f)
        return await self.publish(command.topic, command.payload)

    # ---------------------------------------------------------------- plumbing

    def _run_finished(self, task: asyncio.Task[None]) -> None:
        if self._first_up is not None and not self._first_up.done():
            error = None if task.cancelled() else task.exception()
            self._first_up.set_exception(error or ConnectionError("the MQTT session stopped before it came up"))
            self._first_up.exception()  # retrieved here; connect() re-raises it through the shield

    def _on_session_event(self, event: SessionEvent) -> None:
        if event.kind == "connected":
            if self._first_up is not None and not self._first_up.done():
                self._first_up.set_result(None)
            self._fire("connected", ConnectionResumedEvent(0, event.session_present, "connected"))
        elif event.kind in ("rebuilt", "deep_reconnected"):
            self._fire("connection_resumed", ConnectionResumedEvent(event.return_code or 0, event.session_present,
                                                                    event.kind))
        elif event.kind == "interrupted" and event.error is not None:
            self._fire("connection_interrupted", ConnectionInterruptedEvent(SessionDropped(event.error)))
        elif event.kind == "failed" and event.error is not None:
            self._fire("reconnection_failed", ReconnectionFailedEvent(SessionDropped(event.error), event.attempt))

    def _fire(self, name: str, payload: Any) -> None:
        for handler in list(self._handlers[name]):
            try:
                result = handler(payload)
            except Exception:  # noqa: BLE001 - a user's handler must not break the session
                _log.exception("%s handler failed", name)
                continue
            if inspect.isawaitable(result):
                future = asyncio.ensure_future(result)
                self._pending.add(future)
                future.add_done_callback(self._handler_done)

    def _handler_done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            _log.error("event handler failed: %r", future.exception())

