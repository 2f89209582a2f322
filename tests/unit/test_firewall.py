"""The stateful firewall, driven with scapy-built frames through Firewall.process."""

from __future__ import annotations

import io
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from nfv.datapath.function import Side, Verdict
from nfv.functions.firewall import Firewall

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
ROOM = 2048

WEB = {
    "default": "drop",
    "rules": [
        {"action": "allow", "proto": "tcp", "dst_port": 80},
        {"action": "reject", "proto": "tcp", "dst_port": "20-23"},
        {"action": "allow", "proto": "udp", "dst": "10.0.0.0/24", "dst_port": "5000-5010"},
        {"action": "reject", "proto": "udp", "dst_port": 7},
        {"action": "allow", "proto": "icmp", "icmp_type": 8},
    ],
}


class Harness:
    def __init__(self, config: dict[str, Any]) -> None:
        self.log = io.StringIO()
        self.fw = Firewall(config, log=self.log)
        self.buf = bytearray(ROOM)

    def __call__(
        self, pkt: Packet, side: Side = Side.INGRESS, now: float = 1.0
    ) -> tuple[Verdict, bytes]:
        raw = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)
        self.buf[: len(raw)] = raw
        verdict, n = self.fw.process(memoryview(self.buf), len(raw), side, now)
        return verdict, bytes(self.buf[:n])

    def v(self, pkt: Packet, side: Side = Side.INGRESS, now: float = 1.0) -> Verdict:
        return self(pkt, side, now)[0]


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 0, ack: int = 0):
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)


def open_web(h: Harness, sport: int = 40000) -> None:
    assert h.v(tcp(A, B, sport, 80, "S", 100)) == Verdict.FORWARD
    assert h.v(tcp(B, A, 80, sport, "SA", 500, 101), Side.EGRESS) == Verdict.FORWARD
    assert h.v(tcp(A, B, sport, 80, "A", 101, 501)) == Verdict.FORWARD


def test_handshake_data_and_fin_teardown_pass() -> None:
    h = Harness(WEB)
    open_web(h)
    data = tcp(A, B, 40000, 80, "PA", 101, 501) / Raw(b"GET /")
    assert h.v(data) == Verdict.FORWARD
    assert h.v(tcp(B, A, 80, 40000, "PA", 501, 106) / Raw(b"200"), Side.EGRESS) == Verdict.FORWARD
    assert h.v(tcp(A, B, 40000, 80, "FA", 106, 504)) == Verdict.FORWARD
    assert h.v(tcp(B, A, 80, 40000, "FA", 504, 107), Side.EGRESS) == Verdict.FORWARD
    assert h.v(tcp(A, B, 40000, 80, "A", 107, 505)) == Verdict.FORWARD
    c = h.fw.counters()
    assert c["established"] == 7 and c["allowed"] == 1 and c["dropped"] == 0
    assert c["rules"][0]["hits"] == 1  # only the SYN was matched against the rules


def test_denied_port_leaves_no_state_and_replies_are_not_new() -> None:
    h = Harness(WEB)
    assert h.v(tcp(A, B, 40000, 81, "S")) == Verdict.DROP
    assert len(h.fw.ct) == 0
    # a SYN/ACK "reply" for a connection that was never allowed
    assert h.v(tcp(B, A, 81, 40000, "SA", 0, 1), Side.EGRESS) == Verdict.DROP
    c = h.fw.counters()
    assert c["denied"] == 1 and c["invalid"] == 1 and c["default_hits"] == 1


def test_out_of_state_packets_are_dropped() -> None:
    h = Harness(WEB)
    assert h.v(tcp(A, B, 40000, 80, "A", 1, 1)) == Verdict.DROP  # ACK without handshake
    assert h.v(tcp(A, B, 40000, 80, "FA", 1, 1)) == Verdict.DROP
    open_web(h)
    assert h.v(tcp(A, B, 40000, 80, "SF", 101)) == Verdict.DROP  # scan flags
    assert h.v(tcp(B, A, 80, 40000, "R", 501 + (1 << 25)), Side.EGRESS) == Verdict.DROP
    assert h.fw.counters()["invalid"] == 4


def test_rst_closes_and_later_packets_are_invalid() -> None:
    h = Harness({**WEB, "conntrack": {"timeouts": {"tcp_close": 5}}})
    open_web(h)
    assert h.v(tcp(B, A, 80, 40000, "R", 501), Side.EGRESS) == Verdict.FORWARD
    h.fw.tick(10.0)
    assert h.v(tcp(A, B, 40000, 80, "PA", 101, 501), now=10.0) == Verdict.DROP


