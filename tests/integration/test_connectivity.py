"""Loop-safe connectivity on every topology: all pairs reach each other exactly once."""

from __future__ import annotations

import time

import pytest
from mininet.topo import Topo
from mininet.topolib import TorusTopo

from testing.harness import (
    Capture,
    dump_flows,
    iperf3_tcp,
    network,
    ping,
    ping_all,
    scapy_send,
    wait_until,
)
from topologies.sdn_topos import (
    FatTreeTopo,
    LinearTopo,
    MeshTopo,
    RingTopo,
    TreeTopo,
)

TOPOLOGIES = {
    # no neighbour sends it LLDP: its own probe through its tables shows its ports are edge
    "lone_switch": lambda: LinearTopo(n=1, hosts_per_switch=3),
    "linear3": lambda: LinearTopo(n=3),
    "tree2x2": lambda: TreeTopo(depth=2, fanout=2),
    "ring4": lambda: RingTopo(n=4),
    "mesh4": lambda: MeshTopo(n=4),
    "fattree4": lambda: FatTreeTopo(k=4),
    "torus3x3": lambda: TorusTopo(3, 3),
}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_all_pairs_reach_each_other_once(name, controller):
    topo: Topo = TOPOLOGIES[name]()
    with network(topo, controller) as net:
        failures = ping_all(net)
        assert failures == [], f"{len(failures)} pairs failed on {name}: {failures[:5]}"
        topo_view = controller.get("/v1/topology")
        assert len(topo_view["hosts"]) == len(net.hosts)


def test_broadcast_seen_once_per_host_on_a_ring(controller, tmp_path):
    """An ARP request for an unknown address and a data-plane broadcast each reach every
    other host exactly once: flooding follows a tree, never the ring."""
    with network(RingTopo(n=4), controller) as net:
        h1, *others = net.hosts
        captures = [Capture(h, "arp or udp port 9999", tmp_path / f"{h.name}.pcap")
                    for h in others]
        scapy_send(h1, (
            f"sendp(Ether(src='{h1.MAC()}', dst='ff:ff:ff:ff:ff:ff')/"
            f"ARP(hwsrc='{h1.MAC()}', psrc='{h1.IP()}', pdst='10.0.0.200'), "
            f"iface='{h1.defaultIntf().name}')\n"
            f"sendp(Ether(src='{h1.MAC()}', dst='ff:ff:ff:ff:ff:ff')/"
            f"IP(src='{h1.IP()}', dst='255.255.255.255')/UDP(dport=9999)/b'x', "
            f"iface='{h1.defaultIntf().name}')"))
        for host, cap in zip(others, captures, strict=True):
            packets = cap.packets(timeout=1.5)
            arps = [p for p in packets if p.haslayer("ARP") and p["ARP"].pdst == "10.0.0.200"]
            udps = [p for p in packets if p.haslayer("UDP") and p["UDP"].dport == 9999]
            assert len(arps) == 1, f"{host.name} saw the ARP request {len(arps)} times"
            assert len(udps) == 1, f"{host.name} saw the broadcast {len(udps)} times"


def test_switches_answer_arp_for_known_hosts(controller, tmp_path):
    """With empty neighbour caches, h1's request for h3 is answered by h1's own switch,
    and goes on to h3 as unicast, so h3 answers h1's first packet without asking for h1
    itself; the controller sees no ARP at all."""
    arp_packet_ins = 'sdn_packet_in_total{kind="arp"}'
    with network(RingTopo(n=4), controller) as net:
        assert ping_all(net) == []  # the controller knows every host and its address
        h1, h3 = net.get("h1", "h3")
        for host in (h1, h3):
            host.cmd("ip neigh flush all")
        captures = {h: Capture(h, "arp", tmp_path / f"{h.name}.pcap") for h in (h1, h3)}
        before = controller.metric(arp_packet_ins)
        assert ping(h1, h3.IP(), count=1).received == 1
        at_h1, at_h3 = (captures[h].packets(timeout=1) for h in (h1, h3))
        replies = [p["ARP"] for p in at_h1 if p["ARP"].op == 2]
        assert replies and {(a.hwsrc, a.psrc, a.hwdst, a.pdst) for a in replies} == {
            (h3.MAC(), h3.IP(), h1.MAC(), h1.IP())}, replies  # the switch's, then h3's own
        told = [p for p in at_h3 if p["ARP"].op == 1 and p["ARP"].psrc == h1.IP()]
        assert [(p.dst, p["ARP"].hwsrc, p["ARP"].pdst) for p in told] == [
            (h3.MAC(), h1.MAC(), h3.IP())], at_h3
        asked = [p for p in at_h3 if p["ARP"].op == 1 and p["ARP"].psrc == h3.IP()]
        assert asked == [], f"h3 had to ask for h1: {asked}"
        assert controller.metric(arp_packet_ins) == before


def test_tcp_between_fat_tree_pods(controller):
    with network(FatTreeTopo(k=4), controller) as net:
        first_pod, last_pod = net.get("h1"), net.get("h16")
        # In 2 of 5 full-suite runs (never alone) the very first two pings right after
        # start-up were lost; not understood yet. The first packet is tested by the
        # all-pairs tests; here the pods must reach each other before TCP is measured.
        wait_until(lambda: ping(first_pod, last_pod.IP()).received == 1, 15,
                   what="h1 reaches h16")
        assert ping(first_pod, last_pod.IP(), count=2).received == 2
        bps = iperf3_tcp(first_pod, last_pod, seconds=2)
        assert bps > 10e6, f"TCP across pods moved only {bps / 1e6:.1f} Mbit/s"


def test_flow_tables_are_stable(controller):
    """Once traffic has flowed, nothing churns: tables and FlowMod counts stay put."""
    with network(RingTopo(n=4), controller) as net:
        assert ping_all(net) == []
        time.sleep(1.5)
        before = {s.name: dump_flows(s) for s in net.switches}
        mods_before = controller.metric("sdn_flow_mods_total")
        time.sleep(3)
        assert ping_all(net) == []
        after = {s.name: dump_flows(s) for s in net.switches}
        assert before == after
        assert controller.metric("sdn_flow_mods_total") == mods_before
