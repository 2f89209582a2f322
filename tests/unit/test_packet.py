"""The zero-copy parser, checksum rewriting and reply builders, checked against scapy."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from nfv.datapath import packet as P
from nfv.datapath import rewrite as R


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs twice: the parser in C (nfv/datapath/_fast.c) and the Python reference."""
    if request.param == "python":
        monkeypatch.setattr(P, "Parser", P.PyParser)
    else:
        assert P.Parser is not P.PyParser, "the compiled hot path is missing: run make setup"


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def parse(frame: bytes, room: int = 0) -> tuple[int, P.Parser, bytearray]:
    buf = bytearray(frame) + bytearray(room)
    p = P.Parser()
    return p.parse(memoryview(buf), len(frame)), p, buf


def test_ipv4_tcp_with_two_vlan_tags_and_ip_options() -> None:
    frame = (
        Ether()
        / Dot1Q(vlan=5)
        / Dot1Q(vlan=7)
        / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00")
        / TCP(sport=1234, dport=80, flags="SA", seq=100, ack=7, window=999)
        / Raw(b"hello")
    )
    status, p, _ = parse(bytes(frame))
    assert status == P.OK
    assert (p.vlan_count, p.vlan_tci & 0xFFF, p.vlan_tci2 & 0xFFF) == (2, 5, 7)
    assert p.eth_type == P.ETH_IPV4 and p.l3_off == 22 and p.ip_hlen == 24
    assert (p.src, p.dst, p.proto) == (ip4("10.0.0.1"), ip4("10.0.0.2"), P.PROTO_TCP)
    assert (p.sport, p.dport, p.tcp_seq, p.tcp_ack, p.tcp_win) == (1234, 80, 100, 7, 999)
    assert p.tcp_flags == P.TCP_SYN | P.TCP_ACK
    assert p.payload_len == 5 and bytes(frame)[p.payload_off : p.payload_off + 5] == b"hello"


def test_ipv6_extension_headers_and_fragment() -> None:
    frame = (
        Ether()
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(offset=0, m=1, id=77)
        / UDP(sport=5, dport=53)
        / Raw(b"abc")
    )
    status, p, _ = parse(bytes(frame))
    assert status == P.OK
    assert p.ip_ver == 6 and p.proto == P.PROTO_UDP
    assert p.src == int(ipaddress.IPv6Address("2001:db8::1"))
    assert (p.frag, p.frag_id, p.sport, p.dport, p.payload_len) == (P.FRAG_FIRST, 77, 5, 53, 3)
    later = Ether() / IPv6() / IPv6ExtHdrFragment(offset=10, nh=17) / Raw(b"x" * 16)
    status, p, _ = parse(bytes(later))
    assert status == P.OK and p.frag == P.FRAG_LATER and p.sport == 0 and p.proto == 17


def test_icmp_echo_and_error_with_inner_tuple() -> None:
    status, p, _ = parse(bytes(Ether() / IP() / ICMP(type=8, id=42)))
    assert status == P.OK and (p.icmp_type, p.icmp_id, p.sport, p.dport) == (8, 42, 42, 42)
    quoted = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53)
    err = Ether() / IP(src="10.0.0.9", dst="10.0.0.1") / ICMP(type=3, code=3) / quoted
    status, p, _ = parse(bytes(err))
    assert status == P.OK and p.inner_ok
    assert (p.inner_src, p.inner_dst, p.inner_proto) == (ip4("10.0.0.1"), ip4("10.0.0.2"), 17)
    assert (p.inner_sport, p.inner_dport) == (1000, 53)
    status, p, _ = parse(bytes(Ether() / IPv6() / ICMPv6EchoRequest(id=9)))
    assert status == P.OK and p.proto == P.PROTO_ICMPV6 and p.icmp_id == 9


