"""The firewall's flow cache in C (`_fast.FlowCache`) against the firewall without it: the same
conversations, frame by frame, give the same verdicts, and afterwards the same conntrack
entries (state, sequence ends, packet and byte counts, deadlines) and the same counters. The
cache is driven as the C ring loop drives it: `forward` before the function, `settle` after."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from nfv.datapath import compiled
from nfv.datapath.function import Side, Verdict
from nfv.functions.conntrack_entry import ESTABLISHED
from nfv.functions.firewall import Firewall
from nfv.functions.loadbalancer import LoadBalancer
from testing.fuzzing import mutate

pytestmark = pytest.mark.skipif(compiled.fast is None, reason="the C module is not built")

CONFIG = {
    "default": "drop",
    "rules": [{"action": "allow", "proto": "tcp", "dst_port": 80}],
    "conntrack": {"timeouts": {"tcp_established": 5}},
}
CLIENTS = ("10.0.0.1", "10.0.0.2", "fd00::1")


def firewall(cached: bool = True) -> Firewall:
    fw = Firewall(CONFIG, log=io.StringIO())
    if not cached:
        fw.flow_cache = None
    return fw


def through(fn: Firewall | LoadBalancer, raw: bytes, now: float,
            side: Side = Side.INGRESS) -> tuple[int, bytes]:
    """One frame as the C loop handles it: the function's cache first, if it has one, then
    the function (and the cache files what the function offered)."""
    buf = bytearray(raw)
    cache = fn.flow_cache
    if cache is not None and cache.forward(buf, len(buf), side, now):
        return Verdict.FORWARD, bytes(buf)
    verdict, n = fn.process(memoryview(buf), len(buf), side, now)
    if cache is not None:
        cache.settle(verdict)
    return verdict, bytes(buf[:n])


def conversation(rng: random.Random, client: str, sport: int) -> Iterator[bytes]:
    """A TCP connection to port 80 with data both ways, retransmissions, stray flags and an
    ending by FIN or RST (or none); sequence numbers start anywhere, so they wrap."""
    ip = IPv6 if ":" in client else IP
    server = "fd00::80" if ":" in client else "10.0.0.80"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    cs, ss = rng.randrange(1 << 32), rng.randrange(1 << 32)

    def c2s(flags: str, data: bytes = b"", seq: int | None = None) -> bytes:
        seg = TCP(sport=sport, dport=80, flags=flags, seq=cs if seq is None else seq, ack=ss)
        return bytes(eth / ip(src=client, dst=server) / seg / Raw(data))

    def s2c(flags: str, data: bytes = b"") -> bytes:
        seg = TCP(sport=80, dport=sport, flags=flags, seq=ss, ack=cs)
        return bytes(eth / ip(src=server, dst=client) / seg / Raw(data))

    yield c2s("S")
    cs = (cs + 1) & 0xFFFFFFFF
    yield s2c("SA")
    ss = (ss + 1) & 0xFFFFFFFF
    yield c2s("A")
    for _ in range(rng.randrange(5, 40)):
        kind = rng.random()
        if kind < 0.45:
            data = rng.randbytes(rng.randrange(1, 1400))
            yield s2c("PA" if rng.random() < 0.5 else "A", data)
            ss = (ss + len(data)) & 0xFFFFFFFF
        elif kind < 0.8:
            data = rng.randbytes(rng.randrange(0, 300))
            yield c2s(rng.choice(["A", "PA", "AE", "AU"]), data)
            cs = (cs + len(data)) & 0xFFFFFFFF
        elif kind < 0.97:
            yield c2s("A", b"r" * 100, seq=(cs - 100) & 0xFFFFFFFF)  # a retransmission
        else:
            yield c2s(rng.choice(["S", "SA", "R", "FPU", ""]))  # stray: the state machine's
    end = rng.random()
    if end < 0.4:
        yield c2s("FA")
        yield s2c("FA")
        yield c2s("A", seq=(cs + 1) & 0xFFFFFFFF)
        yield s2c("A")  # after the close: not for the cache
    elif end < 0.7:
        yield s2c("RA")
        yield c2s("A")  # after the reset


def interleaved(seed: int) -> list[tuple[float, bytes]]:
    """Several conversations at once, with time passing."""
    rng = random.Random(seed)
    talks = [conversation(rng, rng.choice(CLIENTS), 40000 + i) for i in range(30)]
    out, now = [], 1000.0
    while talks:
        talk = rng.choice(talks)
        frame = next(talk, None)
        if frame is None:
            talks.remove(talk)
            continue
        # once, past the 5 s timeout: whatever is open then expires
        now += 6.0 if len(out) == 500 else rng.choice([0.0001, 0.0005, 0.001, 0.01])
        out.append((now, frame))
    return out


def table(fw: Firewall) -> dict[Any, tuple]:
    return {
        e.key: (e.state, list(e.end), e.packets, e.bytes, e.expires, e.dead, e.fin_dir)
        for e in fw.ct
    }


@pytest.mark.parametrize("seed", range(6))
def test_cache_and_function_agree_on_conversations(seed: int) -> None:
    frames = interleaved(seed)
    cached, reference = firewall(), firewall(cached=False)
    for i, (now, raw) in enumerate(frames):
        assert through(cached, raw, now) == through(reference, raw, now), i
    for fw in (cached, reference):
        fw.tick(frames[-1][0])
    assert table(cached) == table(reference)
    assert cached.counters() == reference.counters()
    hits, established = cached.flow_cache.hits, reference.counters()["established"]
    assert established / 2 < hits < established, (hits, established)


def test_cache_steps_aside_when_the_connection_leaves_established() -> None:
    """A FIN, an RST or the deadline ends the cache's part at once: the next segment is the
    state machine's, and the entry it held is let go."""
    rng = random.Random(7)
    fw = firewall()
    talk = list(conversation(rng, "10.0.0.1", 41000))
    handshake, now = talk[:3], 50.0
    for raw in handshake:
        through(fw, raw, now)
    data = next(
        r for r in talk[3:] if TCP in Ether(r) and Ether(r)[TCP].flags == "A" and Ether(r)[Raw]
    )
    through(fw, data, now)  # offered and filed
    assert fw.flow_cache.forward(bytearray(data), len(data), Side.INGRESS, now)  # now a hit
    (entry,) = list(fw.ct)
    assert entry.state == ESTABLISHED and entry.packets == 5
    # past the deadline: the cache passes, the function expires the entry
    late = now + 6.0
    assert not fw.flow_cache.forward(bytearray(data), len(data), Side.INGRESS, late)
    verdict, _ = through(fw, data, late)
    assert verdict == Verdict.DROP and entry.dead and not list(fw.ct)
    assert not fw.flow_cache.forward(bytearray(data), len(data), Side.INGRESS, late)
    assert fw.flow_cache.occupied() == 0  # the dead entry is not kept alive by the cache


