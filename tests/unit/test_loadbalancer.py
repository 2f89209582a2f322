"""Load balancer: NAT both ways with valid checksums, ARP, stickiness, health checks, fuzz."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from common.contract import probe_ports
from nfv.datapath import rewrite
from nfv.datapath.function import Side, Verdict
from nfv.functions.backends import tcp_syn
from nfv.functions.loadbalancer import OUTCOMES, LoadBalancer
from sdn.policy.load import load_policy
from testing.fuzzing import mutate

VIP, VIP_MAC = "10.0.0.100", "02:00:00:00:01:00"
CLIENT, CLIENT_MAC = "10.0.0.1", "00:00:00:00:00:01"
B1, B2, B3 = "10.0.0.3", "10.0.0.4", "10.0.0.5"
MACS = {B1: "00:00:00:00:00:03", B2: "00:00:00:00:00:04", B3: "00:00:00:00:00:05"}


@pytest.fixture(autouse=True, params=["compiled", "python"])
def nat_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs twice: NAT in C (nfv/datapath/_fast.c) and in the Python reference."""
    if request.param == "python":
        monkeypatch.setattr(rewrite, "fast", None)
    else:
        assert rewrite.fast is not None, "the compiled hot path is missing: run make setup"


def make_lb(**over: Any) -> LoadBalancer:
    cfg: dict[str, Any] = {
        "vip": VIP,
        "vip_mac": VIP_MAC,
        "port": 80,
        "proto": "tcp",
        "backends": [{"ip": B1, "port": 8080, "weight": 1}, B2, B3],
        "table_size": 65537,
    }
    cfg.update(over)
    return LoadBalancer(cfg)


def run(
    lb: LoadBalancer, pkt: Packet | bytes, side: Side, now: float = 1.0
) -> tuple[Verdict, bytes]:
    raw = bytes(pkt)
    buf = bytearray(raw)
    verdict, length = lb.process(memoryview(buf), len(raw), side, now)
    return verdict, bytes(buf[:length])


def teach_macs(lb: LoadBalancer, ips: Iterable[str] = (B1, B2, B3)) -> None:
    """Backends announce themselves on the egress arm (gratuitous ARP)."""
    for ip in ips:
        garp = Ether(src=MACS[ip], dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=2, hwsrc=MACS[ip], psrc=ip, pdst=ip
        )
        assert run(lb, garp, Side.EGRESS)[0] == Verdict.FORWARD


def client_pkt(
    sport: int, flags: str = "S", load: bytes = b"", proto: str = "tcp", dport: int = 80
) -> Packet:
    l4 = (
        TCP(sport=sport, dport=dport, flags=flags, seq=1000)
        if proto == "tcp"
        else UDP(sport=sport, dport=dport)
    )
    pkt = Ether(src=CLIENT_MAC, dst=VIP_MAC) / IP(src=CLIENT, dst=VIP) / l4
    return pkt / Raw(load) if load else pkt


def checksums_valid(raw: bytes) -> bool:
    """Rebuild the IP and L4 checksums with scapy and compare with what the LB wrote."""
    pkt = Ether(raw)
    ip = pkt[IP]
    l4 = ip.payload
    got = (ip.chksum, l4.chksum)
    del ip.chksum
    del l4.chksum
    again = Ether(bytes(pkt))
    return got == (again[IP].chksum, again[IP].payload.chksum)


