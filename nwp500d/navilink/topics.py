"""NaviLink MQTT topics and command payloads (pure), per the protocol facts in reference/nwp500-python.md §2.4-2.5."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

PROTOCOL_VERSION = 2
CMD_STATUS = 16777219
CMD_DEVICE_INFO = 16777217
CMD_DHW_TEMPERATURE = 33554464


class DeviceRef(Protocol):
    @property
    def mac_address(self) -> str: ...
    @property
    def additional_value(self) -> str: ...
    @property
    def device_type(self) -> int: ...


@dataclass(frozen=True)
class Command:
    topic: str
    payload: bytes


def device_topic_root(device: DeviceRef) -> str:
    return f"cmd/{device.device_type}/navilink-{device.mac_address}"


def subscriptions(device: DeviceRef, client_id: str) -> list[str]:
    """What a monitor subscribes to for one device: its replies, and events it pushes."""
    return [f"{device_topic_root(device)}/#", f"evt/{device.device_type}/navilink-{device.mac_address}/#"]


def response_topic(device: DeviceRef, client_id: str) -> str:
    return f"{device_topic_root(device)}/{client_id}/res"


def _command(device: DeviceRef, client_id: str, session_id: str, suffix: str, request: dict[str, Any]) -> Command:
    topic = f"{device_topic_root(device)}/{suffix}"
    body = {
        "clientID": client_id,
        "sessionID": session_id,
        "protocolVersion": PROTOCOL_VERSION,
        "requestTopic": topic,
        "responseTopic": response_topic(device, client_id),
        "request": {
            "deviceType": device.device_type,
            "macAddress": device.mac_address,
            "additionalValue": device.additional_value,
            **request,
        },
    }
    return Command(topic, json.dumps(body, separators=(",", ":")).encode())


def status_request(device: DeviceRef, client_id: str, session_id: str) -> Command:
    return _command(device, client_id, session_id, "st", {"command": CMD_STATUS})


def fahrenheit_to_half_celsius(fahrenheit: float) -> int:
    """The device takes DHW setpoints in half degrees Celsius."""
    return round((fahrenheit - 32.0) * 5.0 / 9.0 * 2.0)


def set_dhw_temperature(device: DeviceRef, client_id: str, session_id: str, fahrenheit: float) -> Command:
    if not 80.0 <= fahrenheit <= 150.0:
        raise ValueError(f"DHW temperature {fahrenheit:g} °F is outside the NWP500's 80-150 °F range")
    request = {"command": CMD_DHW_TEMPERATURE, "mode": "dhw-temperature",
               "param": [fahrenheit_to_half_celsius(fahrenheit)], "paramStr": ""}
    return _command(device, client_id, session_id, "ctrl", request)


def parse_status(payload: bytes) -> dict[str, Any] | None:
    """The status object of a reply, by key presence (``response.status``, ``response.st``, ``status``, ``st``)."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # whatever the broker relays is untrusted: never raise on it
        return None
    if not isinstance(body, dict):
        return None
    response = body.get("response")
    for holder in (response, body):
        if isinstance(holder, dict):
            for key in ("status", "st"):
                if key in holder and isinstance(holder[key], dict):
                    status: dict[str, Any] = holder[key]
                    return status
    return None
