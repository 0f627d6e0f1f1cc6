"""A simulated NWP500 on the broker: answers status requests the way the real device does (reply on ``responseTopic``).

It connects with its own client id straight to the broker (not through the fault proxy), so faults injected
between the daemon and the broker do not silence the device, exactly as in the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nwp500d.mqtt.transport import CrtConnection, CrtFactory, TransportError, TransportEvent, TransportSettings
from nwp500d.navilink.topics import CMD_STATUS, device_topic_root

_log = logging.getLogger("nwp500d.sim.device")


class SimulatedDevice:
    def __init__(self, settings: TransportSettings, *, mac_address: str, additional_value: str,
                 device_type: int = 52) -> None:
        self.mac_address = mac_address
        self.additional_value = additional_value
        self.device_type = device_type
        self.answered = 0
        self.silent = False  # True: requests arrive but are not answered (a deaf device)
        self._factory = CrtFactory(settings, lambda: None)
        self._connection: CrtConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._settings = settings
        self.dhw_temperature_half_c = 120

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._connection = self._factory.new_connection(loop, self._on_event)
        await self._connection.connect(10)
        await self._connection.subscribe(f"{device_topic_root(self)}/#", 10)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect(5)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_event(self, event: TransportEvent) -> None:
        if event.kind != "message" or self.silent:
            return
        try:
            body = json.loads(event.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        request = body.get("request") if isinstance(body, dict) else None
        if not isinstance(request, dict) or request.get("command") != CMD_STATUS:
            return
        task = asyncio.create_task(self._reply(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, body: dict[str, Any]) -> None:
        reply = {
            "clientID": body.get("clientID"),
            "sessionID": body.get("sessionID"),
            "requestTopic": body.get("requestTopic"),
            "responseTopic": body.get("responseTopic"),
            "response": {
                "command": CMD_STATUS,
                "deviceType": self.device_type,
                "macAddress": self.mac_address,
                "status": {"dhwTemperature": self.dhw_temperature_half_c, "dhwTemperatureSetting": 120,
                           "operationMode": 64, "dhwOperationSetting": 3, "errorCode": 0, "wifiRssi": -52},
            },
        }
        topic = body.get("responseTopic")
        if not isinstance(topic, str) or self._connection is None:
            return
        try:
            await self._connection.publish(topic, json.dumps(reply).encode(), 10)
            self.answered += 1
        except TransportError as exc:
            _log.debug("simulated device could not reply: %s", exc)