def test_nat_both_ways_with_valid_checksums() -> None:
    lb = make_lb()
    teach_macs(lb)
    rng = random.Random(7)
    seen = set()
    for sport in range(20000, 20200):
        load = rng.randbytes(rng.randrange(0, 41))  # odd and even lengths
        verdict, out = run(lb, client_pkt(sport, "S", load), Side.INGRESS)
        assert verdict == Verdict.FORWARD
        fwd = Ether(out)
        backend = fwd[IP].dst
        seen.add(backend)
        assert backend in (B1, B2, B3)
        assert fwd[TCP].dport == (8080 if backend == B1 else 80)
        assert fwd.dst == MACS[backend] and fwd.src == CLIENT_MAC
        assert (fwd[IP].src, fwd[TCP].sport, bytes(fwd[TCP].payload)) == (CLIENT, sport, load)
        assert checksums_valid(out)
        reply = (
            Ether(src=MACS[backend], dst=CLIENT_MAC)
            / IP(src=backend, dst=CLIENT)
            / TCP(sport=fwd[TCP].dport, dport=sport, flags="SA", seq=5, ack=1001)
            / Raw(load[::-1])
        )
        verdict, out = run(lb, reply, Side.EGRESS)
        assert verdict == Verdict.FORWARD
        back = Ether(out)
        assert (back[IP].src, back[TCP].sport, back.src) == (VIP, 80, VIP_MAC)
        assert (back[IP].dst, back[TCP].dport, back.dst) == (CLIENT, sport, CLIENT_MAC)
        assert checksums_valid(out)
    assert seen == {B1, B2, B3}
    c = lb.counters()
    assert c["outcomes"]["nat"] == c["outcomes"]["unnat"] == 200
    assert sum(b["connections"] for b in c["backends"].values()) == 200
    assert c["nat_errors"]["mac_unknown"] == 0


def test_udp_nat_and_zero_checksum_kept() -> None:
    lb = make_lb(proto="udp", port=53)
    teach_macs(lb)
    verdict, out = run(lb, client_pkt(3333, proto="udp", dport=53, load=b"query"), Side.INGRESS)
    assert verdict == Verdict.FORWARD and checksums_valid(out)
    fwd = Ether(out)
    raw = Ether(bytes(client_pkt(3334, proto="udp", dport=53, load=b"q")))
    raw[UDP].chksum = 0
    verdict, out = run(lb, raw, Side.INGRESS)
    assert Ether(out)[UDP].chksum == 0 and verdict == Verdict.FORWARD
    reply = (
        Ether(src=MACS[fwd[IP].dst])
        / IP(src=fwd[IP].dst, dst=CLIENT)
        / UDP(sport=fwd[UDP].dport, dport=3333)
        / Raw(b"answer")
    )
    verdict, out = run(lb, reply, Side.EGRESS)
    back = Ether(out)
    assert (back[IP].src, back[UDP].sport) == (VIP, 53) and checksums_valid(out)


def test_answers_arp_for_the_vip_on_both_arms() -> None:
    lb = make_lb()
    for side in Side:
        req = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=CLIENT_MAC, psrc=CLIENT, pdst=VIP
        )
        verdict, out = run(lb, req, side)
        assert verdict == Verdict.BOUNCE
        rep = Ether(out)
        assert (rep.dst, rep.src) == (CLIENT_MAC, VIP_MAC)
        assert (rep[ARP].op, rep[ARP].hwsrc, rep[ARP].psrc) == (2, VIP_MAC, VIP)
        assert (rep[ARP].hwdst, rep[ARP].pdst) == (CLIENT_MAC, CLIENT)
    other = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=CLIENT, pdst=B1)
    assert run(lb, other, Side.INGRESS)[0] == Verdict.FORWARD


def test_other_traffic_passes_untouched() -> None:
    lb = make_lb()
    for pkt, side in (
        (Ether() / IP(src=CLIENT, dst=B1) / TCP(dport=80), Side.INGRESS),
        (client_pkt(1, dport=443), Side.INGRESS),  # VIP, another port
        (client_pkt(1, proto="udp"), Side.INGRESS),  # VIP, another protocol
        (Ether() / IP(src=B1, dst=CLIENT) / TCP(sport=8080, dport=5), Side.EGRESS),  # untracked
    ):
        verdict, out = run(lb, pkt, side)
        assert verdict == Verdict.FORWARD and out == bytes(pkt)


