"""LinkMonitor: the kernel's own account of carrier, address and default-route changes, pushed as they happen.

awscrt does not report a local link going away: the session only learns of it at the next ping timeout (up to
keep_alive + ping_timeout later), and after the link returns it sits out whatever backoff it had reached. An
rtnetlink subscription closes both gaps: a drop can be blamed on the host's own network with an exact time, and
``network_is_back`` tells the supervisor when cutting its backoff short (``SessionSupervisor.wake``) is worth it.

Split in two so that the reasoning is testable without a socket: ``NetworkState`` folds decoded messages into the
little state that matters and yields events from differences in that state (which is also what collapses the
several identical RTM_NEWLINKs the kernel sends per change); ``LinkMonitor`` owns the socket, the dumps, and the
event loop registration. There is no polling and no thread: the socket is a reader on the daemon's loop.

Two kernel habits shape the state handling. IPv4 drops the routes of an interface that is set down, or loses its
last address, without any RTM_DELROUTE; so the state mirrors that flush at once and the monitor re-dumps the
routes to confirm. And a full socket buffer loses notifications for good (ENOBUFS); the only honest recovery is a
fresh dump of everything, reconciled against what was believed, with the differences reported as events.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from nwp500d.clock import Clock, SystemClock
from nwp500d.netdiag import rtnl

_log = logging.getLogger("nwp500d.netdiag.link")

LinkEventKind = Literal[
    "carrier_down",
    "carrier_up",
    "address_added",
    "address_removed",
    "default_route_changed",
    "default_route_lost",
    "default_route_gained",
]
DumpKind = Literal["link", "addr", "route"]

GROUPS: Final = (
    rtnl.RTMGRP_LINK
    | rtnl.RTMGRP_IPV4_IFADDR
    | rtnl.RTMGRP_IPV6_IFADDR
    | rtnl.RTMGRP_IPV4_ROUTE
    | rtnl.RTMGRP_IPV6_ROUTE
)
RECEIVE_BUFFER: Final = 1 << 20
"""Large enough that a burst (a bridge with many ports, a VPN pushing routes) does not overflow before we read."""
DATAGRAMS_PER_WAKEUP: Final = 64
"""Bounded so a storm of notifications cannot starve the MQTT session sharing the loop; the reader fires again."""
MAX_DUMP_RETRIES: Final = 5

_DUMP_REQUESTS: Final[dict[DumpKind, int]] = {
    "link": rtnl.RTM_GETLINK,
    "addr": rtnl.RTM_GETADDR,
    "route": rtnl.RTM_GETROUTE,
}
_FAMILY_NAMES: Final[dict[int, str]] = {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6"}


class LinkMonitorUnavailable(Exception):
    """No rtnetlink here (not Linux, a seccomp/sandbox refusal, …): the daemon carries on without link events."""


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One change worth recording. ``monotonic`` is on the same clock as the session's events, so a drop and the
    link change behind it can be ordered and subtracted directly."""

    kind: LinkEventKind
    interface: str | None
    detail: dict[str, str] = field(default_factory=dict)
    monotonic: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "interface": self.interface, "detail": dict(self.detail),
                "monotonic": self.monotonic}


def describe(event: LinkEvent) -> str:
    """One line for the log; it names both ends of a route change because that is what a reader will ask next."""
    detail = event.detail
    name = event.interface or "?"
    if event.kind == "carrier_down":
        return f"{name}: carrier lost ({_state_words(detail)})"
    if event.kind == "carrier_up":
        return f"{name}: carrier back ({_state_words(detail)})"
    if event.kind in ("address_added", "address_removed"):
        verb = "added" if event.kind == "address_added" else "removed"
        return f"{name}: address {detail.get('address', '?')} {verb}"
    old = _route_words(detail.get("old_interface"), detail.get("old_gateway"))
    new = _route_words(detail.get("new_interface"), detail.get("new_gateway"))
    if event.kind == "default_route_lost":
        return f"default route lost (was {old})"
    if event.kind == "default_route_gained":
        return f"default route gained: {new}"
    return f"default route changed: {old} -> {new}"


def _state_words(detail: dict[str, str]) -> str:
    words = [f"operstate {detail['operstate']}" if "operstate" in detail else None,
             f"admin {detail['admin']}" if "admin" in detail else None]
    return ", ".join(word for word in words if word) or "no details"