def test_idle_connection_times_out() -> None:
    h = Harness({**WEB, "conntrack": {"timeouts": {"tcp_established": 60}}})
    open_web(h)
    assert h.v(tcp(A, B, 40000, 80, "PA", 101, 501), now=30.0) == Verdict.FORWARD
    h.fw.tick(89.0)
    assert h.v(tcp(A, B, 40000, 80, "PA", 101, 501), now=89.5) == Verdict.FORWARD
    assert list(h.fw.tick(200.0)) == []
    assert len(h.fw.ct) == 0
    assert h.v(tcp(A, B, 40000, 80, "PA", 101, 501), now=200.0) == Verdict.DROP


def test_udp_port_range_and_replies() -> None:
    h = Harness(WEB)
    for port, verdict in ((4999, Verdict.DROP), (5000, Verdict.FORWARD), (5010, Verdict.FORWARD)):
        assert h.v(IP(src=A, dst=B) / UDP(sport=9, dport=port)) == verdict
    assert h.v(IP(src=B, dst=A) / UDP(sport=5000, dport=9), Side.EGRESS) == Verdict.FORWARD
    assert h.v(IP(src=A, dst="10.1.0.1") / UDP(sport=9, dport=5000)) == Verdict.DROP  # dst CIDR


def test_icmp_types() -> None:
    h = Harness(WEB)
    assert h.v(IP(src=A, dst=B) / ICMP(type=8, id=3)) == Verdict.FORWARD
    assert h.v(IP(src=B, dst=A) / ICMP(type=0, id=3), Side.EGRESS) == Verdict.FORWARD
    assert h.v(IP(src=A, dst=B) / ICMP(type=13, id=4)) == Verdict.DROP  # timestamp: not allowed
    assert h.v(IP(src=B, dst=A) / ICMP(type=0, id=99), Side.EGRESS) == Verdict.DROP


def test_related_icmp_error_passes() -> None:
    h = Harness(WEB)
    assert h.v(IP(src=A, dst=B) / UDP(sport=9, dport=5001)) == Verdict.FORWARD
    quoted = IP(src=A, dst=B) / UDP(sport=9, dport=5001)
    err = IP(src=B, dst=A) / ICMP(type=3, code=3) / quoted
    assert h.v(err, Side.EGRESS) == Verdict.FORWARD
    assert h.fw.counters()["related"] == 1


def test_rule_order_first_match_wins() -> None:
    cfg = {
        "default": "allow",
        "rules": [
            {"action": "deny", "src": "10.0.0.1/32", "proto": "tcp", "dst_port": 80},
            {"action": "allow", "proto": "tcp", "dst_port": 80},
            {"action": "deny", "proto": "any"},
        ],
    }
    h = Harness(cfg)
    assert h.v(tcp(A, B, 1, 80, "S")) == Verdict.DROP
    assert h.v(tcp(C, B, 1, 80, "S")) == Verdict.FORWARD
    assert h.v(tcp(C, B, 1, 81, "S")) == Verdict.DROP
    assert [r["hits"] for r in h.fw.counters()["rules"]] == [1, 1, 1]


def test_reject_tcp_answers_with_valid_rst() -> None:
    h = Harness(WEB)
    verdict, reply = h(tcp(A, B, 40000, 23, "S", 1000))
    assert verdict == Verdict.BOUNCE
    r = Ether(reply)
    assert (r.dst, r[IP].src, r[IP].dst) == ("02:00:00:00:00:01", B, A)
    assert (r[TCP].sport, r[TCP].dport, r[TCP].flags, r[TCP].ack) == (23, 40000, "RA", 1001)
    assert_checksums(r, IP, TCP)
    assert h.fw.counters()["bounced"] == 1 and len(h.fw.ct) == 0


def test_reject_udp_answers_with_valid_icmp_unreachable() -> None:
    h = Harness(WEB)
    verdict, reply = h(IP(src=A, dst=B) / UDP(sport=9, dport=7) / Raw(b"ping"))
    assert verdict == Verdict.BOUNCE
    r = Ether(reply)
    assert (r[IP].src, r[IP].dst, r[ICMP].type, r[ICMP].code) == (B, A, 3, 3)
    assert r[IPerror].dst == B and r[UDPerror].dport == 7
    assert_checksums(r, IP, ICMP)


