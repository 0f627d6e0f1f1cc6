"""nwp500d: a systemd daemon that keeps one NaviLink MQTT session open and explains every time it drops."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.model import ConnectionDropEvent, ConnectionEvent, MqttMetrics

if TYPE_CHECKING:
    from nwp500d.mqtt.client import NavienMqttClient
    from nwp500d.navilink.auth import NavienAuthClient

__version__ = "0.1.0"

__all__ = [
    "ConnectionDropEvent",
    "ConnectionEvent",
    "MqttConnectionConfig",
    "MqttDiagnosticsCollector",
    "MqttMetrics",
    "NavienAuthClient",
    "NavienMqttClient",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The clients load awscrt and aiohttp; import them only when asked for, so `nwp500d report` stays light."""
    if name == "NavienMqttClient":
        from nwp500d.mqtt.client import NavienMqttClient

        return NavienMqttClient
    if name == "NavienAuthClient":
        from nwp500d.navilink.auth import NavienAuthClient

        return NavienAuthClient
    raise AttributeError(f"module 'nwp500d' has no attribute {name!r}")
