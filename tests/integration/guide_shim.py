"""What the guide's samples import, pointed at the local simulator instead of the NaviLink cloud.

The samples in guide_samples.py change only their import line (``from nwp500 import ...`` becomes an import from
here); everything they call is nwp500d's real API. The test sets ``SIM`` before running a sample.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nwp500d import MqttConnectionConfig
from nwp500d import MqttDiagnosticsCollector as _Collector
from nwp500d.mqtt.client import NavienMqttClient as _Client
from nwp500d.navilink.auth import NavienAuthClient as _Auth
from nwp500d.sim.demo import DEMO_EMAIL, DEMO_PASSWORD, Simulator

SIM: Simulator | None = None
CLIENTS: list[_Client] = []
COLLECTORS: list[_Collector] = []

email = DEMO_EMAIL
password = DEMO_PASSWORD


def _sim() -> Simulator:
    assert SIM is not None, "set guide_shim.SIM first"
    return SIM


class NavienAuthClient(_Auth):
    def __init__(self, email: str, password: str) -> None:
        super().__init__(email, password, base_url=_sim().navilink.base_url)


class NavienMqttClient(_Client):
    def __init__(self, auth_client: Any, config: MqttConnectionConfig | None = None) -> None:
        sim = _sim()
        config = dataclasses.replace(config or MqttConnectionConfig(), endpoint=sim.broker.host, port=sim.proxy.port,
                                     ca_file=str(sim.broker.ca_file))
        super().__init__(auth_client, config=config)
        CLIENTS.append(self)


class MqttDiagnosticsCollector(_Collector):
    def __init__(self, max_events_retained: int = 1000, enable_verbose_logging: bool = False) -> None:
        super().__init__(max_events_retained, enable_verbose_logging)
        COLLECTORS.append(self)


__all__ = ["MqttConnectionConfig", "MqttDiagnosticsCollector", "NavienAuthClient", "NavienMqttClient", "email",
           "password"]