def _route_words(interfaces: str | None, gateways: str | None) -> str:
    names = (interfaces or "?").split(",")
    gates = (gateways or "").split(",")
    parts = []
    for index, iface in enumerate(names):
        gate = gates[index] if index < len(gates) else ""
        parts.append(f"{iface} via {gate}" if gate else f"{iface} (direct)")
    return ", ".join(parts)


# ------------------------------------------------------------------ pure state


@dataclass(frozen=True, slots=True)
class _Link:
    name: str
    admin_up: bool
    usable: bool
    loopback: bool
    operstate: str | None


_RouteKey = tuple[int, int, int]  # family, metric, tos: what makes two default routes distinct (or a replacement)
_Hop = tuple[int | None, str | None]  # output ifindex, gateway
_AddrKey = tuple[int, int, str, int]  # ifindex, family, address, prefixlen


def _empty_links() -> dict[int, _Link]:
    return {}


def _empty_addrs() -> dict[_AddrKey, bool]:
    return {}


def _empty_routes() -> dict[_RouteKey, set[_Hop]]:
    return {}


@dataclass(slots=True)
class _Tables:
    links: dict[int, _Link] = field(default_factory=_empty_links)
    addrs: dict[_AddrKey, bool] = field(default_factory=_empty_addrs)  # value: usable (not tentative)
    routes: dict[_RouteKey, set[_Hop]] = field(default_factory=_empty_routes)


@dataclass(frozen=True, slots=True)
class _Views:
    carrier: dict[int, tuple[str, bool, _Link]]
    addrs: dict[_AddrKey, str]
    default: tuple[tuple[int, str, str], ...]  # (family, ifname, gateway or ""), preferred routes only


