"""The compiled hot path (nfv/datapath/_fast.c) against its Python reference: the parser gives
the same status and fields on generated and fuzzed frames, the NAT rewrite the same bytes with
valid checksums. (The ring loop is compared on real veths: tests/integration/test_fast_ring.py.)"""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from nfv.datapath import _fast, compiled, rewrite
from nfv.datapath.packet import OK, PROTO_TCP, PROTO_UDP, Parser, PyParser
from testing.fuzzing import mutate

FIELDS = ("src", "dst", "sport", "dport", "proto", "l3_off", "l4_off", "frag")


def random_packet(rng: random.Random) -> Packet:
    ip = IP(
        src=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        dst=f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        ttl=rng.randrange(1, 256),
        id=rng.randrange(65536),
        options=[] if rng.random() < 0.8 else b"\x01\x01\x01\x00",
    )
    if rng.random() < 0.1:
        ip.flags = "MF"  # a first fragment: its ports are there, its checksum covers more
    payload = Raw(rng.randbytes(rng.randrange(0, 200)))
    kind = rng.randrange(3)
    if kind == 0:
        l4: Packet = TCP(sport=rng.randrange(65536), dport=rng.randrange(65536),
                         seq=rng.randrange(1 << 32), flags=rng.choice(["S", "A", "PA", "FA"]))
    elif kind == 1:
        l4 = UDP(sport=rng.randrange(65536), dport=rng.randrange(65536))
    else:
        l4 = ICMP(type=8, id=rng.randrange(65536))
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / l4 / payload
    raw = bytearray(bytes(pkt))
    if kind == 1 and rng.random() < 0.3:  # UDP without a checksum must stay without one
        off = 14 + len(ip.options) + 20 + 6 if ip.options else 14 + 20 + 6
        raw[off : off + 2] = b"\x00\x00"
    return Ether(bytes(raw))


def nat_both(raw: bytes, dst: bool, ip: int, port: int) -> tuple[bytes, bytes, Parser, PyParser]:
    """The frame NATed by the C parser + C rewrite and by the Python parser + Python rewrite."""
    out = []
    for parser in (Parser, PyParser):
        buf = bytearray(raw)
        p = parser()
        assert p.parse(buf, len(buf)) == OK
        rewrite.nat_for(p)(buf, p, dst, ip, port)
        out.append((bytes(buf), p))
    (c_bytes, c_p), (py_bytes, py_p) = out
    return c_bytes, py_bytes, c_p, py_p


PARSER_FIELDS = tuple(n for n in PyParser.__slots__ if not n.startswith("_"))


def test_compiled_module_is_built_and_used() -> None:
    assert compiled.fast is _fast and Parser is _fast.Parser
    assert rewrite.nat_for(Parser()) is _fast.nat
    assert rewrite.nat_for(PyParser()) is rewrite.nat_ipv4_py


def variety(rng: random.Random) -> list[bytes]:
    """Frames of every kind the parser knows, each a little random."""
    from scapy.layers.inet import IPerror, TCPerror, UDPerror
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoRequest,
        IPerror6,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
    )
    from scapy.layers.inet6 import UDPerror as UDPerror6
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q

    def eth(**fields: int) -> Ether:  # explicit addresses: scapy would look them up
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)

    payload = Raw(rng.randbytes(rng.randrange(0, 64)))
    v6 = IPv6(src=f"2001:db8::{rng.randrange(1, 65535):x}", dst=f"fe80::{rng.randrange(65535):x}")
    frames = [
        eth() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", frag=rng.randrange(0, 3))
        / UDP(sport=rng.randrange(65536)) / payload,
        eth() / ICMP(type=3, code=1) / IPerror(src="10.0.0.2", dst="10.0.0.9") / TCPerror(
            sport=80, dport=rng.randrange(65536)),
        eth() / IP() / ICMP(type=11) / IPerror(proto=17) / UDPerror(sport=53, dport=9),
        eth() / IP() / ICMP(type=rng.choice([0, 8, 13, 14, 17, 9]), id=rng.randrange(65536)),
        eth() / IP() / ICMP(type=3) / IPerror(flags="MF", frag=5) / Raw(b"x" * 8),
        eth() / v6 / ICMPv6EchoRequest(id=rng.randrange(65536)),
        eth() / v6 / ICMPv6DestUnreach() / IPerror6(dst="2001:db8::5") / UDPerror6(dport=7),
        eth() / v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(flags="S") / payload,
        eth() / v6 / IPv6ExtHdrRouting() / IPv6ExtHdrFragment(m=1, id=rng.randrange(1 << 32))
        / UDP() / payload,
        eth() / v6 / IPv6ExtHdrFragment(offset=rng.randrange(1, 100), id=7) / payload,
        eth() / v6 / Raw(bytes([51, 1]) + rng.randbytes(6)),  # AH (next header 51)
        eth() / Dot1Q(vlan=rng.randrange(4096)) / IP() / TCP(flags="PA") / payload,
        eth() / Dot1AD(vlan=3) / Dot1Q(vlan=4) / IP(proto=47) / payload,
        eth() / Dot1AD() / Dot1Q() / Dot1Q() / IP(),
        eth() / ARP(op=rng.choice([1, 2]), psrc="10.0.0.7", pdst="10.0.0.8"),
        eth() / ARP(hwtype=6),
        eth(type=0x88CC) / payload,
    ]
    return [bytes(f) for f in frames] + [bytes(random_packet(rng)) for _ in range(10)]


