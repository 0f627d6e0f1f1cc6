"""systemd's end of the notify protocol, for tests: a bound AF_UNIX datagram socket that records what arrives."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class NotifySocket:
    """systemd's end: every datagram with its arrival time and the sender's pid (SO_PASSCRED)."""

    path: str
    sock: socket.socket
    messages: list[tuple[float, int, list[str]]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def receive_forever(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(payload[:4], sys.byteorder)
            with self.arrived:
                self.messages.append((time.monotonic(), pid, data.decode().split("\n")))
                self.arrived.notify_all()

    def lines(self) -> list[str]:
        with self.arrived:
            return [line for _at, _pid, fields in self.messages for line in fields]

    def wait_for(self, line: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while sum(fields.count(line) for _a, _p, fields in self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{line!r} x{count} not received; got {self.lines()[-10:]}")
                self.arrived.wait(remaining)

    def times_of(self, line: str) -> list[float]:
        with self.arrived:
            return [at for at, _pid, fields in self.messages if line in fields]


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A fresh socket per test (a short path: AF_UNIX paths are limited to 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="nwp-notify-", dir="/tmp")  # AF_UNIX paths are limited to 108 bytes
    path = str(Path(directory) / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    endpoint = NotifySocket(path, sock)
    receiver = threading.Thread(target=endpoint.receive_forever, daemon=True)
    receiver.start()
    try:
        yield endpoint
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        receiver.join(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