def test_arp_and_unknown_ethertypes_are_ok_without_ip() -> None:
    status, p, _ = parse(bytes(Ether() / ARP(psrc="10.0.0.1", pdst="10.0.0.2", op=1)))
    assert status == P.OK and p.ip_ver == 0 and p.eth_type == P.ETH_ARP
    assert (p.arp_op, p.arp_spa, p.arp_tpa) == (1, ip4("10.0.0.1"), ip4("10.0.0.2"))
    status, p, _ = parse(bytes(Ether(type=0x88CC) / Raw(b"\x00" * 40)))
    assert status == P.OK and p.ip_ver == 0


def test_fields_of_a_previous_frame_do_not_leak() -> None:
    p = P.Parser()
    tcp = bytearray(bytes(Ether() / IP() / TCP(flags="S", seq=5)))
    udp = bytearray(bytes(Ether() / IP() / UDP(sport=1, dport=2)))
    assert p.parse(tcp, len(tcp)) == P.OK and p.tcp_flags == P.TCP_SYN
    assert p.parse(udp, len(udp)) == P.OK
    assert (p.tcp_flags, p.tcp_seq, p.icmp_type) == (0, 0, 0)


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (b"\x00" * 13, P.TRUNCATED),
        (bytes(Ether() / Dot1Q() / Dot1Q() / Dot1Q() / IP()), P.TOO_MANY_TAGS),
        (bytes(Ether() / IP())[:30], P.TRUNCATED),
        (bytes(Ether() / IP(version=5)), P.BAD_IP_VERSION),
        (bytes(Ether() / IP(ihl=3)), P.BAD_IP_HEADER),
        (bytes(Ether() / IP(len=10)), P.BAD_IP_LENGTH),
        (bytes(Ether() / IP(len=200)), P.TRUNCATED),
        (bytes(Ether() / IP() / TCP(dataofs=2)), P.BAD_L4_HEADER),
        (bytes(Ether() / IP() / UDP(len=3)), P.BAD_L4_HEADER),
        (bytes(Ether() / IP(proto=6) / Raw(b"x" * 10)), P.TRUNCATED),
        (bytes(Ether() / IPv6(nh=0, plen=4) / Raw(b"\x06\x00\x00\x00")), P.BAD_EXT_HEADER),
    ],
)
def test_malformed_frames_return_a_status(frame: bytes, status: int) -> None:
    got, p, _ = parse(frame)
    assert got == status
    assert p.ip_ver == 0


def test_nat_rewrite_keeps_checksums_valid() -> None:
    for l4 in (TCP(sport=1000, dport=80, flags="PA") / Raw(b"data!"), UDP(sport=1000, dport=80)):
        frame = Ether() / IP(src="10.0.0.1", dst="10.0.0.100") / l4
        _, p, buf = parse(bytes(frame))
        R.set_ipv4_dst(buf, p, ip4("10.0.0.3"))
        R.set_dport(buf, p, 8080)
        R.set_ipv4_src(buf, p, ip4("192.168.1.1"))
        R.set_sport(buf, p, 40000)
        got = Ether(bytes(buf))
        assert (got[IP].src, got[IP].dst) == ("192.168.1.1", "10.0.0.3")
        assert (got.sport, got.dport) == (40000, 8080)
        l4_name = got[IP].payload.__class__
        fresh = got.copy()
        del fresh[IP].chksum
        del fresh[l4_name].chksum
        fresh = Ether(bytes(fresh))
        assert got[IP].chksum == fresh[IP].chksum
        assert got[l4_name].chksum == fresh[l4_name].chksum
        assert R.l4_checksum(buf, p) == got[l4_name].chksum


def test_udp_without_checksum_stays_without() -> None:
    frame = bytearray(bytes(Ether() / IP() / UDP(sport=1, dport=2)))
    frame[14 + 20 + 6 : 14 + 20 + 8] = b"\x00\x00"
    _, p, buf = parse(bytes(frame))
    R.set_ipv4_dst(buf, p, ip4("10.1.1.1"))
    assert Ether(bytes(buf))[UDP].chksum == 0