def test_cache_never_takes_a_malformed_frame() -> None:
    """Mutated segments of an established connection: whatever the cache takes, the function
    would have forwarded with the same effect on the table."""
    rng = random.Random(11)
    cached, reference = firewall(), firewall(cached=False)
    talk = list(conversation(rng, "10.0.0.2", 42000))[:12]
    now = 10.0
    for raw in talk:
        assert through(cached, raw, now) == through(reference, raw, now)
    for i in range(3000):
        raw = mutate(rng, talk)
        now += 0.001
        assert through(cached, raw, now) == through(reference, raw, now), i
    assert table(cached) == table(reference)
    assert cached.counters() == reference.counters()


# -- the load balancer ------------------------------------------------------------------------

VIP, VIP_MAC = "10.0.0.100", "02:00:00:00:01:00"
BACKEND_MACS = {"10.0.1.3": "02:00:00:00:00:03", "10.0.1.4": "02:00:00:00:00:04"}
LB_CONFIG = {
    "vip": VIP, "vip_mac": VIP_MAC, "port": 80, "proto": "tcp",
    "backends": [{"ip": "10.0.1.3", "port": 8080}, "10.0.1.4"],
}  # fmt: skip


def load_balancer(cached: bool = True) -> LoadBalancer:
    lb = LoadBalancer(LB_CONFIG)
    if not cached:
        lb.flow_cache = None
    # One backend announces itself on the egress arm; the other's MAC is unknown until it
    # answers (the function NATs without a MAC until then, and counts it).
    for ip, mac in list(BACKEND_MACS.items())[:1]:
        garp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=2, hwsrc=mac, psrc=ip, pdst=ip)
        buf = bytearray(bytes(garp))
        lb.process(memoryview(buf), len(buf), Side.EGRESS, 0.0)
    return lb