def test_connections_stick_across_table_changes() -> None:
    lb = make_lb(health_check={"interval": 1, "timeout": 1, "fall": 1, "rise": 1})
    teach_macs(lb)
    first: dict[int, str] = {}
    for sport in range(30000, 30600):
        first[sport] = Ether(run(lb, client_pkt(sport, "S"), Side.INGRESS)[1])[IP].dst
    assert set(first.values()) == {B1, B2, B3}
    # B2 leaves the table (health), so Maglev would now send some flows elsewhere.
    lb.backends[1].healthy = False
    lb.rebuild()
    for sport, backend in first.items():
        out = Ether(run(lb, client_pkt(sport, "A", b"data"), Side.INGRESS, 2.0)[1])
        assert out[IP].dst == backend, "an established connection changed backend"
    assert sum(1 for b in first.values() if b == B2) > 100  # these are no longer in the table
    new = Counter(
        Ether(run(lb, client_pkt(s, "S"), Side.INGRESS, 3.0)[1])[IP].dst
        for s in range(40000, 40300)
    )
    assert B2 not in new and set(new) == {B1, B3}


def test_new_flows_follow_weights() -> None:
    lb = make_lb(backends=[{"ip": B1, "weight": 1}, {"ip": B2, "weight": 3}])
    teach_macs(lb, (B1, B2))
    got = Counter(
        Ether(run(lb, client_pkt(s, "S"), Side.INGRESS)[1])[IP].dst for s in range(10000, 14000)
    )
    assert got[B2] / got[B1] == pytest.approx(3, rel=0.15)


def test_all_ports_vip_keeps_the_port() -> None:
    lb = make_lb(port=None, backends=[B1])
    teach_macs(lb, (B1,))
    out = Ether(run(lb, client_pkt(1234, dport=5201), Side.INGRESS)[1])
    assert (out[IP].dst, out[TCP].dport) == (B1, 5201)
    assert list(lb.tick(0.0)) == []  # no port to check the backend on


def test_fragment_and_no_backend_are_dropped_and_counted() -> None:
    lb = make_lb(backends=[B1])
    frag = Ether() / IP(src=CLIENT, dst=VIP, proto=6, frag=10) / Raw(b"x" * 16)
    assert run(lb, frag, Side.INGRESS)[0] == Verdict.DROP
    lb.backends[0].healthy = False
    lb.rebuild()
    assert run(lb, client_pkt(5), Side.INGRESS)[0] == Verdict.DROP
    c = lb.counters()["nat_errors"]
    assert (c["fragment"], c["no_backend"]) == (1, 1)