def test_csum_replace_matches_recomputation() -> None:
    data = bytearray(b"\x45\x00\x00\x54\x12\x34\x40\x00\x40\x01\x00\x00\x0a\x00\x00\x01\x0a\x00")
    data += b"\x00\x02"
    csum = R.ipv4_header_checksum(data, 0, 20)
    data[16:20] = bytes([192, 168, 7, 9])
    expected = R.ipv4_header_checksum(data, 0, 20)
    assert R.csum_replace32(csum, ip4("10.0.0.2"), ip4("192.168.7.9")) == expected


def verify_fresh(reply: Ether, *layers: type) -> None:
    """Each listed layer's checksum equals what scapy computes from scratch."""
    fresh = reply.copy()
    for layer in layers:
        field = "cksum" if hasattr(reply[layer], "cksum") else "chksum"
        delattr(fresh[layer], field)
    fresh = Ether(bytes(fresh))
    for layer in layers:
        field = "cksum" if hasattr(reply[layer], "cksum") else "chksum"
        assert getattr(reply[layer], field) == getattr(fresh[layer], field), layer


def test_tcp_rst_for_a_syn_and_for_an_ack() -> None:
    syn = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=9)
    syn = syn / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=23, flags="S", seq=1000)
    _, p, buf = parse(bytes(syn))
    n = R.build_tcp_rst(buf, p)
    r = Ether(bytes(buf[:n]))
    assert (r.src, r.dst, r[Dot1Q].vlan) == ("02:00:00:00:00:02", "02:00:00:00:00:01", 9)
    assert (r[IP].src, r[IP].dst, r[TCP].sport, r[TCP].dport) == ("10.0.0.2", "10.0.0.1", 23, 1234)
    assert r[TCP].flags == "RA" and r[TCP].ack == 1001 and r[TCP].seq == 0
    verify_fresh(r, IP, TCP)
    ack = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A", seq=5, ack=777)
    _, p, buf = parse(bytes(ack / Raw(b"zz")))
    r = Ether(bytes(buf[: R.build_tcp_rst(buf, p)]))
    assert r[TCP].flags == "R" and r[TCP].seq == 777
    verify_fresh(r, IP, TCP)
    v6 = Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=9, dport=22, flags="S")
    _, p, buf = parse(bytes(v6))
    r = Ether(bytes(buf[: R.build_tcp_rst(buf, p)]))
    assert r[IPv6].src == "2001:db8::2" and r[TCP].flags == "RA"
    verify_fresh(r, TCP)


def test_icmp_unreachable_quotes_the_packet_and_needs_room() -> None:
    udp = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53) / Raw(b"q")
    _, p, buf = parse(bytes(udp))
    assert R.build_icmp_unreachable(buf, p) == 0  # no room for the quote beyond the frame
    _, p, buf = parse(bytes(udp), room=600)
    n = R.build_icmp_unreachable(buf, p)
    r = Ether(bytes(buf[:n]))
    assert (r[IP].src, r[IP].dst, r[ICMP].type, r[ICMP].code) == ("10.0.0.2", "10.0.0.1", 3, 3)
    assert r[UDPerror].dport == 53
    verify_fresh(r, IP, ICMP)
    big = Ether() / IP() / UDP() / Raw(b"x" * 1400)
    _, p, buf = parse(bytes(big))
    n = R.build_icmp_unreachable(buf, p)
    assert n == 14 + 576  # RFC 1812 limit
    v6 = Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(dport=53)
    _, p, buf = parse(bytes(v6), room=200)
    r = Ether(bytes(buf[: R.build_icmp_unreachable(buf, p)]))
    assert r[ICMPv6DestUnreach].code == 4 and r[IPv6].dst == "2001:db8::1"
    verify_fresh(r, ICMPv6DestUnreach)
