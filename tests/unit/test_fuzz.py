"""Garbage in, counters out: malformed frames never raise and every frame is accounted for.

A few thousand frames are built once (scapy `fuzz()`, every truncation of valid frames, random
bytes behind plausible EtherTypes); the 100,000+ frames fed through the parser and the firewall
are cheap mutations of those (byte flips, truncation), so the test stays well under a minute.
"""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw, fuzz

from nfv.datapath import packet as P
from nfv.datapath.function import Side, Verdict
from nfv.functions import firewall
from nfv.functions.firewall import Firewall

ROOM = 2048
FRAMES = 120_000
SEED = 20261126


@pytest.fixture(autouse=True, params=["compiled", "python"])
def parser_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs twice: the parser in C (nfv/datapath/_fast.c) and the Python reference."""
    if request.param == "python":
        monkeypatch.setattr(P, "Parser", P.PyParser)
        monkeypatch.setattr(firewall, "Parser", P.PyParser)
    else:
        assert P.Parser is not P.PyParser, "the compiled hot path is missing: run make setup"


def templates() -> list[Packet]:
    a, b = "10.0.0.1", "10.0.0.2"
    quoted = IP(src=a, dst=b) / UDP(sport=1, dport=2)
    return [
        Ether() / IP(src=a, dst=b) / TCP(sport=1000, dport=80, flags="S"),
        Ether() / IP(src=a, dst=b, options=[IPOption_NOP()] * 4) / TCP(dport=22, flags="PA"),
        Ether() / Dot1Q(vlan=3) / IP(src=a, dst=b) / UDP(sport=5, dport=53) / Raw(b"q" * 20),
        Ether() / Dot1Q() / Dot1Q() / IP() / ICMP(type=8, id=1),
        Ether() / IP(src=b, dst=a) / ICMP(type=3, code=3) / quoted,
        Ether() / IP(flags="MF", id=9) / UDP(len=500) / Raw(b"x" * 30),
        Ether() / IP(frag=5, proto=17) / Raw(b"y" * 30),
        Ether() / IPv6() / TCP(dport=23, flags="S"),
        Ether() / IPv6() / IPv6ExtHdrFragment(m=1) / UDP(dport=7),
        Ether() / IPv6() / ICMPv6EchoRequest(id=4),
        Ether() / IPv6() / ICMPv6DestUnreach() / IPv6() / UDP(),
        Ether() / ARP(psrc=a, pdst=b),
    ]


def build_pool(rng: random.Random) -> list[bytes]:
    pool: list[bytes] = []
    valid = [bytes(t) for t in templates()]
    for raw in valid:
        pool.extend(raw[:n] for n in range(len(raw) + 1))  # every truncation
    for t in templates():
        for _ in range(150):
            pool.append(bytes(fuzz(t.copy()))[:1600])
    for _ in range(1000):
        ethertype = rng.choice((b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x08\x06"))
        pool.append(rng.randbytes(12) + ethertype + rng.randbytes(rng.randrange(0, 120)))
    return pool


def mutate(rng: random.Random, frame: bytes, buf: bytearray) -> int:
    n = len(frame)
    buf[:n] = frame
    for _ in range(rng.randrange(0, 4)):
        if n:
            buf[rng.randrange(n)] = rng.randrange(256)
    if n and rng.random() < 0.3:
        n = rng.randrange(n + 1)
    return n


FIREWALL = {
    "default": "allow",
    "rules": [
        {"action": "reject", "proto": "tcp", "dst_port": "20-23"},
        {"action": "reject", "proto": "udp", "dst_port": "7-53"},
        {"action": "reject", "proto": "icmp"},
        {"action": "deny", "proto": "tcp", "src": "10.0.0.0/8", "dst_port": 9999},
    ],
    "new_conn_rate": 50000,
    "offload": True,
    "conntrack": {"max_entries": 512},
}


def test_fuzzed_frames_never_raise_and_are_all_accounted_for() -> None:
    rng = random.Random(SEED)
    pool = build_pool(rng)
    fw = Firewall(FIREWALL, log=_Sink())
    parser = P.Parser()
    buf = bytearray(ROOM)
    view = memoryview(buf)
    verdicts = {Verdict.FORWARD: 0, Verdict.DROP: 0, Verdict.BOUNCE: 0}
    statuses = [0] * len(P.STATUS_NAMES)
    now = 0.0
    for i in range(FRAMES):
        n = mutate(rng, pool[i % len(pool)], buf)
        statuses[parser.parse(view, n)] += 1
        n = mutate(rng, pool[i % len(pool)], buf)
        verdict, out = fw.process(view, n, Side(i & 1), now)
        verdicts[verdict] += 1
        if verdict == Verdict.FORWARD:
            assert out == n
        elif verdict == Verdict.BOUNCE:
            assert 0 < out <= ROOM
            assert parser.parse(view, out) == P.OK  # our replies are well-formed
        if i % 1000 == 0:
            now += 0.5
            assert list(fw.tick(now)) == []
            fw.drain_settled()
    c = fw.counters()
    assert c["processed"] == FRAMES
    assert c["forwarded"] == verdicts[Verdict.FORWARD]
    assert c["dropped"] == verdicts[Verdict.DROP]
    assert c["bounced"] == verdicts[Verdict.BOUNCE]
    assert c["forwarded"] == (
        c["established"] + c["related"] + c["allowed"] + c["non_ip"] + c["untracked"]
    )
    assert c["dropped"] == (
        c["malformed"] + c["invalid"] + c["denied"] + c["rate_limited"] + c["fragments_orphaned"]
    )
    assert c["conntrack"]["entries"] <= 512
    # the mix really was hostile, and really reached every outcome
    assert sum(statuses[1:]) > 30_000 and c["malformed"] > 30_000
    assert min(verdicts.values()) > 100
    assert c["invalid"] > 100 and c["bounced"] > 100


class _Sink:
    """Swallows drop logs (they are sampled anyway)."""

    def write(self, _text: str) -> int:
        return 0