class FakeBackends:
    """Answers the LB's health probes like a TCP stack would, while `alive`."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb
        self.alive = {B1: True, B2: True, B3: True}
        self.rsts: Counter[str] = Counter()

    def answer(self, frames: Iterable[tuple[Side, bytes]], now: float) -> None:
        for side, raw in frames:
            assert side == Side.EGRESS
            probe = Ether(raw)
            if ARP in probe:
                ip = probe[ARP].pdst
                if self.alive[ip]:
                    rep = Ether(src=MACS[ip], dst=VIP_MAC) / ARP(
                        op=2, hwsrc=MACS[ip], psrc=ip, hwdst=VIP_MAC, pdst=VIP
                    )
                    assert run(self.lb, rep, Side.EGRESS, now)[0] == Verdict.FORWARD
                continue
            assert probe[TCP].flags == "S" and probe[IP].src == VIP and checksums_valid(raw)
            ip = probe[IP].dst
            assert probe.dst == MACS[ip] and probe.src == VIP_MAC
            if not self.alive[ip]:
                continue
            synack = (
                Ether(src=MACS[ip], dst=VIP_MAC)
                / IP(src=ip, dst=VIP)
                / TCP(
                    sport=probe[TCP].dport,
                    dport=probe[TCP].sport,
                    flags="SA",
                    seq=777,
                    ack=probe[TCP].seq + 1,
                )
            )
            verdict, out = run(self.lb, synack, Side.EGRESS, now)
            assert verdict == Verdict.BOUNCE
            rst = Ether(out)
            assert rst[TCP].flags == "R" and rst[TCP].seq == probe[TCP].seq + 1
            assert (rst[IP].src, rst[IP].dst, rst.dst) == (VIP, ip, MACS[ip])
            assert checksums_valid(out)
            self.rsts[ip] += 1


def in_table(lb: LoadBalancer) -> set[str]:
    return {str(IPv4Address(b.ip)) for b in lb.maglev.backends}


def test_health_checks_fall_and_rise_with_default_settings() -> None:
    lb = make_lb()
    fake = FakeBackends(lb)
    now = 0.0
    for _ in range(10):  # learn MACs by ARP, then probe by SYN
        fake.answer(lb.tick(now), now)
        now = round(now + 0.1, 3)
    assert in_table(lb) == {B1, B2, B3}
    assert all(fake.rsts[ip] >= 2 for ip in (B1, B2, B3))
    fake.alive[B2] = False
    died = now
    while B2 in in_table(lb):
        fake.answer(lb.tick(now), now)
        now = round(now + 0.1, 3)
        assert now - died <= 1.0, "a dead backend must leave the table within 1 s"
    assert in_table(lb) == {B1, B3}
    assert lb.counters()["backends"][f"{B2}:*"]["healthy"] is False
    fake.alive[B2] = True
    back = now
    while B2 not in in_table(lb):
        fake.answer(lb.tick(now), now)
        now = round(now + 0.1, 3)
        assert now - back <= 1.0
    assert in_table(lb) == {B1, B2, B3}


def test_health_state_machine_counts_rst_as_failure() -> None:
    lb = make_lb(
        backends=[{"ip": B1, "port": 8080}],
        health_check={"interval": "1s", "timeout": "500ms", "fall": 3, "rise": 2},
    )
    teach_macs(lb, (B1,))
    for i in range(3):
        probe = Ether(next(iter(lb.tick(float(i))))[1])
        rst = (
            Ether(src=MACS[B1], dst=VIP_MAC)
            / IP(src=B1, dst=VIP)
            / TCP(sport=8080, dport=probe[TCP].sport, flags="RA", ack=probe[TCP].seq + 1)
        )
        assert run(lb, rst, Side.EGRESS, i + 0.01)[0] == Verdict.DROP
        assert lb.backends[0].healthy is (i < 2)
    lb.tick(3.0)
    assert lb.maglev.lookup(1) is None
    assert lb.counters()["backends"][f"{B1}:8080"]["probes_failed"] == 3


def test_probe_frame_is_a_valid_syn() -> None:
    raw = tcp_syn(b"\x00" * 5 + b"\x03", b"\x02" * 6, 0x0A000064, 0x0A000003, 40000, 80, 12345)
    pkt = Ether(raw)
    assert pkt[TCP].flags == "S" and pkt[TCP].seq == 12345 and checksums_valid(raw)




@pytest.mark.parametrize("replica", [0, 1, 2])
def test_replicas_check_from_disjoint_source_ports(replica: int) -> None:
    """The switches steer a check's answer to the replica whose port bits it carries
    (sdn.compile.chains); each replica keeps to its own."""
    lb = make_lb(replica=replica, replicas=3)
    teach_macs(lb)
    value, mask = probe_ports(replica, 3)
    assert mask == 3
    sports = {Ether(raw)[TCP].sport for t in range(12) for _, raw in lb.tick(t * 0.25)}
    assert len(sports) > 12 and all(p & mask == value for p in sports), sports


def test_fuzz_never_raises_and_accounts_for_every_frame() -> None:
    lb = make_lb(health_check={"interval": 1000, "timeout": 1000})  # nobody answers probes here
    teach_macs(lb)
    templates = [
        bytes(p)
        for p in (
            client_pkt(1, "S"),
            client_pkt(2, "A", b"x" * 10),
            client_pkt(3, "FA"),
            client_pkt(4, proto="udp"),
            Ether() / IP(src=B1, dst=CLIENT) / TCP(sport=8080, dport=1, flags="SA"),
            Ether() / IP(src=B2, dst=VIP) / TCP(sport=80, dport=32768, flags="SA"),
            Ether() / ARP(op=1, psrc=CLIENT, pdst=VIP),
            Ether(dst=VIP_MAC) / ARP(op=2, psrc=B1, hwsrc=MACS[B1]),
            Ether() / IP(src=CLIENT, dst=VIP, frag=5, proto=6) / Raw(b"y" * 20),
        )
    ]
    rng = random.Random(99)
    frames = 100_000
    before = lb.frames
    for i in range(frames):
        raw = mutate(rng, templates)
        buf = bytearray(raw) + bytearray(rng.randrange(0, 4))
        verdict, length = lb.process(memoryview(buf), len(raw), Side(i & 1), i * 1e-4)
        assert verdict in (Verdict.FORWARD, Verdict.DROP, Verdict.BOUNCE)
        assert 0 < length <= len(buf) or verdict == Verdict.DROP
        if i % 1000 == 0:
            lb.tick(i * 1e-4)
    c = lb.counters()
    assert c["frames"] == before + frames
    assert sum(c["outcomes"].values()) == before + frames
    assert set(c["outcomes"]) == set(OUTCOMES)
    assert c["outcomes"]["malformed"] > 10_000 and c["outcomes"]["nat"] > 1_000


def test_backends_sharing_a_host_all_learn_its_mac() -> None:
    lb = make_lb(backends=[{"ip": B1, "port": 8080}, {"ip": B1, "port": 8081}])
    probes = [Ether(raw) for _, raw in lb.tick(0.0)]
    assert [p[ARP].pdst for p in probes] == [B1, B1]  # MAC unknown: ask for it first
    teach_macs(lb, (B1,))
    assert all(b["mac"] == MACS[B1] for b in lb.counters()["backends"].values())
    lb.tick(0.5)  # the answered ARP probes are settled, not failures
    assert all(b["probes_failed"] == 0 for b in lb.counters()["backends"].values())
    ports = {Ether(raw)[TCP].dport for _, raw in lb.tick(1.0)}
    assert ports == {8080, 8081}


def test_backend_macs_are_asked_for_without_health_checks():
    """A UDP VIP has no health checks, yet its backends' MACs must still be learned."""
    from scapy.layers.l2 import ARP, Ether

    from nfv.datapath.function import Side
    from nfv.functions.loadbalancer import LoadBalancer

    lb = LoadBalancer({"vip": "10.9.0.100", "port": 53, "proto": "udp",
                       "backends": ["10.9.0.5", "10.9.0.6"]})
    frames = list(lb.tick(100.0))
    asked = {Ether(f)[ARP].pdst for side, f in frames if side == Side.EGRESS}
    assert asked == {"10.9.0.5", "10.9.0.6"}
    assert list(lb.tick(100.01)) == []  # once per interval, not per tick


def test_a_standalone_load_balancer_owns_the_mac_the_controller_answers_for_its_vip() -> None:
    """Without `vip_mac`, `sdnctl vnf run` and the controller derive the same MAC."""
    lb = make_lb(vip_mac=None, name="web-lb")
    policy_lb = load_policy(
        "version: 1\nvnfs: {web-lb: {type: loadbalancer, switch: s1, vip: 10.0.0.100,"
        " backends: [10.0.0.3]}}")
    assert lb.vip_mac == bytes.fromhex(policy_lb.vnfs["web-lb"].mac_for("web-lb").replace(":", ""))
