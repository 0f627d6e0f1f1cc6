"""Talking to systemd: sd_notify, the watchdog, and logging natively to the journal.

sd_notify is a few lines of stdlib on purpose (reference/systemd-journald.md §5): the ``sdnotify`` package drops a
READY datagram whose STATUS is not latin-1 and disables itself forever if the socket is missing at start.

The watchdog is pinged from the event loop, and only while the daemon is healthy: a blocked loop cannot run the
ping coroutine, and a dead or wedged session supervisor makes the health check fail, so in both cases systemd's
WatchdogSec= fires, aborts the process (faulthandler leaves the stacks in the journal) and restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping

from nwp500d.redact import Redactor

_log = logging.getLogger("nwp500d.systemd")

STATUS_MAX = 200
NotifySender = Callable[..., bool]


def sd_notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=VALUE`` lines to $NOTIFY_SOCKET. False when not under systemd; socket errors propagate."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto("\n".join(fields).encode("utf-8"), address)
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked for this process."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def one_line(text: str) -> str:
    """STATUS= must be one readable line: no control characters, bounded length."""
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return cleaned if len(cleaned) <= STATUS_MAX else cleaned[: STATUS_MAX - 1] + "…"


class Notifier:
    """The daemon's side of the notify protocol; a failing socket is logged once and never stops the daemon."""

    def __init__(self, send: NotifySender = sd_notify, redactor: Redactor | None = None) -> None:
        self._send = send
        self._redactor = redactor or Redactor()
        self._last_status: str | None = None
        self.ready_sent = False
        self._failed = False

    def _notify(self, *fields: str) -> None:
        try:
            self._send(*fields)
        except OSError as exc:
            if not self._failed:
                _log.warning("cannot reach systemd's notify socket: %s", exc)
                self._failed = True

    def ready(self, status: str) -> None:
        if self.ready_sent:
            self.status(status)
            return
        self.ready_sent = True
        self._last_status = line = one_line(self._redactor.text(status))
        self._notify("READY=1", f"STATUS={line}")

    def status(self, status: str) -> None:
        line = one_line(self._redactor.text(status))
        if line != self._last_status:
            self._last_status = line
            self._notify(f"STATUS={line}")

    def extend_timeout(self, seconds: float) -> None:
        self._notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 tell this reload from an earlier one; older versions ignore it.
        self._notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, status: str) -> None:
        self._last_status = line = one_line(self._redactor.text(status))
        self._notify("READY=1", f"STATUS={line}")

    def stopping(self, status: str = "stopping") -> None:
        self._last_status = line = one_line(status)
        self._notify("STOPPING=1", f"STATUS={line}")

    def watchdog(self) -> None:
        self._notify("WATCHDOG=1")


HealthCheck = Callable[[], str | None]
"""Returns None when healthy, else a short reason why the watchdog must not be pinged."""


async def watchdog_loop(notifier: Notifier, interval: float, unhealthy: HealthCheck) -> None:
    """Ping every ``interval`` while healthy. Runs on the event loop, so a blocked loop stops the pings too."""
    withheld: str | None = None
    while True:
        reason = unhealthy()
        if reason is None:
            notifier.watchdog()
            if withheld is not None:
                _log.warning("healthy again; watchdog pings resumed")
                withheld = None
        elif reason != withheld:
            _log.error("withholding watchdog pings: %s", reason)
            withheld = reason
        await asyncio.sleep(interval)


# ------------------------------------------------------------------------------------------------------ logging


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """True when systemd connected stderr to the journal (JOURNAL_STREAM names stderr's device and inode)."""
    stream = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return info.st_dev == int(device) and info.st_ino == int(inode)


class RedactingFilter(logging.Filter):
    """Every record is scrubbed before any handler sees it: message, arguments and exception text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor.text(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


def setup_logging(level: str, redactor: Redactor, *, env: Mapping[str, str] | None = None) -> logging.Handler:
    """Native journald records (with NWP_* fields and MESSAGE_ID) under systemd, plain text on stderr otherwise."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if stderr_is_journal(env):
        from systemd.journal import JournalHandler  # noqa: PLC0415 - only under systemd, and libsystemd-backed

        handler = JournalHandler(SYSLOG_IDENTIFIER="nwp500d")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("nwp500d: %(levelname)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
