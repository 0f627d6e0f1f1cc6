"""Start/stop plumbing shared by the simulator's servers: the mosquitto wrapper, the fault proxy, the fake NaviLink
REST API and the tests' idle-expiring NAT.

Each of them is driven the same way (``await x.start()`` … ``await x.stop()``, or ``async with x:``) and has
properties (ports, addresses, the loop) that only mean something while it runs. Keeping that contract in one place
keeps it identical across all of them: ``async with`` always ends in ``stop()``, a property read outside
``start()``/``stop()`` fails with the same kind of error instead of a stale value, and no stop() can hang on a
connection that will not end.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

_T = TypeVar("_T")
_F = TypeVar("_F", bound=asyncio.Future[Any])


class SimServer(abc.ABC):
    """A loopback server with ``start()`` and ``stop()`` that is also an async context manager.

    Subclasses implement ``start`` and ``stop``. ``stop`` must be safe to call more than once, because tests call it
    explicitly inside an ``async with`` block and ``__aexit__`` calls it again. ``_noun`` names the server in the
    "not started" / "already started" errors (e.g. "the proxy is not started").
    """

    _noun: ClassVar[str] = "server"

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind and serve; the server's address properties work from here until ``stop()``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close everything ``start()`` opened; idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _running(self, value: _T | None) -> _T:
        """``value`` (set by ``start()``, cleared by ``stop()``); RuntimeError if it is None: the server is not started.

        For properties such as ``port``: a test that reads one too early or too late gets a clear error rather than
        None or the port of a listener that is gone (which someone else may have bound by now).
        """
        if value is None:
            raise RuntimeError(f"the {self._noun} is not started")
        return value

    def _refuse_if_running(self, value: object, hint: str = "") -> None:
        """RuntimeError if ``value`` (set by ``start()``) is not None: a second start() would leak the first one's
        listeners, processes or files. ``hint`` is appended to the message (e.g. "; use restart()")."""
        if value is not None:
            raise RuntimeError(f"the {self._noun} is already started{hint}")


async def wait_bounded(futures: Iterable[_F], bound: float) -> set[_F]:
    """Wait at most ``bound`` seconds for all of ``futures``; return those still pending (empty: all done).

    For teardown: a handler, connection or process that never ends must not hang ``stop()``; the caller decides what
    to do with the rest (cancel, abort, SIGKILL) and usually waits once more. Unlike :func:`asyncio.wait` it takes an
    empty collection (nothing to wait for). Like it, it never cancels what it waits for, on timeout or when the caller
    is cancelled, so no ``asyncio.shield`` is needed around futures that others also await.
    """
    pending = set(futures)
    if not pending:
        return pending
    _, late = await asyncio.wait(pending, timeout=bound)
    return late
