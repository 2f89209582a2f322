"""Path computation over the switch graph: next-hop sets, backups, the flood tree.

Routes are computed per destination switch (every host behind one switch shares them):
one Dijkstra from the destination gives each switch its equal-cost next hops, and the
same distances pick a backup next hop for fast failover. `DestinationRoutes` keeps that
result and repairs it when links come and go, touching only the switches whose distance
or next hops can change, so a link failure in a large network costs milliseconds.

`PyDestinationRoutes` is the reference; `sdn.compile._routes` (built by `make setup`) is
the same algorithm in C over arrays, used where it is built unless $SDN_PURE_PYTHON is
set. Both read the graph as `route_graph(adj)` gives it.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import networkx as nx

EPSILON = 1e-9
COST_SCALE = 1e9  # backup costs compare rounded to this, so float summation order cannot matter


class Hops(NamedTuple):
    """How one switch reaches one destination switch (a tuple: a repair makes thousands)."""

    primary: tuple[int, ...]  # neighbour dpids on shortest paths (ECMP set), sorted
    backup: int | None  # neighbour to use when every primary is gone
    loop_free: bool  # the backup never sends the packet straight back to us


Adjacency = Mapping[int, Mapping[int, float]]
"""switch -> neighbour -> link weight: what path computation reads, cheaper than networkx."""


def adjacency(graph: nx.Graph) -> dict[int, dict[int, float]]:
    return {n: {m: data["weight"] for m, data in nbrs.items()} for n, nbrs in graph.adjacency()}


def distances_to(adj: Adjacency, dst: int) -> dict[int, float]:
    """Dijkstra from `dst`; a distance is always its predecessor's plus one weight, the
    same sum the incremental repairs form."""
    dist: dict[int, float] = {}
    heap = [(0.0, dst)]
    while heap:
        d, node = heapq.heappop(heap)
        if node in dist:
            continue
        dist[node] = d
        for n, weight in adj[node].items():
            if n not in dist:
                heapq.heappush(heap, (d + weight, n))
    return dist


def next_hops(graph: nx.Graph, dst: int, *, ecmp: bool = True) -> dict[int, Hops]:
    """Primary and backup next hops toward `dst` for every switch that can reach it."""
    return dict(DestinationRoutes(route_graph(adjacency(graph)), dst, ecmp=ecmp).hops)


class PyDestinationRoutes:
    """Distances and next hops of every switch toward one destination switch.

    After the adjacency loses edges call `lose_edges`, after it gains edges `gain_edges`
    (a changed weight is a loss then a gain). Only switches near the change are
    recomputed; `take_changed` then says whose `Hops` differ from before. The result is
    always what a fresh `DestinationRoutes` on the new graph would hold. Weights must be
    positive.
    """

    def __init__(self, adj: Adjacency, dst: int, *, ecmp: bool = True) -> None:
        self.dst, self.ecmp = dst, ecmp
        self.dist: dict[int, float] = distances_to(adj, dst)
        self.primary: dict[int, tuple[int, ...]] = {
            n: self._primary_of(adj, n) for n in self.dist if n != dst
        }
        self.hops: dict[int, Hops] = {n: self._hops_of(adj, n) for n in self.primary}
        self._before: dict[int, Hops | None] = {}

    def take_changed(self) -> dict[int, Hops | None]:
        """Switches whose hops changed since the last call, with their previous hops
        (None: it could not reach the destination before)."""
        changed = {n: old for n, old in self._before.items() if self.hops.get(n) != old}
        self._before = {}
        return changed

    def lose_edges(self, adj: Adjacency, edges: Iterable[tuple[int, int, float]]) -> None:
        """`adj` no longer has these (u, v, old weight) edges."""
        dist = self.dist
        seeds, touched = [], set()
        for u, v, weight in edges:
            touched |= {u, v}
            for a, b in ((u, v), (v, u)):
                if a in dist and b in dist and abs(weight + dist[b] - dist[a]) < EPSILON:
                    seeds.append((dist[a], a))
        affected = self._affected(adj, seeds)
        before = {node: dist[node] for node in affected}
        self._resettle(adj, affected)
        self._repair(adj, touched, before)

    def gain_edges(self, adj: Adjacency, edges: Iterable[tuple[int, int]]) -> None:
        """`adj` has these (u, v) edges now, with their weights."""
        dist = self.dist
        heap, touched = [], set()
        for u, v in edges:
            touched |= {u, v}
            weight = adj[u][v]
            for a, b in ((u, v), (v, u)):
                if b in dist and (a not in dist or dist[b] + weight < dist[a] - EPSILON):
                    heap.append((dist[b] + weight, a))
        heapq.heapify(heap)
        moved: dict[int, float | None] = {}
        while heap:
            d, node = heapq.heappop(heap)
            if node in dist and d >= dist[node] - EPSILON:
                continue
            moved.setdefault(node, dist.get(node))
            dist[node] = d
            for n, weight in adj[node].items():
                nd = d + weight
                if n not in dist or nd < dist[n] - EPSILON:
                    heapq.heappush(heap, (nd, n))
        self._repair(adj, touched, moved)

    def _affected(self, adj: Adjacency, seeds: list[tuple[float, int]]) -> set[int]:
        """Switches every shortest path of which used a lost edge: their distance grows.
        Visited nearest first, so a switch is judged after all its downstream ones."""
        dist, affected = self.dist, set()
        heapq.heapify(seeds)
        while seeds:
            d, node = heapq.heappop(seeds)
            if node in affected or node == self.dst:
                continue
            if any(n in dist and n not in affected and abs(weight + dist[n] - d) < EPSILON
                   for n, weight in adj[node].items()):
                continue
            affected.add(node)
            for n, weight in adj[node].items():
                if n in dist and n not in affected and abs(weight + d - dist[n]) < EPSILON:
                    heapq.heappush(seeds, (dist[n], n))
        return affected

    def _resettle(self, adj: Adjacency, affected: set[int]) -> None:
        """Dijkstra over the affected switches only, starting from their unaffected
        neighbours; those it cannot reach are cut off from the destination."""
        dist = self.dist
        for node in affected:
            del dist[node]
        heap = []
        for node in affected:
            costs = [weight + dist[n] for n, weight in adj[node].items() if n in dist]
            if costs:
                heap.append((min(costs), node))
        heapq.heapify(heap)
        while heap:
            d, node = heapq.heappop(heap)
            if node in dist:
                continue
            dist[node] = d
            for n, weight in adj[node].items():
                if n in affected and n not in dist:
                    heapq.heappush(heap, (d + weight, n))

    def _repair(self, adj: Adjacency, touched: set[int],
                moved: Mapping[int, float | None]) -> None:
        """Recompute next hops where they can have changed: at the ends of changed edges,
        and where a switch's distance moved (`moved`: its distance before, None when it
        had none) unlike a neighbour's, at both; then backups wherever a neighbour's
        distance or primaries (as seen by `_backup`) changed. A switch that moved as far
        as all its neighbours compares the same costs as before (a link loss shifts whole
        regions behind it alike) and keeps its hops."""
        dist, primary = self.dist, self.primary
        shifts = {node: None if old is None or node not in dist else dist[node] - old
                  for node, old in moved.items()}
        candidates = set(touched)
        for node, mine in shifts.items():
            for n in adj[node]:
                theirs = shifts.get(n, 0.0)
                if mine is None or theirs is None or abs(mine - theirs) >= EPSILON:
                    candidates.add(node)
                    candidates.add(n)
        backups = set(candidates)
        for node in candidates:
            old = primary.get(node)
            new = self._primary_of(adj, node) if node in dist and node != self.dst else None
            if new == old:
                continue
            if new is None:
                del primary[node]
            else:
                primary[node] = new
            old_set, new_set = set(old or ()), set(new or ())
            backups |= (old_set | new_set) if (len(old_set) > 1) != (len(new_set) > 1) \
                else (old_set ^ new_set)
        for node in backups:
            new_hops = self._hops_of(adj, node) if node in primary else None
            old_hops = self.hops.get(node)
            if new_hops == old_hops:
                continue
            self._before.setdefault(node, old_hops)
            if new_hops is None:
                del self.hops[node]
            else:
                self.hops[node] = new_hops

    def _primary_of(self, adj: Adjacency, node: int) -> tuple[int, ...]:
        dist, d = self.dist, self.dist[node]
        equal = sorted(n for n, weight in adj[node].items()
                       if n in dist and abs(weight + dist[n] - d) < EPSILON)
        return tuple(equal if self.ecmp else equal[:1])

    def _hops_of(self, adj: Adjacency, node: int) -> Hops:
        backup, loop_free = _backup(adj, self.dist, self.primary, node)
        return Hops(self.primary[node], backup, loop_free)


def _backup(
    adj: Adjacency, dist: dict[int, float], primaries: dict[int, tuple[int, ...]], node: int
) -> tuple[int | None, bool]:
    """Choose the neighbour to hand packets to when all primaries are gone. Best is a
    loop-free alternate (its shortest paths avoid us); next, a neighbour that routes via us
    but has other equal-cost next hops, which its U-turn rule then uses; last, any other
    neighbour."""
    candidates = []
    mine = primaries[node]
    for n, weight in adj[node].items():
        if n in mine or n not in dist:
            continue
        theirs = primaries.get(n, ())
        if node not in theirs:
            rank = 0
        elif len(theirs) > 1:
            rank = 1
        else:
            rank = 2
        candidates.append((rank, round((weight + dist[n]) * COST_SCALE), n))
    if not candidates:
        return None, False
    rank, _, best = min(candidates)
    return best, rank == 0


def tree_edges(weights: Mapping[tuple[int, int], float]) -> set[tuple[int, int]]:
    """Kruskal over (lower, higher) dpid pairs: the minimum spanning forest that is unique
    once ties are broken by (weight, lower dpid, higher dpid)."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent.get(node, node) != node:
            parent[node] = parent.get(parent[node], parent[node])
            node = parent[node]
        return node

    tree = set()
    for _, a, b in sorted((w, a, b) for (a, b), w in weights.items()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
            tree.add((a, b))
    return tree


def shortest_path(graph: nx.Graph, src: int, dst: int) -> list[int]:
    """The switch path the per-hop rules give when ECMP is off."""
    hops = next_hops(graph, dst, ecmp=False)
    if src != dst and src not in hops:
        raise nx.NetworkXNoPath(f"no path from {src} to {dst}")
    path = [src]
    while path[-1] != dst:
        path.append(hops[path[-1]].primary[0])
    return path


try:
    if os.environ.get("SDN_PURE_PYTHON"):
        raise ImportError("SDN_PURE_PYTHON is set")
    from sdn.compile import _routes
except ImportError as exc:
    _routes = None
    IMPLEMENTATION = f"Python ({exc})"
else:
    IMPLEMENTATION = "C (sdn.compile._routes)"


def route_graph(adj: Adjacency) -> object:
    """The graph as `DestinationRoutes` reads it: for the C one indexed anew (build it
    after each change of `adj`), for the Python one `adj` itself."""
    return adj if _routes is None else _routes.RouteGraph(adj)


if _routes is None:
    DestinationRoutes: type = PyDestinationRoutes
else:
    _routes.init(Hops)
    DestinationRoutes = _routes.DestinationRoutes
