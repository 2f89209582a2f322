"""A sparse ISP-like backbone of 60 switches: every pair reaches every other over the
shortest path, no link flaps, and a host that moves keeps its address."""

from __future__ import annotations

import json
import random
from itertools import combinations

import networkx as nx

from testing.harness import network, ping, unreachable, wait_until
from topologies.sdn_topos import IspTopo, isp_links

SWITCHES, SEED = 60, 3
FLAPS = ('sdn_link_events_total{event="timed out"}',
         'sdn_link_events_total{event="port down"}')


def reach_all(net, pairs: list[tuple[int, int]], rounds: int) -> list[tuple[int, int]]:
    """Pairs still unreachable after `rounds` of pinging those that have not answered."""
    waiting = pairs
    for _ in range(rounds):
        waiting = unreachable(net, waiting)
        if not waiting:
            break
    return waiting


def test_a_60_switch_backbone_converges_on_shortest_paths_without_flaps(controller):
    graph = nx.Graph((a + 1, b + 1) for a, b in isp_links(SWITCHES, SEED))
    with network(IspTopo(n=SWITCHES, seed=SEED), controller) as net:
        pairs = list(combinations(range(1, SWITCHES + 1), 2))
        assert reach_all(net, pairs, 10) == []

        for a, b in random.Random(SEED).sample(pairs, 20):
            shown = controller.sdnctl("path", f"10.0.0.{a}", f"10.0.0.{b}", "-o", "json")
            assert shown.returncode == 0, shown.stderr
            hops = json.loads(shown.stdout)["hops"]
            assert len(hops) == nx.shortest_path_length(graph, a, b) + 1
            assert (hops[0]["name"], hops[-1]["name"]) == (f"s{a}", f"s{b}")

        h1, far = net.get("h1"), max(graph.nodes, key=lambda n: nx.shortest_path_length(
            graph, 1, n))
        move(net, h1, net.get("s1"), net.get(f"s{far}"))
        wait_until(lambda: ping(h1, net.get("h2").IP()).received == 1, 15,
                   what="h1 answering from its new place")
        path = controller.get("/v1/path", src="10.0.0.2", dst="10.0.0.1")
        assert path["hops"][-1]["name"] == f"s{far}"
        assert unreachable(net, [(1, b) for b in range(2, SWITCHES + 1, 7)]) == []
        assert sum(controller.metric(name) for name in FLAPS) == 0


def move(net, host, old_switch, new_switch) -> None:
    """Unplug `host` from `old_switch` and plug it into `new_switch`, same MAC and IP."""
    mac, ip = host.MAC(), host.IP()
    net.delLinkBetween(host, old_switch)
    link = net.addLink(host, new_switch)
    new_switch.attach(link.intf2.name)
    link.intf1.setMAC(mac)
    host.setIP(ip, 8, intf=link.intf1)
    host.cmd("ethtool -K", link.intf1.name, "tx off")
