"""Path computation over the switch graph: next-hop sets, backups, the flood tree.

Routes are computed per destination switch (every host behind one switch shares them):
one Dijkstra from the destination gives each switch its equal-cost next hops, and the
same distances pick a backup next hop for fast failover.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

EPSILON = 1e-9


@dataclass(frozen=True)
class Hops:
    """How one switch reaches one destination switch."""

    primary: tuple[int, ...]  # neighbour dpids on shortest paths (ECMP set), sorted
    backup: int | None  # neighbour to use when every primary is gone
    loop_free: bool  # the backup never sends the packet straight back to us


def distances_to(graph: nx.Graph, dst: int) -> dict[int, float]:
    return nx.single_source_dijkstra_path_length(graph, dst, weight="weight")


def next_hops(graph: nx.Graph, dst: int, *, ecmp: bool = True) -> dict[int, Hops]:
    """Primary and backup next hops toward `dst` for every switch that can reach it."""
    dist = distances_to(graph, dst)
    primaries: dict[int, tuple[int, ...]] = {}
    for node, d in dist.items():
        if node == dst:
            continue
        equal = sorted(
            n for n in graph.neighbors(node)
            if n in dist and abs(graph[node][n]["weight"] + dist[n] - d) < EPSILON
        )
        primaries[node] = tuple(equal if ecmp else equal[:1])
    hops: dict[int, Hops] = {}
    for node, primary in primaries.items():
        backup, loop_free = _backup(graph, dist, primaries, node)
        hops[node] = Hops(primary, backup, loop_free)
    return hops


def _backup(
    graph: nx.Graph, dist: dict[int, float], primaries: dict[int, tuple[int, ...]], node: int
) -> tuple[int | None, bool]:
    """Choose the neighbour to hand packets to when all primaries are gone. Best is a
    loop-free alternate (its shortest paths avoid us); next, a neighbour that routes via us
    but has other equal-cost next hops, which its U-turn rule then uses; last, any other
    neighbour."""
    candidates = []
    for n in graph.neighbors(node):
        if n in primaries[node] or n not in dist:
            continue
        w = graph[node][n]["weight"]
        theirs = primaries.get(n, ())
        if node not in theirs:
            rank = 0
        elif len(theirs) > 1:
            rank = 1
        else:
            rank = 2
        candidates.append((rank, w + dist[n], n))
    if not candidates:
        return None, False
    rank, _, best = min(candidates)
    return best, rank == 0


def spanning_tree(graph: nx.Graph) -> nx.Graph:
    """Minimum spanning forest, deterministic for equal weights (ties by dpid)."""
    ordered = nx.Graph()
    ordered.add_nodes_from(sorted(graph.nodes))
    for a, b, data in sorted(graph.edges(data=True), key=lambda e: (min(e[:2]), max(e[:2]))):
        ordered.add_edge(a, b, **data)
    return nx.minimum_spanning_tree(ordered, weight="weight", algorithm="kruskal")


def shortest_path(graph: nx.Graph, src: int, dst: int) -> list[int]:
    """The switch path the per-hop rules give when ECMP is off."""
    hops = next_hops(graph, dst, ecmp=False)
    if src != dst and src not in hops:
        raise nx.NetworkXNoPath(f"no path from {src} to {dst}")
    path = [src]
    while path[-1] != dst:
        path.append(hops[path[-1]].primary[0])
    return path
