"""Kernel TCP counter parsing and deltas, and the sampler over a fake /proc/net directory."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nwp500d.netdiag.counters import CounterSampler, read_counters
from nwp500d.netdiag.netstat import delta, parse_counters
from tests.fakes import FakeClock

SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 1000
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab \
InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 {active} 3 {attempt} {estab} 2 500 600 {retrans} 0 {rsts} 0
"""
NETSTAT = """TcpExt: SyncookiesSent TCPTimeouts TCPSynRetrans TCPAbortOnTimeout
TcpExt: 0 {timeouts} {syn} {abort}
IpExt: InNoRoutes InOctets
IpExt: 0 12345
"""


def write(proc: Path, **values: int) -> None:
    defaults = {"active": 10, "attempt": 1, "estab": 0, "retrans": 5, "rsts": 2, "timeouts": 1, "syn": 0, "abort": 0}
    defaults.update(values)
    (proc / "snmp").write_text(SNMP.format(**defaults))
    (proc / "netstat").write_text(NETSTAT.format(**defaults))


def test_parse_both_files(tmp_path: Path) -> None:
    write(tmp_path)
    counters = read_counters(tmp_path)
    assert counters["Tcp.RetransSegs"] == 5
    assert counters["Tcp.MaxConn"] == -1
    assert counters["TcpExt.TCPTimeouts"] == 1
    assert counters["IpExt.InOctets"] == 12345


def test_delta_short_names_and_no_negative_wrap() -> None:
    before = {"Tcp.RetransSegs": 10, "TcpExt.TCPTimeouts": 5, "Tcp.OutRsts": 100}
    after = {"Tcp.RetransSegs": 25, "TcpExt.TCPTimeouts": 5, "Tcp.OutRsts": 3}
    assert delta(before, after) == {"RetransSegs": 15, "TCPTimeouts": 0, "OutRsts": 0}


def test_sampler_session_and_last_minute(tmp_path: Path) -> None:
    clock = FakeClock()
    sampler = CounterSampler(clock=clock, proc_net=tmp_path)
    write(tmp_path, retrans=100)
    sampler.session_started()
    for second in range(0, 120, 10):
        write(tmp_path, retrans=100 + second)
        sampler.sample()
        clock.advance(10)
    write(tmp_path, retrans=300, timeouts=7)
    evidence = sampler.evidence()
    assert evidence["netstat_session"]["RetransSegs"] == 200
    assert evidence["netstat_session"]["TCPTimeouts"] == 6
    # Samples every 10 s up to t+110; the window keeps the newest sample at least 60 s older than that (t+50).
    assert evidence["netstat_last_minute"]["RetransSegs"] == 300 - 150


def test_missing_proc_files_give_no_evidence(tmp_path: Path) -> None:
    sampler = CounterSampler(proc_net=tmp_path / "nothing")
    sampler.session_started()
    assert sampler.evidence() == {"netstat_session": {}}


@given(st.text(max_size=500))
def test_parser_never_raises(text: str) -> None:
    parse_counters(text)


def test_real_proc_net_is_readable() -> None:
    assert "Tcp.RetransSegs" in read_counters()