class NetworkState:
    """What the kernel has told us, folded into links, addresses and default routes, plus the events it implies.

    Events come from comparing derived views before and after each message, never from the messages themselves:
    a repeated notification changes nothing and so yields nothing. A dump is collected into a fresh table (with
    notifications applied to both, so nothing that happens meanwhile is lost) and swapped in at its end; the
    difference is reported like any other change, which is how an overrun is healed without a gap in the record.
    """

    def __init__(self) -> None:
        self._live = _Tables()
        self._collecting: _Tables | None = None
        self._collecting_kind: DumpKind | None = None
        self.quiet = True
        """No events until the first full dump is in: the state found at start is not a change."""
        self.route_resync_wanted = False
        """Set when the kernel may have flushed routes without telling (see the module docstring)."""
        self._last_default: tuple[str, ...] = ()

    # -------------------------------------------------------------- read side

    @property
    def carrier(self) -> dict[str, bool]:
        return {link.name: link.usable for link in self._live.links.values() if not link.loopback}

    @property
    def default_route_interfaces(self) -> tuple[str, ...]:
        return _unique(name for _family, name, _gw in self._views().default)

    @property
    def last_default_route_interfaces(self) -> tuple[str, ...]:
        """The interfaces that carried the default route most recently (now, or before it was lost)."""
        current = self.default_route_interfaces
        return current or self._last_default

    def network_is_back(self, event: LinkEvent) -> bool:
        """Worth waking a sleeping reconnect for. Carrier and addresses count on the interface that carries (or
        last carried) the default route, so unrelated links — a docker bridge, a second NIC — do not cause wakes;
        with no such interface known any carrier counts. A changed default route counts too: it is a failover to
        a path that exists now, which is the same news as a gained one for a session that is down."""
        if event.kind in ("default_route_gained", "default_route_changed"):
            return True
        if event.kind not in ("carrier_up", "address_added"):
            return False
        known = self.last_default_route_interfaces
        if not known:
            return event.kind == "carrier_up"
        return event.interface in known

    # -------------------------------------------------------------- write side

    def begin_dump(self, kind: DumpKind) -> None:
        self._collecting = _Tables()
        self._collecting_kind = kind

    def abort_dump(self) -> None:
        self._collecting = None
        self._collecting_kind = None

    def finish_dump(self, now: float) -> list[LinkEvent]:
        collected, kind = self._collecting, self._collecting_kind
        self.abort_dump()
        if collected is None or kind is None:
            return []
        before = self._views()
        if kind == "link":
            self._live.links = collected.links
            for key in [key for key in self._live.addrs if key[0] not in collected.links]:
                del self._live.addrs[key]
        elif kind == "addr":
            self._live.addrs = collected.addrs
        else:
            self._live.routes = collected.routes
        return self._diff(before, now)

    def apply(self, message: rtnl.Message, now: float, *, from_dump: bool = False) -> list[LinkEvent]:
        """Fold one message in. ``from_dump`` messages only fill the table being collected."""
        before = self._views()
        targets = [self._collecting] if from_dump else [self._live, self._collecting]
        for tables in targets:
            if tables is not None:
                self._fold(tables, message, notify=not from_dump and tables is self._live)
        if from_dump:
            return []
        return self._diff(before, now)

    def _fold(self, tables: _Tables, message: rtnl.Message, *, notify: bool) -> None:
        if isinstance(message, rtnl.LinkMessage):
            self._fold_link(tables, message, notify=notify)
        elif isinstance(message, rtnl.AddrMessage):
            self._fold_addr(tables, message, notify=notify)
        elif isinstance(message, rtnl.RouteMessage):
            _fold_route(tables, message)

    def _fold_link(self, tables: _Tables, message: rtnl.LinkMessage, *, notify: bool) -> None:
        if message.family != socket.AF_UNSPEC:
            return  # bridge-port news about the interface, not the interface itself
        index = message.ifindex
        old = tables.links.get(index)
        if message.deleted:
            tables.links.pop(index, None)
            for key in [key for key in tables.addrs if key[0] == index]:
                del tables.addrs[key]
            _drop_hops(tables, index)
            if notify:
                self.route_resync_wanted = True
            return
        name = message.ifname or (old.name if old is not None else f"if{index}")
        link = _Link(name, message.admin_up, message.usable, message.is_loopback, message.operstate_name)
        tables.links[index] = link
        if old is not None and old.admin_up and not link.admin_up:
            _drop_hops(tables, index)  # the kernel flushes them too, silently for IPv4
            if notify:
                self.route_resync_wanted = True

    def _fold_addr(self, tables: _Tables, message: rtnl.AddrMessage, *, notify: bool) -> None:
        address = message.primary
        if address is None:
            return
        key = (message.ifindex, message.family, address, message.prefixlen)
        if message.deleted:
            tables.addrs.pop(key, None)
            if notify and message.family == socket.AF_INET:
                self.route_resync_wanted = True  # the last IPv4 address going flushes routes silently
        else:
            tables.addrs[key] = not message.tentative

    # -------------------------------------------------------------- views and differences

    def _views(self) -> _Views:
        links = self._live.links
        carrier = {index: (link.name, link.usable, link) for index, link in links.items() if not link.loopback}
        addrs: dict[_AddrKey, str] = {}
        for key, usable in self._live.addrs.items():
            link = links.get(key[0])
            if usable and (link is None or not link.loopback):
                addrs[key] = link.name if link is not None else f"if{key[0]}"
        return _Views(carrier, addrs, self._preferred_defaults())

    def _preferred_defaults(self) -> tuple[tuple[int, str, str], ...]:
        """Per family only the lowest metric counts: a backup route (Wi-Fi beside Ethernet) carries no traffic,
        so its coming and going is not a change of path; its taking over is."""
        best: dict[int, int] = {}
        for (family, metric, _tos), hops in self._live.routes.items():
            if hops and (family not in best or metric < best[family]):
                best[family] = metric
        chosen: set[tuple[int, str, str]] = set()
        for (family, metric, _tos), hops in self._live.routes.items():
            if best.get(family) == metric:
                for oif, gateway in hops:
                    chosen.add((family, self._name(oif), gateway or ""))
        return tuple(sorted(chosen))

    def _name(self, index: int | None) -> str:
        if index is None:
            return "?"
        link = self._live.links.get(index)
        return link.name if link is not None else f"if{index}"

    def _diff(self, before: _Views, now: float) -> list[LinkEvent]:
        after = self._views()
        if after.default:
            self._last_default = _unique(name for _family, name, _gw in after.default)
        if self.quiet:
            return []
        events: list[LinkEvent] = []
        for index in sorted(set(before.carrier) | set(after.carrier)):
            was = before.carrier.get(index)
            now_is = after.carrier.get(index)
            was_up = was is not None and was[1]
            is_up = now_is is not None and now_is[1]
            if was_up == is_up:
                continue
            shown = now_is if now_is is not None else was
            if shown is None:
                continue
            name, _usable, link = shown
            detail = {"admin": "up" if link.admin_up else "down"}
            if link.operstate is not None:
                detail["operstate"] = link.operstate
            if now_is is None:
                detail["removed"] = "yes"
            events.append(LinkEvent("carrier_up" if is_up else "carrier_down", name, detail, now))
        for key in sorted(set(before.addrs) - set(after.addrs)):
            events.append(LinkEvent("address_removed", before.addrs[key], _addr_detail(key), now))
        for key in sorted(set(after.addrs) - set(before.addrs)):
            events.append(LinkEvent("address_added", after.addrs[key], _addr_detail(key), now))
        route_event = _route_change(before.default, after.default, now)
        if route_event is not None:
            events.append(route_event)
        return events