def compare_parsers(frames: list[bytes], rng: random.Random) -> int:
    """Both parsers, one instance each across all frames (so stale fields would show)."""
    c, py = Parser(), PyParser()
    ok = 0
    for raw in frames:
        buf = bytearray(raw) + bytearray(rng.randrange(0, 4))
        length = rng.choice([len(raw), len(raw), len(raw) - 1, len(buf) + 5, -1])
        status = c.parse(memoryview(buf), length)
        assert status == py.parse(memoryview(buf), length), raw.hex()
        assert c.ip_ver == py.ip_ver
        if status == OK:
            ok += 1
            mine = {f: getattr(c, f) for f in PARSER_FIELDS}
            ref = {f: getattr(py, f) for f in PARSER_FIELDS}
            assert mine == ref, raw.hex()
    return ok


@pytest.mark.parametrize("seed", range(3))
def test_parser_matches_the_python_reference_on_every_kind_of_frame(seed: int) -> None:
    rng = random.Random(seed)
    frames = [f for _ in range(40) for f in variety(rng)]
    assert compare_parsers(frames, rng) > len(frames) // 2


def test_parser_matches_the_python_reference_on_fuzzed_frames() -> None:
    rng = random.Random(11)
    templates = variety(rng)
    frames = [mutate(rng, templates) for _ in range(20000)]
    assert compare_parsers(frames, rng) > 2000


def test_parser_fields_can_be_written_as_the_rewriters_do() -> None:
    p = Parser()
    raw = bytes(random_packet(random.Random(3)))
    assert p.parse(raw, len(raw)) == OK
    p.src, p.sport = 1, 2
    assert (p.src, p.sport) == (1, 2)
    assert p.parse(raw, len(raw)) == OK
    assert p.src == PyParser().src or p.src == parsed(raw).src
    with pytest.raises(TypeError):
        p.parse(raw)


@pytest.mark.parametrize("seed", range(4))
def test_nat_is_byte_identical_to_the_python_reference_and_checksums_hold(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        pkt = random_packet(rng)
        dst = rng.random() < 0.5
        ip, port = rng.randrange(1 << 32), rng.choice([0, 80, 8080, rng.randrange(65536)])
        if ICMP in pkt:
            port = 0  # the load balancer rewrites ports of TCP and UDP only
        c_bytes, py_bytes, c_p, py_p = nat_both(bytes(pkt), dst, ip, port)
        assert c_bytes == py_bytes, pkt.summary()
        assert [getattr(c_p, f) for f in FIELDS] == [getattr(py_p, f) for f in FIELDS]
        before, after = parsed(bytes(pkt)), parsed(c_bytes)
        now = (after.dst, after.dport) if dst else (after.src, after.sport)
        assert now == (ip, port or (before.dport if dst else before.sport))
        # An incremental update keeps each checksum's sum: valid stays valid (scapy's own
        # packets with IP options carry a wrong UDP checksum, which must stay as wrong).
        assert ip_sum(c_bytes) == ip_sum(bytes(pkt)) == 0xFFFF
        at = c_p.l4_off + 6
        udp_unchecked = c_p.proto == PROTO_UDP and bytes(pkt)[at : at + 2] == b"\0\0"
        if c_p.proto in (PROTO_TCP, PROTO_UDP) and not udp_unchecked:
            assert l4_sum(c_bytes) == l4_sum(bytes(pkt)), pkt.summary()


def parsed(raw: bytes) -> Parser:
    p = Parser()
    assert p.parse(raw, len(raw)) == OK
    return p


def ones(data: bytes) -> int:
    """The ones' complement sum (scapy's checksum is its complement)."""
    return ~checksum(data) & 0xFFFF


def ip_sum(raw: bytes) -> int:
    return ones(raw[14 : 14 + (raw[14] & 15) * 4])


def l4_sum(raw: bytes) -> int:
    """The ones' complement sum over the pseudo-header and the TCP/UDP segment."""
    ihl = (raw[14] & 15) * 4
    total = struct.unpack_from("!H", raw, 16)[0]
    l4 = raw[14 + ihl : 14 + total]
    return ones(raw[26:34] + struct.pack("!BBH", 0, raw[23], len(l4)) + l4)


def test_nat_of_mutated_frames_matches_the_reference() -> None:
    rng = random.Random(7)
    seeds = [bytes(random_packet(rng)) for _ in range(20)]
    compared = 0
    for i in range(3000):
        raw = mutate(rng, seeds)
        p = Parser()
        if p.parse(bytearray(raw), len(raw)) != OK or p.ip_ver != 4:
            continue
        c_bytes, py_bytes, _, _ = nat_both(raw, bool(i & 1), rng.randrange(1 << 32), 8080)
        assert c_bytes == py_bytes
        compared += 1
    assert compared > 300


def test_out_of_range_offsets_are_refused_not_written() -> None:
    raw = bytes(random_packet(random.Random(5)))
    for field, value in (("l3_off", len(raw) - 8), ("l4_off", len(raw)), ("dst", 1 << 40)):
        p = Parser()
        assert p.parse(raw, len(raw)) == OK
        setattr(p, field, value)
        buf = bytearray(raw)
        with pytest.raises(ValueError):
            _fast.nat(buf, p, True, 1, 2)
        assert buf == raw
    p = Parser()
    p.parse(raw, len(raw))
    with pytest.raises(TypeError):
        _fast.nat(bytearray(raw), PyParser(), True, 1, 2)
    with pytest.raises(BufferError):
        _fast.nat(raw, p, True, 1, 2)  # not writable
    with pytest.raises(ValueError):
        _fast.nat(bytearray(raw), p, True, 1 << 32, 2)