def assert_checksums(pkt: Ether, *layers: type) -> None:
    fresh = pkt.copy()
    for layer in layers:
        del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    for layer in layers:
        assert pkt[layer].chksum == fresh[layer].chksum, layer


def test_new_connection_rate_limit_per_source() -> None:
    h = Harness({**WEB, "new_conn_rate": 5})
    verdicts = [h.v(tcp(A, B, 1000 + i, 80, "S"), now=10.0) for i in range(8)]
    assert verdicts.count(Verdict.FORWARD) == 5
    assert h.v(tcp(C, B, 1, 80, "S"), now=10.0) == Verdict.FORWARD  # another source
    assert h.v(tcp(A, B, 2000, 80, "S"), now=10.5) == Verdict.FORWARD  # refilled 2.5 tokens
    assert h.fw.counters()["rate_limited"] == 3
    # established traffic of an admitted connection is not limited
    assert h.v(tcp(B, A, 80, 1000, "SA", 7, 1), Side.EGRESS, now=10.5) == Verdict.FORWARD


def test_non_ip_and_neighbour_discovery_pass() -> None:
    h = Harness(WEB)
    assert h.v(ARP(psrc=A, pdst=B)) == Verdict.FORWARD
    assert h.v(IPv6(src="fe80::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="fe80::2")) == (
        Verdict.FORWARD
    )


def test_fragments_follow_their_first_fragment() -> None:
    h = Harness({"default": "drop", "rules": [{"action": "allow", "proto": "udp"}]})
    first = IP(src=A, dst=B, id=77, flags="MF") / UDP(sport=1, dport=2, len=1008) / Raw(b"a" * 8)
    later = IP(src=A, dst=B, id=77, frag=2, proto=17) / Raw(b"b" * 16)
    orphan = IP(src=A, dst=B, id=78, frag=2, proto=17) / Raw(b"c" * 16)
    assert h.v(first) == Verdict.FORWARD
    assert h.v(later) == Verdict.FORWARD
    assert h.v(orphan) == Verdict.DROP


def test_drop_logs_are_sampled() -> None:
    h = Harness({**WEB, "log_rate": 3})
    for i in range(50):
        h.v(tcp(A, B, 1000 + i, 9999, "S"), now=5.0)
    assert h.log.getvalue().count("\n") == 3
    assert h.fw.counters()["logs_suppressed"] == 47
    h.v(tcp(A, B, 1, 9999, "S"), now=6.0)
    assert h.log.getvalue().count("\n") == 4


def test_settled_flows_for_offload() -> None:
    h = Harness({**WEB, "offload": True})
    open_web(h)
    assert h.fw.drain_settled() == [(6, A, 40000, B, 80)]
    assert h.fw.drain_settled() == []
    h2 = Harness(WEB)
    open_web(h2)
    assert h2.fw.drain_settled() == []


def test_malformed_frames_are_counted_and_dropped() -> None:
    h = Harness(WEB)
    assert h.v(IP(src=A, dst=B, ihl=2) / TCP()) == Verdict.DROP
    c = h.fw.counters()
    assert c["malformed"] == 1 and c["malformed_by_reason"] == {"bad_ip_header": 1}
    assert c["processed"] == c["forwarded"] + c["dropped"] + c["bounced"] == 1


@pytest.mark.parametrize(
    "config",
    [
        {"default": "maybe"},
        {"rules": [{"action": "allow", "dst_port": 80}]},  # port without tcp/udp
        {"rules": [{"action": "allow", "proto": "tcp", "icmp_type": 8}]},
        {"rules": [{"action": "allow", "proto": "tcp", "dst_port": "90-80"}]},
        {"rules": [{"action": "allow", "proto": "tcp", "dst_port": 70000}]},
        {"rules": [{"action": "allow", "src": "not-an-ip"}]},
        {"rules": [{"action": "allow", "src": "10.0.0.1", "dst": "::1"}]},
        {"rules": [{"action": "explode"}]},
        {"rules": [{"action": "allow", "color": "red"}]},
        {"new_conn_rate": -1},
        {"surprise": 1},
    ],
)
def test_bad_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Firewall(config)


def test_placement_keys_are_accepted() -> None:
    fw = Firewall({"type": "firewall", "switch": "s1", "replicas": 1, "default": "allow"})
    assert fw.counters()["processed"] == 0