def _fold_route(tables: _Tables, message: rtnl.RouteMessage) -> None:
    if not message.is_default:
        return
    key = (message.family, message.priority, message.tos)
    hops = {(hop.ifindex, hop.gateway) for hop in message.nexthops}
    if message.deleted:
        current = tables.routes.get(key)
        if current is None:
            return
        if all(oif is None and gw is None for oif, gw in hops):
            current.clear()  # "delete the default route", whatever it went through
        else:
            current -= hops
        if not current:
            del tables.routes[key]
    elif message.header.flags & rtnl.NLM_F_REPLACE:
        tables.routes[key] = hops
    else:
        tables.routes.setdefault(key, set()).update(hops)


def _drop_hops(tables: _Tables, index: int) -> None:
    for key in list(tables.routes):
        hops = {hop for hop in tables.routes[key] if hop[0] != index}
        if hops:
            tables.routes[key] = hops
        else:
            del tables.routes[key]


def _addr_detail(key: _AddrKey) -> dict[str, str]:
    _index, family, address, prefixlen = key
    return {"address": f"{address}/{prefixlen}", "family": _FAMILY_NAMES.get(family, str(family))}


def _route_change(
    before: tuple[tuple[int, str, str], ...], after: tuple[tuple[int, str, str], ...], now: float
) -> LinkEvent | None:
    if before == after:
        return None
    detail: dict[str, str] = {}
    if before:
        detail["old_interface"] = ",".join(name for _f, name, _g in before)
        detail["old_gateway"] = ",".join(gw for _f, _n, gw in before)
    if after:
        detail["new_interface"] = ",".join(name for _f, name, _g in after)
        detail["new_gateway"] = ",".join(gw for _f, _n, gw in after)
    if not after:
        return LinkEvent("default_route_lost", before[0][1], detail, now)
    if not before:
        return LinkEvent("default_route_gained", after[0][1], detail, now)
    return LinkEvent("default_route_changed", after[0][1], detail, now)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


# ------------------------------------------------------------------ IO


