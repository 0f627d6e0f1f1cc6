"""rtnetlink wire format, decoded without any IO so that every branch can be tested on hand-built bytes.

Only the handful of facts the link monitor reasons about are kept (link flags and carrier, addresses, default
routes). The decoder is deliberately forgiving: a datagram comes straight from the kernel, but a bug or a future
kernel must never take the daemon down, so anything malformed is skipped and counted instead of raising.
Everything is host byte order except the addresses, which is how the kernel writes them.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

# ------------------------------------------------------------------ constants (linux/netlink.h, linux/rtnetlink.h)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100  # same bit as NLM_F_ROOT: it means "replace" on NEW requests and notifications

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFLA_CARRIER = 33

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18

RT_TABLE_MAIN = 254
RTN_UNICAST = 1

OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")
_U8 = struct.Struct("=B")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")

_ATTR_TYPE_MASK = 0x3FFF  # drop NLA_F_NESTED / NLA_F_NET_BYTEORDER


def _align(length: int) -> int:
    return (length + 3) & ~3


class _Malformed(Exception):
    """Internal: one message cannot be trusted; the caller skips it and keeps going with the next."""


# ------------------------------------------------------------------ decoded messages


@dataclass(frozen=True, slots=True)
class Header:
    """The nlmsghdr: the monitor needs seq/pid to tell its own dump replies from broadcast notifications."""

    type: int
    flags: int
    seq: int
    pid: int


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """``family`` is AF_UNSPEC for real link changes; AF_BRIDGE ones describe bridge ports and must not be mistaken
    for the interface itself (a port leaving a bridge arrives as an RTM_DELLINK)."""

    header: Header
    deleted: bool
    family: int
    ifindex: int
    ifname: str | None
    flags: int
    operstate: int | None = None
    carrier: bool | None = None

    @property
    def is_loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)

    @property
    def admin_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def usable(self) -> bool:
        """Up by admin, carrier on the wire, and not held back (a Wi-Fi link is dormant until WPA completes)."""
        wanted = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
        return not self.deleted and self.flags & wanted == wanted

    @property
    def operstate_name(self) -> str | None:
        if self.operstate is None:
            return None
        return OPERSTATES[self.operstate] if self.operstate < len(OPERSTATES) else str(self.operstate)


@dataclass(frozen=True, slots=True)
class AddrMessage:
    header: Header
    deleted: bool
    family: int
    prefixlen: int
    ifindex: int
    flags: int
    scope: int
    address: str | None = None
    local: str | None = None
    label: str | None = None

    @property
    def primary(self) -> str | None:
        """IFA_LOCAL is the host's own address on point-to-point links (IFA_ADDRESS is then the peer)."""
        return self.local if self.local is not None else self.address

    @property
    def tentative(self) -> bool:
        """Still in IPv6 duplicate-address detection (or failed it): not usable for a connection yet."""
        return bool(self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


@dataclass(frozen=True, slots=True)
class NextHop:
    ifindex: int | None
    gateway: str | None
    flags: int = 0


@dataclass(frozen=True, slots=True)
class RouteMessage:
    header: Header
    deleted: bool
    family: int
    table: int
    dst: str | None
    dst_len: int
    tos: int
    protocol: int
    scope: int
    route_type: int
    flags: int
    gateway: str | None = None
    oif: int | None = None
    priority: int = 0
    multipath: tuple[NextHop, ...] = ()

    @property
    def is_default(self) -> bool:
        """A usable default route of the main table; ``unreachable default`` and policy tables do not count."""
        return self.dst_len == 0 and self.table == RT_TABLE_MAIN and self.route_type == RTN_UNICAST

    @property
    def nexthops(self) -> tuple[NextHop, ...]:
        """One shape for plain and ECMP routes, so callers never branch on RTA_MULTIPATH."""
        if self.multipath:
            return self.multipath
        return (NextHop(self.oif, self.gateway),)


@dataclass(frozen=True, slots=True)
class Done:
    """End of a multipart dump; ``error`` is the kernel's negative errno when the dump itself failed (or 0)."""

    header: Header
    error: int = 0


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """NLMSG_ERROR: ``error`` 0 is an ACK, otherwise a negative errno answering request ``header.seq``."""

    header: Header
    error: int


Message = LinkMessage | AddrMessage | RouteMessage | Done | ErrorMessage


@dataclass(slots=True)
class Parsed:
    messages: list[Message] = field(default_factory=list)
    skipped: int = 0
    """Messages (or tails of the datagram) that were malformed and dropped."""
    ignored: int = 0
    """Well-formed messages of types the monitor does not use (neighbours, rules, NOOP, ...)."""


# ------------------------------------------------------------------ decoding


def parse(data: bytes | bytearray | memoryview) -> Parsed:
    """Decode one datagram (it may hold many messages, e.g. a chunk of a dump). Never raises."""
    view = memoryview(bytes(data)) if isinstance(data, memoryview) else memoryview(data)
    result = Parsed()
    offset = 0
    total = len(view)
    while offset < total:
        if total - offset < _NLMSGHDR.size:
            result.skipped += 1  # a tail too short for a header
            break
        length, msg_type, flags, seq, pid = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or length > total - offset:
            result.skipped += 1  # lengths no longer line up: nothing after this point can be located
            break
        header = Header(msg_type, flags, seq, pid)
        body = view[offset + _NLMSGHDR.size : offset + length]
        offset += _align(length)
        try:
            message = _decode(header, body)
        except (_Malformed, struct.error, ValueError, IndexError):
            result.skipped += 1
            continue
        if message is None:
            result.ignored += 1
        else:
            result.messages.append(message)
    return result


def _decode(header: Header, body: memoryview) -> Message | None:
    kind = header.type
    if kind in (RTM_NEWLINK, RTM_DELLINK):
        return _link(header, body)
    if kind in (RTM_NEWADDR, RTM_DELADDR):
        return _addr(header, body)
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        return _route(header, body)
    if kind == NLMSG_DONE:
        # Old kernels send an empty DONE; newer ones carry the dump's status as an int.
        return Done(header, _I32.unpack_from(body)[0] if len(body) >= 4 else 0)
    if kind == NLMSG_ERROR:
        if len(body) < 4:
            raise _Malformed("short NLMSG_ERROR")
        return ErrorMessage(header, _I32.unpack_from(body)[0])
    return None


def _attrs(body: memoryview, start: int) -> dict[int, memoryview]:
    """Type → payload; a later duplicate wins, which is what the kernel's own parser does."""
    found: dict[int, memoryview] = {}
    offset = start
    total = len(body)
    while offset + _RTATTR.size <= total:
        length, attr_type = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size or length > total - offset:
            raise _Malformed("attribute overruns its message")
        found[attr_type & _ATTR_TYPE_MASK] = body[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    return found


def _string(payload: memoryview | None) -> str | None:
    if payload is None:
        return None
    return bytes(payload).split(b"\0", 1)[0].decode("utf-8", "replace")


def _u8(payload: memoryview | None) -> int | None:
    if payload is None:
        return None
    if len(payload) < 1:
        raise _Malformed("empty u8 attribute")
    return int(_U8.unpack_from(payload)[0])


def _u32(payload: memoryview | None) -> int | None:
    if payload is None:
        return None
    if len(payload) < 4:
        raise _Malformed("short u32 attribute")
    return int(_U32.unpack_from(payload)[0])


def _ip(family: int, payload: memoryview | None) -> str | None:
    """Text form for IPv4/IPv6; other families (MPLS, bridge) carry no IP address and yield None."""
    if payload is None:
        return None
    raw = bytes(payload)
    if family == socket.AF_INET:
        if len(raw) != 4:
            raise _Malformed("IPv4 address of the wrong size")
        return str(ipaddress.IPv4Address(raw))
    if family == socket.AF_INET6:
        if len(raw) != 16:
            raise _Malformed("IPv6 address of the wrong size")
        return str(ipaddress.IPv6Address(raw))
    return None


def _via(payload: memoryview | None) -> str | None:
    """RTA_VIA (an IPv4 route through an IPv6 gateway): the gateway's own family precedes the address."""
    if payload is None:
        return None
    if len(payload) < 2:
        raise _Malformed("short RTA_VIA")
    return _ip(int(_U16.unpack_from(payload)[0]), payload[2:])


def _link(header: Header, body: memoryview) -> LinkMessage:
    if len(body) < _IFINFOMSG.size:
        raise _Malformed("short ifinfomsg")
    family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    attrs = _attrs(body, _IFINFOMSG.size)
    carrier = _u8(attrs.get(IFLA_CARRIER))
    return LinkMessage(
        header=header,
        deleted=header.type == RTM_DELLINK,
        family=family,
        ifindex=index,
        ifname=_string(attrs.get(IFLA_IFNAME)),
        flags=flags,
        operstate=_u8(attrs.get(IFLA_OPERSTATE)),
        carrier=None if carrier is None else bool(carrier),
    )


def _addr(header: Header, body: memoryview) -> AddrMessage:
    if len(body) < _IFADDRMSG.size:
        raise _Malformed("short ifaddrmsg")
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(body)
    attrs = _attrs(body, _IFADDRMSG.size)
    wide_flags = _u32(attrs.get(IFA_FLAGS))  # the 8-bit ifa_flags cannot hold the newer flags
    return AddrMessage(
        header=header,
        deleted=header.type == RTM_DELADDR,
        family=family,
        prefixlen=prefixlen,
        ifindex=index,
        flags=flags if wide_flags is None else wide_flags,
        scope=scope,
        address=_ip(family, attrs.get(IFA_ADDRESS)),
        local=_ip(family, attrs.get(IFA_LOCAL)),
        label=_string(attrs.get(IFA_LABEL)),
    )


def _route(header: Header, body: memoryview) -> RouteMessage:
    if len(body) < _RTMSG.size:
        raise _Malformed("short rtmsg")
    family, dst_len, _src_len, tos, table, protocol, scope, route_type, flags = _RTMSG.unpack_from(body)
    attrs = _attrs(body, _RTMSG.size)
    wide_table = _u32(attrs.get(RTA_TABLE))  # rtm_table is 8 bits; RTA_TABLE carries ids above 255
    gateway = _ip(family, attrs.get(RTA_GATEWAY))
    if gateway is None:
        gateway = _via(attrs.get(RTA_VIA))
    multipath = attrs.get(RTA_MULTIPATH)
    return RouteMessage(
        header=header,
        deleted=header.type == RTM_DELROUTE,
        family=family,
        table=table if wide_table is None else wide_table,
        dst=_ip(family, attrs.get(RTA_DST)),
        dst_len=dst_len,
        tos=tos,
        protocol=protocol,
        scope=scope,
        route_type=route_type,
        flags=flags,
        gateway=gateway,
        oif=_u32(attrs.get(RTA_OIF)),
        priority=_u32(attrs.get(RTA_PRIORITY)) or 0,
        multipath=() if multipath is None else _nexthops(family, multipath),
    )


def _nexthops(family: int, payload: memoryview) -> tuple[NextHop, ...]:
    hops: list[NextHop] = []
    offset = 0
    total = len(payload)
    while offset + _RTNEXTHOP.size <= total:
        length, flags, _hops, index = _RTNEXTHOP.unpack_from(payload, offset)
        if length < _RTNEXTHOP.size or length > total - offset:
            raise _Malformed("nexthop overruns RTA_MULTIPATH")
        attrs = _attrs(payload[offset : offset + length], _RTNEXTHOP.size)
        gateway = _ip(family, attrs.get(RTA_GATEWAY))
        if gateway is None:
            gateway = _via(attrs.get(RTA_VIA))
        hops.append(NextHop(index, gateway, flags))
        offset += _align(length)
    return tuple(hops)


# ------------------------------------------------------------------ requests


def dump_request(msg_type: int, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """A GET…/NLM_F_DUMP request with the full family header, which kernels with strict checking insist on."""
    if msg_type == RTM_GETLINK:
        body = _IFINFOMSG.pack(family, 0, 0, 0, 0)
    elif msg_type == RTM_GETADDR:
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    elif msg_type == RTM_GETROUTE:
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    else:
        raise ValueError(f"not a dumpable rtnetlink request type: {msg_type}")
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq & 0xFFFFFFFF, 0) + body
