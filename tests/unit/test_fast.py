"""The compiled NAT rewrite (nfv/datapath/_fast.c) against its Python reference: the same
packets, byte for byte the same result, the same parser fields, valid checksums."""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from nfv.datapath import rewrite
from nfv.datapath.packet import OK, PROTO_TCP, PROTO_UDP, Parser
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


def nat_both(raw: bytes, dst: bool, ip: int, port: int) -> tuple[bytes, bytes, Parser, Parser]:
    out = []
    for compiled in (True, False):
        buf = bytearray(raw)
        p = Parser()
        assert p.parse(buf, len(buf)) == OK
        rewrite.nat_ipv4(buf, p, dst, ip, port, compiled=compiled)
        out.append((bytes(buf), p))
    (c_bytes, c_p), (py_bytes, py_p) = out
    return c_bytes, py_bytes, c_p, py_p


def test_compiled_module_is_built() -> None:
    assert rewrite._fast is not None, "make setup builds nfv/datapath/_fast.c"


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
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


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
    buf = bytearray(64)
    with pytest.raises(ValueError):
        rewrite._fast.nat4(buf, 62, 0, 1, -1, 0, 0, 24, -1, False)
    with pytest.raises(ValueError):
        rewrite._fast.nat4(buf, 30, 0, 1, 63, 0, 0, 24, -1, False)
    with pytest.raises(ValueError):
        rewrite._fast.nat4(buf, 30, 0, 1 << 32, -1, 0, 0, 24, -1, False)
    with pytest.raises(TypeError):
        rewrite._fast.nat4(bytes(64), 30, 0, 1, -1, 0, 0, 24, -1, False)
    assert buf == bytearray(64)