class LinkMonitor:
    """One rtnetlink socket on the daemon's event loop; ``on_event`` is called on that loop for each change."""

    def __init__(self, on_event: Callable[[LinkEvent], None], *, clock: Clock | None = None) -> None:
        self._on_event = on_event
        self._clock: Clock = clock or SystemClock()
        self._state = NetworkState()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portid = 0
        self._seq = 0
        self._dump_seq: int | None = None
        self._dump_kind: DumpKind | None = None
        self._dump_interrupted = False
        self._dump_retries = 0
        self._pending: list[DumpKind] = []
        self._ready = False
        self._ready_event: asyncio.Event | None = None
        self._stopped = False
        self.skipped = 0
        """Malformed messages dropped by the decoder (should stay 0; a rising count is a bug report)."""
        self.overruns = 0
        """Times the kernel dropped notifications because we read too slowly (each one triggers a full resync)."""

    # -------------------------------------------------------------- public surface

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe, register with ``loop`` and ask for the current links, addresses and routes."""
        if self._sock is not None or self._stopped:
            raise RuntimeError("LinkMonitor.start() may be called once")
        try:
            family = socket.AF_NETLINK
            sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        except (AttributeError, OSError) as exc:
            raise LinkMonitorUnavailable(f"cannot open an rtnetlink socket: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((0, GROUPS))
            self._portid = int(sock.getsockname()[0])
            loop.add_reader(sock.fileno(), self._on_readable)
        except OSError as exc:
            sock.close()
            raise LinkMonitorUnavailable(f"cannot subscribe to rtnetlink link/address/route groups: {exc}") from exc
        self._sock = sock
        self._loop = loop
        self._ready_event = asyncio.Event()
        self._queue_dumps(("link", "addr", "route"))

    def stop(self) -> None:
        """Unregister and close; idempotent. Anyone in ``wait_ready`` is released with LinkMonitorUnavailable."""
        self._stopped = True
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._ready_event is not None:
            self._ready_event.set()

    async def wait_ready(self) -> None:
        """Until the first dumps are in (the properties are meaningful from then on and events start)."""
        if self._ready_event is None:
            raise RuntimeError("LinkMonitor.wait_ready() before start()")
        await self._ready_event.wait()
        if not self._ready:
            raise LinkMonitorUnavailable("link monitor stopped before its first dump finished")

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def default_route_interfaces(self) -> tuple[str, ...]:
        """Interfaces of the preferred default route(s), IPv4 first; empty when there is none."""
        return self._state.default_route_interfaces

    @property
    def carrier(self) -> dict[str, bool]:
        """ifname → usable (admin up, lower layer up, operationally up); loopback left out."""
        return self._state.carrier

    def network_is_back(self, event: LinkEvent) -> bool:
        """See ``NetworkState.network_is_back``."""
        return self._state.network_is_back(event)

    # -------------------------------------------------------------- socket side

    def _on_readable(self) -> None:
        for _ in range(DATAGRAMS_PER_WAKEUP):
            sock = self._sock
            if sock is None:
                return
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    _log.warning("rtnetlink overrun: link notifications were lost, re-reading the full state")
                    self._queue_dumps(("link", "addr", "route"))
                    continue
                _log.warning("rtnetlink socket failed (%s); link events are off until restart", exc)
                self.stop()
                return
            if not data:
                return
            parsed = rtnl.parse(data)
            self.skipped += parsed.skipped
            for message in parsed.messages:
                self._handle(message)
            if self._state.route_resync_wanted:
                self._state.route_resync_wanted = False
                self._queue_dumps(("route",))

    def _handle(self, message: rtnl.Message) -> None:
        now = self._clock.monotonic()
        header = message.header
        ours = self._dump_seq is not None and header.seq == self._dump_seq and header.pid == self._portid
        if isinstance(message, rtnl.Done | rtnl.ErrorMessage):
            if ours:
                self._dump_finished(message, now)
            return
        if ours:
            if header.flags & rtnl.NLM_F_DUMP_INTR:
                self._dump_interrupted = True
            self._state.apply(message, now, from_dump=True)
            return
        self._emit(self._state.apply(message, now))

    def _dump_finished(self, message: rtnl.Done | rtnl.ErrorMessage, now: float) -> None:
        kind = self._dump_kind
        failed = message.error != 0 or self._dump_interrupted
        self._dump_seq = None
        self._dump_kind = None
        if failed and kind is not None and self._dump_retries < MAX_DUMP_RETRIES:
            # EINTR/DUMP_INTR: the table changed under the dump; EBUSY: another dump was running. Ask again.
            self._dump_retries += 1
            self._state.abort_dump()
            self._pending.insert(0, kind)
        elif failed:
            _log.warning("rtnetlink %s dump failed (error %d); keeping the state from notifications", kind,
                         message.error)
            self._state.abort_dump()
            self._dump_retries = 0
        else:
            self._dump_retries = 0
            self._emit(self._state.finish_dump(now))
        self._next_dump()

    def _queue_dumps(self, kinds: Iterable[DumpKind]) -> None:
        for kind in kinds:
            if kind not in self._pending:
                self._pending.append(kind)
        if self._dump_seq is None:
            self._next_dump()

    def _next_dump(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while self._pending:
            kind = self._pending.pop(0)
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            try:
                sock.send(rtnl.dump_request(_DUMP_REQUESTS[kind], self._seq))
            except OSError as exc:
                _log.warning("cannot ask rtnetlink for the %s table (%s)", kind, exc)
                continue
            self._dump_seq = self._seq
            self._dump_kind = kind
            self._dump_interrupted = False
            self._state.begin_dump(kind)
            return
        if not self._ready:
            self._ready = True
            self._state.quiet = False
            if self._ready_event is not None:
                self._ready_event.set()

    def _emit(self, events: list[LinkEvent]) -> None:
        for event in events:
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001 - a broken handler must not silence the events after it
                _log.exception("link event handler failed on %s", describe(event))
