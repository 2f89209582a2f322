"""Connection tracking: states, direction-independent keys, timeouts, eviction, user data."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from nfv.datapath.packet import Parser
from nfv.functions import conntrack as C
from nfv.functions import conntrack_entry as E

A, B = "10.0.0.1", "10.0.0.2"


class Flow:
    """Drives a ConnTrack with scapy-built packets, confirming every CT_NEW like a firewall."""

    def __init__(self, **kwargs: object) -> None:
        self.ct = C.ConnTrack(**kwargs)  # type: ignore[arg-type]
        self.p = Parser()

    def __call__(self, pkt: Packet, now: float = 1.0, confirm: bool = True) -> int:
        buf = bytearray(bytes(Ether() / pkt))
        self.p.parse(buf, len(buf))
        info = self.ct.track(self.p, now)
        if info == E.CT_NEW and confirm:
            self.ct.confirm(now)
        return info

    @property
    def state(self) -> str:
        assert self.ct.entry is not None
        return E.STATE_NAMES[self.ct.entry.state]


def c2s(flags: str, seq: int = 100, ack: int = 0) -> Packet:
    return IP(src=A, dst=B) / TCP(sport=1000, dport=80, flags=flags, seq=seq, ack=ack)


def s2c(flags: str, seq: int = 500, ack: int = 0) -> Packet:
    return IP(src=B, dst=A) / TCP(sport=80, dport=1000, flags=flags, seq=seq, ack=ack)


def handshake(f: Flow) -> None:
    assert f(c2s("S")) == E.CT_NEW
    assert f(s2c("SA", ack=101)) == E.CT_ESTABLISHED and f.state == "SYN_RECV"
    assert f.ct.reply
    assert f(c2s("A", seq=101, ack=501)) == E.CT_ESTABLISHED and f.state == "ESTABLISHED"
    assert f.ct.settled


def test_key_is_direction_independent() -> None:
    k1 = E.flow_key(4, 6, 1, 1000, 2, 80)
    assert k1 == E.flow_key(4, 6, 2, 80, 1, 1000)
    assert k1 != E.flow_key(6, 6, 1, 1000, 2, 80)


def test_handshake_and_graceful_close() -> None:
    f = Flow()
    handshake(f)
    assert f(c2s("FA", seq=101, ack=501)) == E.CT_ESTABLISHED and f.state == "FIN_WAIT"
    assert f(c2s("A", seq=102, ack=501)) == E.CT_ESTABLISHED and f.state == "FIN_WAIT"
    assert f(s2c("A", seq=501, ack=102)) == E.CT_ESTABLISHED and f.state == "CLOSE_WAIT"
    assert f(s2c("FA", seq=501, ack=102)) == E.CT_ESTABLISHED and f.state == "LAST_ACK"
    assert f(c2s("A", seq=102, ack=502)) == E.CT_ESTABLISHED and f.state == "TIME_WAIT"
    # the port pair may be reused: a new SYN opens a new connection
    assert f(c2s("S", seq=9000)) == E.CT_NEW and f.state == "SYN_SENT"


def test_handshake_validation() -> None:
    f = Flow()
    assert f(c2s("S")) == E.CT_NEW
    assert f(s2c("SA", ack=999)) == E.CT_INVALID  # does not acknowledge the SYN
    assert f(c2s("A", seq=101, ack=501)) == E.CT_INVALID  # ACK before any SYN/ACK
    assert f(s2c("SA", ack=101)) == E.CT_ESTABLISHED
    assert f(c2s("A", seq=101, ack=12345)) == E.CT_INVALID  # wrong ACK for the SYN/ACK
    assert f(c2s("A", seq=101, ack=501)) == E.CT_ESTABLISHED and f.state == "ESTABLISHED"


@pytest.mark.parametrize("flags", ["A", "SA", "R", "FA", "PA"])
def test_no_connection_without_a_syn(flags: str) -> None:
    assert Flow()(c2s(flags)) == E.CT_INVALID


@pytest.mark.parametrize("flags", ["SF", "SR", "F", "", "FPU"])
def test_scan_flag_combinations_are_invalid(flags: str) -> None:
    f = Flow()
    handshake(f)
    assert f(c2s(flags, seq=101, ack=501)) == E.CT_INVALID


def test_loose_pickup_of_mid_stream_connections() -> None:
    f = Flow(tcp_loose=True)
    assert f(c2s("A")) == E.CT_NEW and f.state == "ESTABLISHED"


def test_rst_in_window_closes_out_of_window_is_invalid() -> None:
    f = Flow()
    handshake(f)
    assert f(s2c("R", seq=501 + (1 << 24))) == E.CT_INVALID
    assert f.ct.entry is None
    assert f(s2c("R", seq=501)) == E.CT_ESTABLISHED and f.state == "CLOSE"


def test_rst_answering_a_syn_must_acknowledge_it() -> None:
    f = Flow()
    f(c2s("S"))
    assert f(s2c("RA", seq=0, ack=55)) == E.CT_INVALID
    assert f(s2c("RA", seq=0, ack=101)) == E.CT_ESTABLISHED and f.state == "CLOSE"


def test_udp_pseudo_state_and_timeouts() -> None:
    f = Flow(timeouts={"udp": 5, "udp_stream": 50})
    out = IP(src=A, dst=B) / UDP(sport=5000, dport=53)
    back = IP(src=B, dst=A) / UDP(sport=53, dport=5000)
    assert f(out, now=0) == E.CT_NEW and f.state == "UNREPLIED"
    assert f(out, now=1) == E.CT_ESTABLISHED and not f.ct.settled
    assert f(back, now=2) == E.CT_ESTABLISHED and f.state == "REPLIED" and f.ct.settled
    assert f.ct.tick(40) == 0 and len(f.ct) == 1
    assert f.ct.tick(53) == 1 and len(f.ct) == 0
    assert f.ct.expired == 1
    # unreplied: the short timeout applies
    assert f(out, now=100) == E.CT_NEW
    assert f.ct.tick(104) == 0 and f.ct.tick(106) == 1


def test_expired_entry_is_not_used_before_tick() -> None:
    f = Flow(timeouts={"udp": 5})
    out = IP(src=A, dst=B) / UDP(sport=5000, dport=53)
    assert f(out, now=0) == E.CT_NEW
    assert f(out, now=10, confirm=False) == E.CT_NEW


def test_state_change_to_shorter_timeout_expires_on_time() -> None:
    f = Flow(timeouts={"tcp_fin_wait": 3})
    handshake(f)  # ESTABLISHED: five days
    f(c2s("FA", seq=101, ack=501), now=2)
    assert f.ct.tick(4) == 0
    assert f.ct.tick(6) == 1


def test_icmp_echo_matches_by_id() -> None:
    f = Flow()
    assert f(IP(src=A, dst=B) / ICMP(type=8, id=7)) == E.CT_NEW
    assert f(IP(src=B, dst=A) / ICMP(type=0, id=7)) == E.CT_ESTABLISHED and f.state == "REPLIED"
    assert f(IP(src=B, dst=A) / ICMP(type=0, id=8)) == E.CT_INVALID
    assert f(IP(src=B, dst=A) / ICMP(type=11)) == E.CT_INVALID  # error with nothing quoted


def test_icmp_error_about_a_connection_is_related() -> None:
    f = Flow()
    f(IP(src=A, dst=B) / UDP(sport=5000, dport=53))
    quoted = IP(src=A, dst=B) / UDP(sport=5000, dport=53)
    err = IP(src="10.0.0.254", dst=A) / ICMP(type=3, code=1) / quoted
    assert f(err) == E.CT_RELATED
    other = IP(src=A, dst=B) / UDP(sport=5001, dport=53)
    assert f(IP(src="10.0.0.254", dst=A) / ICMP(type=3, code=1) / other) == E.CT_INVALID


def test_bounded_size_evicts_unestablished_first_then_oldest() -> None:
    f = Flow(max_entries=3)
    handshake(f)  # established, oldest
    for port in (1, 2):
        f(IP(src=A, dst=B) / UDP(sport=port, dport=53))
    f(IP(src=A, dst=B) / UDP(sport=3, dport=53))
    assert len(f.ct) == 3 and f.ct.evicted == 1
    assert f.ct.get(E.flow_key(4, 17, *_ips(1))) is None  # the unreplied UDP went first
    assert f.ct.get(E.flow_key(4, 6, *_ips_tcp())) is not None


def _ips(sport: int) -> tuple[int, int, int, int]:
    return (0x0A000001, sport, 0x0A000002, 53)


def _ips_tcp() -> tuple[int, int, int, int]:
    return (0x0A000001, 1000, 0x0A000002, 80)


def test_user_data_and_remove_hook() -> None:
    removed: list[object] = []
    f = Flow(on_remove=lambda e: removed.append(e.user), timeouts={"udp": 1})
    f(IP(src=A, dst=B) / UDP(sport=1, dport=2), confirm=False)
    entry = f.ct.confirm(1.0, user="backend-3")
    f(IP(src=B, dst=A) / UDP(sport=2, dport=1))
    assert f.ct.entry is entry and entry.user == "backend-3"
    assert entry.describe() == (17, A, 1, B, 2)
    f.ct.tick(1000)
    assert removed == ["backend-3"]


def test_confirm_without_new_packet_raises_and_bad_timeouts_rejected() -> None:
    with pytest.raises(RuntimeError):
        C.ConnTrack().confirm(0)
    with pytest.raises(ValueError):
        C.ConnTrack(timeouts={"tcp_bogus": 1})
    with pytest.raises(ValueError):
        C.ConnTrack(timeouts={"udp": 0})
