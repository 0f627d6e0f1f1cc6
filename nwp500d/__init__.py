"""nwp500d: a systemd daemon that keeps one NaviLink MQTT session open and explains every time it drops."""

from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.model import ConnectionDropEvent, ConnectionEvent, MqttMetrics

__version__ = "0.1.0"

__all__ = [
    "ConnectionDropEvent",
    "ConnectionEvent",
    "MqttConnectionConfig",
    "MqttDiagnosticsCollector",
    "MqttMetrics",
    "__version__",
]
