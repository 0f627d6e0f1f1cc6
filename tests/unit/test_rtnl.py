"""rtnetlink decoding on hand-built datagrams, and the link monitor's state folding fed with the same bytes.

The bytes are assembled here field by field from the kernel's struct layouts (not captured from a machine), so each
test states exactly which attribute it is about; the netns system test checks the same code against a real kernel.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwp500d.netdiag import rtnl
from nwp500d.netdiag.link import DumpKind, LinkEvent, NetworkState, describe

INET = socket.AF_INET
INET6 = socket.AF_INET6
UP_FLAGS = rtnl.IFF_UP | rtnl.IFF_RUNNING | rtnl.IFF_LOWER_UP

# ------------------------------------------------------------------ builders


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def attr(kind: int, payload: bytes) -> bytes:
    return pad(struct.pack("=HH", 4 + len(payload), kind) + payload)


def nlmsg(kind: int, body: bytes, *, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, pid) + pad(body)


def packed_ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def link_msg(
    index: int,
    name: str | None,
    ifi_flags: int,
    *,
    operstate: int | None = None,
    carrier: int | None = None,
    deleted: bool = False,
    family: int = 0,
    **header: int,
) -> bytes:
    body = struct.pack("=BxHiII", family, 1, index, ifi_flags, 0xFFFFFFFF)
    if name is not None:
        body += attr(rtnl.IFLA_IFNAME, name.encode() + b"\0")
    if operstate is not None:
        body += attr(rtnl.IFLA_OPERSTATE, bytes([operstate]))
    if carrier is not None:
        body += attr(rtnl.IFLA_CARRIER, bytes([carrier]))
    return nlmsg(rtnl.RTM_DELLINK if deleted else rtnl.RTM_NEWLINK, body, **header)


def addr_msg(
    family: int,
    index: int,
    address: str,
    prefixlen: int,
    *,
    local: str | None = None,
    flags: int = 0,
    wide_flags: int | None = None,
    label: str | None = None,
    deleted: bool = False,
    **header: int,
) -> bytes:
    body = struct.pack("=BBBBI", family, prefixlen, flags & 0xFF, 0, index)
    body += attr(rtnl.IFA_ADDRESS, packed_ip(address))
    if local is not None:
        body += attr(rtnl.IFA_LOCAL, packed_ip(local))
    if label is not None:
        body += attr(rtnl.IFA_LABEL, label.encode() + b"\0")
    if wide_flags is not None:
        body += attr(rtnl.IFA_FLAGS, struct.pack("=I", wide_flags))
    return nlmsg(rtnl.RTM_DELADDR if deleted else rtnl.RTM_NEWADDR, body, **header)


def route_msg(
    family: int,
    *,
    gateway: str | None = None,
    oif: int | None = None,
    dst: str | None = None,
    dst_len: int = 0,
    table: int = rtnl.RT_TABLE_MAIN,
    table_attr: int | None = None,
    route_type: int = rtnl.RTN_UNICAST,
    priority: int | None = None,
    multipath: list[tuple[int, str | None]] | None = None,
    via: tuple[int, str] | None = None,
    deleted: bool = False,
    **header: int,
) -> bytes:
    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, route_type, 0)
    if dst is not None:
        body += attr(rtnl.RTA_DST, packed_ip(dst))
    if gateway is not None:
        body += attr(rtnl.RTA_GATEWAY, packed_ip(gateway))
    if via is not None:
        body += attr(rtnl.RTA_VIA, struct.pack("=H", via[0]) + packed_ip(via[1]))
    if oif is not None:
        body += attr(rtnl.RTA_OIF, struct.pack("=I", oif))
    if priority is not None:
        body += attr(rtnl.RTA_PRIORITY, struct.pack("=I", priority))
    if table_attr is not None:
        body += attr(rtnl.RTA_TABLE, struct.pack("=I", table_attr))
    if multipath is not None:
        hops = b""
        for index, hop_gateway in multipath:
            inner = attr(rtnl.RTA_GATEWAY, packed_ip(hop_gateway)) if hop_gateway else b""
            hops += struct.pack("=HBBi", 8 + len(inner), 0, 0, index) + inner
        body += attr(rtnl.RTA_MULTIPATH, hops)
    return nlmsg(rtnl.RTM_DELROUTE if deleted else rtnl.RTM_NEWROUTE, body, **header)


def done_msg(error: int | None = 0, **header: int) -> bytes:
    return nlmsg(rtnl.NLMSG_DONE, b"" if error is None else struct.pack("=i", error), **header)


def only(data: bytes) -> rtnl.Message:
    parsed = rtnl.parse(data)
    assert (parsed.skipped, parsed.ignored, len(parsed.messages)) == (0, 0, 1)
    return parsed.messages[0]


# ------------------------------------------------------------------ links


def test_newlink_carries_index_name_flags_operstate_and_carrier() -> None:
    message = only(link_msg(4, "eth0", UP_FLAGS | 0x1000, operstate=6, carrier=1, seq=9, pid=77))
    assert isinstance(message, rtnl.LinkMessage)
    assert (message.ifindex, message.ifname, message.deleted, message.family) == (4, "eth0", False, 0)
    assert message.operstate_name == "up"
    assert message.carrier is True
    assert message.usable and message.admin_up and not message.is_loopback
    assert message.header == rtnl.Header(rtnl.RTM_NEWLINK, 0, 9, 77)


@pytest.mark.parametrize(
    ("flags", "usable"),
    [
        (UP_FLAGS, True),
        (rtnl.IFF_UP | rtnl.IFF_LOWER_UP, False),  # dormant: Wi-Fi associated, WPA not done
        (rtnl.IFF_UP, False),  # cable out
        (rtnl.IFF_RUNNING | rtnl.IFF_LOWER_UP, False),  # admin down
    ],
)
def test_usable_needs_admin_lower_layer_and_operational_state(flags: int, usable: bool) -> None:
    message = only(link_msg(2, "wlan0", flags))
    assert isinstance(message, rtnl.LinkMessage)
    assert message.usable is usable


def test_dellink_and_missing_optional_attributes() -> None:
    message = only(link_msg(7, None, 0, deleted=True))
    assert isinstance(message, rtnl.LinkMessage)
    assert message.deleted and message.ifname is None
    assert message.operstate is None and message.operstate_name is None and message.carrier is None
    assert not message.usable


def test_unknown_operstate_is_shown_as_its_number() -> None:
    message = only(link_msg(3, "x", 0, operstate=42))
    assert isinstance(message, rtnl.LinkMessage)
    assert message.operstate_name == "42"


def test_attribute_type_flags_are_masked() -> None:
    body = struct.pack("=BxHiII", 0, 1, 5, UP_FLAGS, 0) + attr(rtnl.IFLA_IFNAME | 0x8000, b"br0\0")
    message = only(nlmsg(rtnl.RTM_NEWLINK, body))
    assert isinstance(message, rtnl.LinkMessage)
    assert message.ifname == "br0"


# ------------------------------------------------------------------ addresses


def test_newaddr_ipv4_point_to_point_prefers_ifa_local() -> None:
    message = only(addr_msg(INET, 6, "10.0.0.1", 32, local="10.0.0.2", label="ppp0"))
    assert isinstance(message, rtnl.AddrMessage)
    assert (message.family, message.prefixlen, message.ifindex) == (INET, 32, 6)
    assert (message.address, message.local, message.primary, message.label) == ("10.0.0.1", "10.0.0.2", "10.0.0.2",
                                                                                 "ppp0")


def test_deladdr_ipv6_and_wide_flags_override_the_byte() -> None:
    message = only(addr_msg(INET6, 4, "2001:db8::7", 64, flags=0, wide_flags=rtnl.IFA_F_TENTATIVE, deleted=True))
    assert isinstance(message, rtnl.AddrMessage)
    assert message.deleted and message.address == "2001:db8::7" and message.primary == "2001:db8::7"
    assert message.tentative


def test_address_of_the_wrong_size_is_skipped_not_trusted() -> None:
    body = struct.pack("=BBBBI", INET, 24, 0, 0, 4) + attr(rtnl.IFA_ADDRESS, packed_ip("2001:db8::1"))
    parsed = rtnl.parse(nlmsg(rtnl.RTM_NEWADDR, body) + link_msg(1, "lo", 0))
    assert parsed.skipped == 1
    assert [type(m) for m in parsed.messages] == [rtnl.LinkMessage]


def test_address_of_a_non_ip_family_is_none() -> None:
    body = struct.pack("=BBBBI", 7, 0, 0, 0, 4) + attr(rtnl.IFA_ADDRESS, b"\1\2\3")
    message = only(nlmsg(rtnl.RTM_NEWADDR, body))
    assert isinstance(message, rtnl.AddrMessage)
    assert message.address is None and message.primary is None


# ------------------------------------------------------------------ routes


def test_ipv4_default_route() -> None:
    message = only(route_msg(INET, gateway="198.51.100.1", oif=4, priority=100))
    assert isinstance(message, rtnl.RouteMessage)
    assert message.is_default and message.dst is None and message.dst_len == 0
    assert (message.gateway, message.oif, message.priority, message.table) == ("198.51.100.1", 4, 100, 254)
    assert message.nexthops == (rtnl.NextHop(4, "198.51.100.1"),)


def test_ipv6_prefix_route_is_not_default() -> None:
    message = only(route_msg(INET6, dst="2001:db8::", dst_len=64, oif=4, deleted=True))
    assert isinstance(message, rtnl.RouteMessage)
    assert message.deleted and message.dst == "2001:db8::" and not message.is_default


@pytest.mark.parametrize(
    ("table", "table_attr", "route_type", "is_default"),
    [
        (100, None, rtnl.RTN_UNICAST, False),  # a policy-routing table
        (252, rtnl.RT_TABLE_MAIN, rtnl.RTN_UNICAST, True),  # RTA_TABLE wins over the 8-bit field
        (rtnl.RT_TABLE_MAIN, 1000, rtnl.RTN_UNICAST, False),
        (rtnl.RT_TABLE_MAIN, None, 7, False),  # unreachable default
    ],
)
def test_default_means_unicast_in_the_main_table(
    table: int, table_attr: int | None, route_type: int, is_default: bool
) -> None:
    message = only(route_msg(INET, gateway="192.0.2.1", oif=2, table=table, table_attr=table_attr,
                             route_type=route_type))
    assert isinstance(message, rtnl.RouteMessage)
    assert message.is_default is is_default


def test_multipath_default_route_lists_every_nexthop() -> None:
    message = only(route_msg(INET, multipath=[(4, "198.51.100.1"), (5, "203.0.113.1"), (6, None)]))
    assert isinstance(message, rtnl.RouteMessage)
    assert message.nexthops == (rtnl.NextHop(4, "198.51.100.1"), rtnl.NextHop(5, "203.0.113.1"), rtnl.NextHop(6, None))


def test_ipv4_route_via_an_ipv6_gateway() -> None:
    message = only(route_msg(INET, via=(INET6, "fe80::1"), oif=3))
    assert isinstance(message, rtnl.RouteMessage)
    assert message.gateway == "fe80::1"


# ------------------------------------------------------------------ framing: multipart, done, error, others


def test_multipart_dump_chunk_with_done() -> None:
    multi = rtnl.NLM_F_MULTI
    data = (
        link_msg(1, "lo", rtnl.IFF_UP | rtnl.IFF_LOOPBACK | rtnl.IFF_RUNNING, flags=multi, seq=3, pid=1234)
        + link_msg(2, "eth0", UP_FLAGS, flags=multi, seq=3, pid=1234)
        + done_msg(flags=multi, seq=3, pid=1234)
    )
    parsed = rtnl.parse(data)
    assert (parsed.skipped, parsed.ignored) == (0, 0)
    assert [type(m).__name__ for m in parsed.messages] == ["LinkMessage", "LinkMessage", "Done"]
    assert all(m.header.seq == 3 and m.header.flags & rtnl.NLM_F_MULTI for m in parsed.messages)
    done = parsed.messages[-1]
    assert isinstance(done, rtnl.Done) and done.error == 0


def test_done_with_and_without_a_status() -> None:
    failed = only(done_msg(-4))
    assert isinstance(failed, rtnl.Done) and failed.error == -4
    empty = only(done_msg(None))
    assert isinstance(empty, rtnl.Done) and empty.error == 0


def test_nlmsg_error_and_ack() -> None:
    request = struct.pack("=IHHII", 32, rtnl.RTM_GETROUTE, 0x301, 5, 0)
    error = only(nlmsg(rtnl.NLMSG_ERROR, struct.pack("=i", -16) + request, seq=5))
    assert isinstance(error, rtnl.ErrorMessage) and error.error == -16 and error.header.seq == 5
    ack = only(nlmsg(rtnl.NLMSG_ERROR, struct.pack("=i", 0) + request))
    assert isinstance(ack, rtnl.ErrorMessage) and ack.error == 0


def test_other_message_types_are_ignored_not_skipped() -> None:
    parsed = rtnl.parse(nlmsg(28, b"\0" * 12) + nlmsg(rtnl.NLMSG_NOOP, b"") + link_msg(2, "eth0", 0))
    assert (parsed.skipped, parsed.ignored, len(parsed.messages)) == (0, 2, 1)


def test_accepts_bytearray_and_memoryview() -> None:
    data = link_msg(2, "eth0", UP_FLAGS)
    assert rtnl.parse(bytearray(data)).messages == rtnl.parse(data).messages
    assert rtnl.parse(memoryview(b"xx" + data)[2:]).messages == rtnl.parse(data).messages


# ------------------------------------------------------------------ damage


def test_truncated_datagram_keeps_what_came_before() -> None:
    first = link_msg(2, "eth0", UP_FLAGS)
    second = route_msg(INET, gateway="198.51.100.1", oif=2)
    parsed = rtnl.parse(first + second[:-3])
    assert len(parsed.messages) == 1 and parsed.skipped == 1


def test_header_shorter_than_itself_stops_the_walk() -> None:
    bogus = struct.pack("=IHHII", 8, rtnl.RTM_NEWLINK, 0, 0, 0)
    parsed = rtnl.parse(link_msg(2, "eth0", 0) + bogus + link_msg(3, "eth1", 0))
    assert len(parsed.messages) == 1 and parsed.skipped == 1


def test_body_too_short_for_its_struct_skips_only_that_message() -> None:
    for kind in (rtnl.RTM_NEWLINK, rtnl.RTM_NEWADDR, rtnl.RTM_NEWROUTE, rtnl.NLMSG_ERROR):
        parsed = rtnl.parse(nlmsg(kind, b"\1\2") + link_msg(3, "eth1", 0))
        assert (parsed.skipped, len(parsed.messages)) == (1, 1), kind


def test_attribute_running_past_its_message_skips_the_message() -> None:
    body = struct.pack("=BxHiII", 0, 1, 5, 0, 0) + struct.pack("=HH", 200, rtnl.IFLA_IFNAME) + b"eth0"
    parsed = rtnl.parse(nlmsg(rtnl.RTM_NEWLINK, body) + link_msg(6, "ok", 0))
    assert parsed.skipped == 1
    assert [m.ifname for m in parsed.messages if isinstance(m, rtnl.LinkMessage)] == ["ok"]


def test_short_scalar_attributes_skip_the_message() -> None:
    empty_operstate = struct.pack("=BxHiII", 0, 1, 5, 0, 0) + attr(rtnl.IFLA_OPERSTATE, b"")
    short_oif = struct.pack("=BBBBBBBBI", INET, 0, 0, 0, 254, 3, 0, 1, 0) + attr(rtnl.RTA_OIF, b"\1\0")
    short_via = struct.pack("=BBBBBBBBI", INET, 0, 0, 0, 254, 3, 0, 1, 0) + attr(rtnl.RTA_VIA, b"\2")
    broken_hop = struct.pack("=BBBBBBBBI", INET, 0, 0, 0, 254, 3, 0, 1, 0) + attr(
        rtnl.RTA_MULTIPATH, struct.pack("=HBBi", 99, 0, 0, 4)
    )
    parsed = rtnl.parse(
        nlmsg(rtnl.RTM_NEWLINK, empty_operstate)
        + nlmsg(rtnl.RTM_NEWROUTE, short_oif)
        + nlmsg(rtnl.RTM_NEWROUTE, short_via)
        + nlmsg(rtnl.RTM_NEWROUTE, broken_hop)
    )
    assert (parsed.skipped, parsed.messages) == (4, [])


def test_empty_and_tiny_input() -> None:
    assert rtnl.parse(b"") == rtnl.Parsed()
    assert rtnl.parse(b"\0" * 7).skipped == 1


def _valid_stream() -> bytes:
    return (
        link_msg(2, "eth0", UP_FLAGS, operstate=6, carrier=1)
        + addr_msg(INET, 2, "198.51.100.2", 24, local="198.51.100.2", label="eth0")
        + addr_msg(INET6, 2, "2001:db8::2", 64, wide_flags=0)
        + route_msg(INET, gateway="198.51.100.1", oif=2, priority=100)
        + route_msg(INET6, multipath=[(2, "fe80::1"), (3, "fe80::2")])
        + done_msg()
    )


def test_every_truncation_of_a_valid_stream_is_survived() -> None:
    stream = _valid_stream()
    for cut in range(len(stream) + 1):
        parsed = rtnl.parse(stream[:cut])
        assert len(parsed.messages) <= 6


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes) -> None:
    parsed = rtnl.parse(data)
    assert parsed.skipped >= 0 and parsed.ignored >= 0


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK, rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR, rtnl.RTM_NEWROUTE,
                     rtnl.RTM_DELROUTE, rtnl.NLMSG_DONE, rtnl.NLMSG_ERROR]),
    st.binary(max_size=200),
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=6),
)
def test_fuzz_well_framed_messages_with_random_bodies_never_raise(
    kind: int, fixed: bytes, attrs: list[tuple[int, int, bytes]]
) -> None:
    body = fixed + b"".join(struct.pack("=HH", length, attr_type) + payload for length, attr_type, payload in attrs)
    parsed = rtnl.parse(nlmsg(kind, body) + link_msg(9, "tail", 0))
    assert len(parsed.messages) + parsed.skipped + parsed.ignored >= 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_corrupted_valid_stream_never_raises(data: st.DataObject) -> None:
    stream = bytearray(_valid_stream())
    for _ in range(data.draw(st.integers(1, 8))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    rtnl.parse(bytes(stream))


# ------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    ("kind", "body_size"), [(rtnl.RTM_GETLINK, 16), (rtnl.RTM_GETADDR, 8), (rtnl.RTM_GETROUTE, 12)]
)
def test_dump_request_layout(kind: int, body_size: int) -> None:
    request = rtnl.dump_request(kind, 0x1_0000_0007, family=INET6)
    length, msg_type, flags, seq, pid = struct.unpack_from("=IHHII", request)
    assert (length, msg_type, seq, pid) == (16 + body_size, kind, 7, 0)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP
    assert len(request) == length and request[16] == INET6


def test_dump_request_refuses_other_types() -> None:
    with pytest.raises(ValueError, match="dumpable"):
        rtnl.dump_request(rtnl.RTM_NEWLINK, 1)


# ------------------------------------------------------------------ NetworkState: what the monitor makes of it

ETH0, WLAN0, LO = 2, 3, 1


def feed(state: NetworkState, *datagrams: bytes, now: float = 10.0) -> list[LinkEvent]:
    events: list[LinkEvent] = []
    for datagram in datagrams:
        parsed = rtnl.parse(datagram)
        assert parsed.skipped == 0
        for message in parsed.messages:
            events += state.apply(message, now)
    return events


def dump(state: NetworkState, kind: DumpKind, *datagrams: bytes, now: float = 10.0) -> list[LinkEvent]:
    state.begin_dump(kind)
    for datagram in datagrams:
        for message in rtnl.parse(datagram).messages:
            state.apply(message, now, from_dump=True)
    return state.finish_dump(now)


def started(*, wlan: bool = False) -> NetworkState:
    """eth0 up with 198.51.100.2/24 and a default route via 198.51.100.1 (metric 100), as after the start dumps."""
    state = NetworkState()
    links = link_msg(LO, "lo", rtnl.IFF_UP | rtnl.IFF_LOOPBACK | rtnl.IFF_RUNNING | rtnl.IFF_LOWER_UP)
    links += link_msg(ETH0, "eth0", UP_FLAGS, operstate=6)
    addrs = addr_msg(INET, LO, "127.0.0.1", 8) + addr_msg(INET, ETH0, "198.51.100.2", 24)
    routes = route_msg(INET, gateway="198.51.100.1", oif=ETH0, priority=100)
    if wlan:
        links += link_msg(WLAN0, "wlan0", UP_FLAGS, operstate=6)
        routes += route_msg(INET, gateway="192.0.2.1", oif=WLAN0, priority=600)
    assert dump(state, "link", links) == []
    assert dump(state, "addr", addrs) == []
    assert dump(state, "route", routes) == []
    state.quiet = False
    return state


def kinds(events: list[LinkEvent]) -> list[tuple[str, str | None]]:
    return [(event.kind, event.interface) for event in events]


def test_start_state_is_silent_and_readable() -> None:
    state = started()
    assert state.carrier == {"eth0": True}
    assert state.default_route_interfaces == ("eth0",)


def test_repeated_identical_newlinks_yield_one_event() -> None:
    state = started()
    down = link_msg(ETH0, "eth0", rtnl.IFF_UP, operstate=2)
    events = feed(state, down, down, down + down)
    assert kinds(events) == [("carrier_down", "eth0")]
    assert events[0].detail == {"admin": "up", "operstate": "down"}
    assert events[0].monotonic == 10.0
    assert state.default_route_interfaces == ("eth0",)  # a lost carrier leaves the route in place
    assert not state.route_resync_wanted


def test_admin_down_drops_the_routes_the_kernel_flushes_silently() -> None:
    state = started()
    events = feed(state, link_msg(ETH0, "eth0", 0, operstate=2))
    assert kinds(events) == [("carrier_down", "eth0"), ("default_route_lost", "eth0")]
    assert events[1].detail == {"old_interface": "eth0", "old_gateway": "198.51.100.1"}
    assert state.route_resync_wanted
    up = feed(state, link_msg(ETH0, "eth0", UP_FLAGS, operstate=6))
    assert kinds(up) == [("carrier_up", "eth0")]
    assert state.network_is_back(up[0])  # no default route now, but eth0 carried the last one
    back = feed(state, route_msg(INET, gateway="198.51.100.1", oif=ETH0, priority=100))
    assert kinds(back) == [("default_route_gained", "eth0")]
    assert state.network_is_back(back[0])


def test_route_replace_and_failover_to_a_backup_route() -> None:
    state = started(wlan=True)
    assert state.default_route_interfaces == ("eth0",)  # the metric-600 backup carries nothing
    events = feed(state, route_msg(INET, gateway="198.51.100.1", oif=ETH0, priority=100, deleted=True))
    assert kinds(events) == [("default_route_changed", "wlan0")]
    assert events[0].detail == {"old_interface": "eth0", "old_gateway": "198.51.100.1",
                                "new_interface": "wlan0", "new_gateway": "192.0.2.1"}
    assert describe(events[0]) == "default route changed: eth0 via 198.51.100.1 -> wlan0 via 192.0.2.1"
    replaced = feed(state, route_msg(INET, gateway="192.0.2.254", oif=WLAN0, priority=600, flags=rtnl.NLM_F_REPLACE))
    assert [e.detail["new_gateway"] for e in replaced] == ["192.0.2.254"]
    repeated = feed(state, route_msg(INET, gateway="192.0.2.254", oif=WLAN0, priority=600))
    assert repeated == []


def test_non_default_and_other_table_routes_change_nothing() -> None:
    state = started()
    assert feed(state, route_msg(INET, dst="203.0.113.0", dst_len=24, oif=ETH0),
                route_msg(INET, gateway="192.0.2.1", oif=ETH0, table=100)) == []


def test_addresses_tentative_until_dad_completes_and_loopback_ignored() -> None:
    state = started()
    tentative = addr_msg(INET6, ETH0, "2001:db8::2", 64, wide_flags=rtnl.IFA_F_TENTATIVE)
    assert feed(state, tentative, addr_msg(INET, LO, "127.0.0.2", 8)) == []
    added = feed(state, addr_msg(INET6, ETH0, "2001:db8::2", 64, wide_flags=0))
    assert kinds(added) == [("address_added", "eth0")]
    assert added[0].detail == {"address": "2001:db8::2/64", "family": "inet6"}
    assert state.network_is_back(added[0])
    assert feed(state, addr_msg(INET6, ETH0, "2001:db8::2", 64, wide_flags=0)) == []  # lifetime refresh
    removed = feed(state, addr_msg(INET, ETH0, "198.51.100.2", 24, deleted=True))
    assert kinds(removed) == [("address_removed", "eth0")]
    assert describe(removed[0]) == "eth0: address 198.51.100.2/24 removed"
    assert state.route_resync_wanted and not state.network_is_back(removed[0])


def test_bridge_port_notifications_are_not_the_interface() -> None:
    state = started()
    assert feed(state, link_msg(ETH0, "eth0", 0, family=socket.AF_BRIDGE, deleted=True)) == []
    assert state.carrier == {"eth0": True}


def test_interface_removed_while_up_reports_carrier_down_and_route_loss() -> None:
    state = started()
    events = feed(state, link_msg(ETH0, "eth0", 0, deleted=True))
    assert kinds(events) == [("carrier_down", "eth0"), ("address_removed", "eth0"), ("default_route_lost", "eth0")]
    assert events[0].detail["removed"] == "yes"
    assert state.carrier == {}


def test_network_is_back_ignores_unrelated_interfaces() -> None:
    state = started()
    other = LinkEvent("carrier_up", "docker0", {}, 1.0)
    assert not state.network_is_back(other)
    assert not state.network_is_back(LinkEvent("address_added", "docker0", {}, 1.0))
    assert not state.network_is_back(LinkEvent("default_route_lost", "eth0", {}, 1.0))
    fresh = NetworkState()  # nothing known: any carrier counts
    fresh.quiet = False
    assert fresh.network_is_back(other)
    assert not fresh.network_is_back(LinkEvent("address_added", "docker0", {}, 1.0))


def test_resync_dump_reports_what_the_notifications_missed() -> None:
    state = started()
    state.begin_dump("route")
    # a notification arriving mid-dump lands in both tables, so the swap at the end does not undo it
    mid = state.apply(rtnl.parse(route_msg(INET6, gateway="fe80::1", oif=ETH0, priority=1024)).messages[0], 11.0)
    assert kinds(mid) == [("default_route_changed", "eth0")]
    events = state.finish_dump(12.0)  # the dump itself found nothing for IPv4: that route was flushed unseen
    assert kinds(events) == [("default_route_changed", "eth0")]
    assert events[0].detail["new_gateway"] == "fe80::1"
    assert events[0].monotonic == 12.0
    relinked = dump(state, "link", link_msg(ETH0, "eth0", rtnl.IFF_UP, operstate=2))
    assert kinds(relinked) == [("carrier_down", "eth0")]


def test_multipath_hops_are_all_default_interfaces() -> None:
    state = started(wlan=True)
    events = feed(state, route_msg(INET, multipath=[(ETH0, "198.51.100.1"), (WLAN0, "192.0.2.1")], priority=100,
                                   flags=rtnl.NLM_F_REPLACE))
    assert kinds(events) == [("default_route_changed", "eth0")]
    assert state.default_route_interfaces == ("eth0", "wlan0")
    assert describe(events[0]).endswith("-> eth0 via 198.51.100.1, wlan0 via 192.0.2.1")


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (LinkEvent("carrier_down", "eth0", {"operstate": "lowerlayerdown", "admin": "up"}, 0.0),
         "eth0: carrier lost (operstate lowerlayerdown, admin up)"),
        (LinkEvent("carrier_up", None, {}, 0.0), "?: carrier back (no details)"),
        (LinkEvent("address_added", "wlan0", {"address": "192.0.2.9/24"}, 0.0), "wlan0: address 192.0.2.9/24 added"),
        (LinkEvent("default_route_lost", "ppp0", {"old_interface": "ppp0", "old_gateway": ""}, 0.0),
         "default route lost (was ppp0 (direct))"),
        (LinkEvent("default_route_gained", "eth0", {"new_interface": "eth0", "new_gateway": "198.51.100.1"}, 0.0),
         "default route gained: eth0 via 198.51.100.1"),
    ],
)
def test_describe(event: LinkEvent, text: str) -> None:
    assert describe(event) == text
