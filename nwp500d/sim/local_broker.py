"""Which MQTT broker the simulator runs: mosquitto when it is installed, amqtt otherwise.

``NWP500D_SIM_BROKER=mosquitto|amqtt`` forces one (tests use it to run the demo on each); the default, ``auto``,
prefers mosquitto, whose connection log some tests read and which can be restarted on the same ports.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from nwp500d.sim.amqtt_broker import AmqttBroker
from nwp500d.sim.broker import BrokerUnavailable, MosquittoBroker, find_mosquitto
from nwp500d.sim.certs import CertPaths

CHOICE_VARIABLE = "NWP500D_SIM_BROKER"
CHOICES = ("auto", "mosquitto", "amqtt")


class LocalBroker(Protocol):
    """What the simulator uses of a broker."""

    name: str
    host: str

    @property
    def tcp_port(self) -> int: ...
    @property
    def wss_port(self) -> int: ...
    @property
    def certs(self) -> CertPaths: ...
    @property
    def ca_file(self) -> Path: ...
    @property
    def log_path(self) -> Path: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


def _mosquitto_installed() -> bool:
    try:
        find_mosquitto()
    except BrokerUnavailable:
        return False
    return True


def local_broker(choice: str | None = None) -> LocalBroker:
    """A broker to start (``async with``); BrokerUnavailable names what to install, or the bad variable value."""
    choice = choice if choice is not None else os.environ.get(CHOICE_VARIABLE, "auto")
    if choice not in CHOICES:
        raise BrokerUnavailable(f"{CHOICE_VARIABLE}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "mosquitto" or (choice == "auto" and _mosquitto_installed()):
        return MosquittoBroker()
    return AmqttBroker()