class LbTalk:
    """A client's TCP connection to the VIP; the server's side answers from whichever backend
    the load balancer sent the SYN to (read off the NATed SYN)."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.rng, self.client, self.sport = rng, f"10.0.0.{1 + n % 50}", 40000 + n
        self.cs, self.ss = rng.randrange(1 << 32), rng.randrange(1 << 32)
        self.backend: tuple[str, int] | None = None
        self.script = ["S", "SA", "A"] + [rng.choice(["c", "s", "s"]) for _ in range(30)]
        self.script += ["FA", "fa", "A"] if rng.random() < 0.6 else ["ra"]

    def next(self) -> tuple[Side, bytes] | None:
        if not self.script:
            return None
        step = self.script.pop(0)
        to_server = step in ("S", "A", "FA", "c")
        data = self.rng.randbytes(self.rng.randrange(0, 1400)) if step in ("c", "s") else b""
        flags = {"c": "PA", "s": "PA", "fa": "FA", "ra": "RA"}.get(step, step)
        if to_server:
            pkt = IP(src=self.client, dst=VIP) / TCP(
                sport=self.sport, dport=80, flags=flags, seq=self.cs, ack=self.ss)
            frame = Ether(src="02:00:00:00:0a:01", dst=VIP_MAC) / pkt / Raw(data)
            self.cs = (self.cs + len(data) + (1 if "S" in flags or "F" in flags else 0)) % (1 << 32)
            return Side.INGRESS, bytes(frame)
        assert self.backend is not None
        ip, port = self.backend
        pkt = IP(src=ip, dst=self.client) / TCP(
            sport=port, dport=self.sport, flags=flags, seq=self.ss, ack=self.cs)
        frame = Ether(src=BACKEND_MACS[ip], dst="02:00:00:00:0a:01") / pkt / Raw(data)
        self.ss = (self.ss + len(data) + (1 if "S" in flags or "F" in flags else 0)) % (1 << 32)
        return Side.EGRESS, bytes(frame)

    def saw(self, out: bytes) -> None:
        if self.backend is None:
            seg = Ether(out)
            self.backend = (seg[IP].dst, seg[TCP].dport)


@pytest.mark.parametrize("seed", range(4))
def test_load_balancer_cache_and_function_agree(seed: int) -> None:
    """Frame by frame the same NATed bytes; afterwards the same connections and counters, the
    backends' packet and byte counts and the frames sent without a backend MAC included."""
    rng = random.Random(seed)
    cached, reference = load_balancer(), load_balancer(cached=False)
    talks = [LbTalk(rng, i) for i in range(20)]
    now = 100.0
    while talks:
        talk = rng.choice(talks)
        step = talk.next()
        if step is None:
            talks.remove(talk)
            continue
        now += rng.choice([0.0001, 0.001, 0.01])
        side, raw = step
        got = through(cached, raw, now, side)
        want = through(reference, raw, now, side)
        assert got == want
        talk.saw(want[1])
    assert table(cached) == table(reference)
    counts = [lb.counters() for lb in (cached, reference)]
    for c in counts:
        del c["table"]["rebuild_ms"]  # how long building the Maglev table took
    assert counts[0] == counts[1]
    hits, nat = cached.flow_cache.hits, reference.counters()["outcomes"]
    assert (nat["nat"] + nat["unnat"]) / 2 < hits < nat["nat"] + nat["unnat"], (hits, nat)
