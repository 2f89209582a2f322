"""Mininet topologies for experiments against the controller.

Self-contained on purpose: `mn --custom topologies/sdn_topos.py --topo NAME,ARGS` executes
this file on its own, so it may import nothing but Mininet.

Switches are named s1, s2, ... (Mininet derives dpid N from sN) and hosts h1, h2, ...
(IP 10.0.0.N). Every topology takes `hosts_per_switch` where hosts hang off edge switches.
"""

from __future__ import annotations

import math
import random
from collections import deque
from itertools import combinations, pairwise

from mininet.node import Host
from mininet.topo import Topo


class OffloadOffHost(Host):
    """A host with TX checksum offload off: Open vSwitch's userspace datapath forwards
    veth frames with unfilled TCP checksums otherwise, and TCP stalls."""

    def config(self, **params):
        result = super().config(**params)
        for intf in self.intfList():
            self.cmd("ethtool -K", intf.name, "tx off")
        return result


class _Numbered(Topo):
    """Hands out s1.. and h1.. names in creation order."""

    def build(self, *args, **kwargs) -> None:  # pragma: no cover - replaced by subclasses
        raise NotImplementedError

    def _switch(self) -> str:
        self._switches = getattr(self, "_switches", 0) + 1
        return self.addSwitch(f"s{self._switches}", protocols="OpenFlow13")

    def _host(self, switch: str) -> str:
        self._hosts = getattr(self, "_hosts", 0) + 1
        name = self.addHost(f"h{self._hosts}", cls=OffloadOffHost)
        self.addLink(name, switch)
        return name


class LinearTopo(_Numbered):
    """n switches in a line, `hosts_per_switch` hosts on each."""

    def build(self, n: int = 3, hosts_per_switch: int = 1) -> None:
        switches = [self._switch() for _ in range(n)]
        for a, b in pairwise(switches):
            self.addLink(a, b)
        for sw in switches:
            for _ in range(hosts_per_switch):
                self._host(sw)


class TreeTopo(_Numbered):
    """A tree of switches `depth` levels deep with `fanout` children each; hosts at leaves."""

    def build(self, depth: int = 2, fanout: int = 2, hosts_per_switch: int = 1) -> None:
        level = [self._switch()]
        for _ in range(depth - 1):
            children = []
            for parent in level:
                for _ in range(fanout):
                    child = self._switch()
                    self.addLink(parent, child)
                    children.append(child)
            level = children
        for leaf in level:
            for _ in range(hosts_per_switch):
                self._host(leaf)


class RingTopo(_Numbered):
    """n switches in a ring: every pair of hosts has two disjoint paths."""

    def build(self, n: int = 4, hosts_per_switch: int = 1) -> None:
        switches = [self._switch() for _ in range(n)]
        for i, sw in enumerate(switches):
            self.addLink(sw, switches[(i + 1) % n])
        for sw in switches:
            for _ in range(hosts_per_switch):
                self._host(sw)


class MeshTopo(_Numbered):
    """n switches, each linked to every other: the most redundant paths."""

    def build(self, n: int = 4, hosts_per_switch: int = 1) -> None:
        switches = [self._switch() for _ in range(n)]
        for a, b in combinations(switches, 2):
            self.addLink(a, b)
        for sw in switches:
            for _ in range(hosts_per_switch):
                self._host(sw)


class FatTreeTopo(_Numbered):
    """The k-ary fat tree (Al-Fares et al.): (k/2)^2 core, k pods of k/2 aggregation and
    k/2 edge switches, k/2 hosts per edge switch. Switches are numbered core first, then
    per pod aggregation then edge; hosts pod by pod."""

    def build(self, k: int = 4, hosts_per_switch: int | None = None) -> None:
        if k < 2 or k % 2:
            raise ValueError("fat-tree k must be an even number >= 2")
        half = k // 2
        per_edge = half if hosts_per_switch is None else hosts_per_switch
        cores = [self._switch() for _ in range(half * half)]
        for _pod in range(k):
            aggs = [self._switch() for _ in range(half)]
            edges = [self._switch() for _ in range(half)]
            for i, agg in enumerate(aggs):
                for j in range(half):
                    self.addLink(agg, cores[i * half + j])
                for edge in edges:
                    self.addLink(agg, edge)
            for edge in edges:
                for _ in range(per_edge):
                    self._host(edge)


class DumbbellTopo(_Numbered):
    """Two switches joined by one bottleneck link, `n` hosts on each side."""

    def build(self, n: int = 2) -> None:
        left, right = self._switch(), self._switch()
        self.addLink(left, right)
        for sw in (left, right):
            for _ in range(n):
                self._host(sw)


def isp_links(n: int, seed: int, degree: float = 2.5) -> list[tuple[int, int]]:
    """Links (0-based switch indices) of a sparse backbone shaped like published ISP maps:
    `n` sites at seeded random points in a plane, joined by their Euclidean minimum
    spanning tree (long chains), plus shortcuts between sites that are near in the plane
    but far apart in hops, at most one per site, until the mean degree is `degree`.
    Diameters come out at 13 hops for 50 switches, 20 for 100, 27-29 for 200."""
    rng = random.Random(seed)
    points = [(rng.random(), rng.random()) for _ in range(n)]

    def distance(a: int, b: int) -> float:
        return math.dist(points[a], points[b])

    links: list[tuple[int, int]] = []
    nearest = {v: (distance(0, v), 0) for v in range(1, n)}  # Prim's algorithm
    while nearest:
        v = min(nearest, key=lambda k: nearest[k][0])
        links.append((nearest.pop(v)[1], v))
        for w in nearest:
            if distance(v, w) < nearest[w][0]:
                nearest[w] = (distance(v, w), v)
    neighbours: dict[int, set[int]] = {v: set() for v in range(n)}
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    tree_hops = [_hops_from(neighbours, v) for v in range(n)]
    near_pairs = sorted((distance(a, b), a, b) for a, b in combinations(range(n), 2))[:n * 6]
    near_pairs.sort(key=lambda c: -tree_hops[c[1]][c[2]] / (c[0] + 0.05))
    with_shortcut: set[int] = set()
    for _, a, b in near_pairs:
        if len(links) >= round(n * degree / 2):
            break
        if b in neighbours[a] or a in with_shortcut or b in with_shortcut:
            continue
        links.append((a, b))
        neighbours[a].add(b)
        neighbours[b].add(a)
        with_shortcut |= {a, b}
    return links


def _hops_from(neighbours: dict[int, set[int]], source: int) -> dict[int, int]:
    hops = {source: 0}
    queue = deque([source])
    while queue:
        v = queue.popleft()
        for w in neighbours[v]:
            if w not in hops:
                hops[w] = hops[v] + 1
                queue.append(w)
    return hops


class IspTopo(_Numbered):
    """A seeded ISP-like backbone of `n` switches (see isp_links), hosts on every switch."""

    def build(self, n: int = 50, seed: int = 1, hosts_per_switch: int = 1) -> None:
        switches = [self._switch() for _ in range(n)]
        for a, b in isp_links(n, seed):
            self.addLink(switches[a], switches[b])
        for sw in switches:
            for _ in range(hosts_per_switch):
                self._host(sw)


hosts = {"offload-off": OffloadOffHost}

topos = {
    "linear": LinearTopo,
    "tree": TreeTopo,
    "ring": RingTopo,
    "mesh": MeshTopo,
    "fattree": FatTreeTopo,
    "dumbbell": DumbbellTopo,
    "isp": IspTopo,
}
