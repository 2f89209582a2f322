"""Graphs for the flow simulator (sdn.explain.flowsim) without Mininet: snapshots with
Mininet's port numbering, and the fat tree."""

from __future__ import annotations

from sdn.model.topology import Link, Snapshot


def snapshot_from_graph(graph, hosts_per_switch: int = 1) -> Snapshot:
    """Number ports like Mininet does (links first, then hosts) and put hosts on every switch
    (or on the nodes listed in the graph attribute 'edge', when present)."""
    from sdn.model.topology import Host

    next_port = {n: 1 for n in graph.nodes}
    links = []
    for a, b in sorted(graph.edges):
        links.append(Link.between(a, next_port[a], b, next_port[b]))
        next_port[a] += 1
        next_port[b] += 1
    hosts = []
    edge = graph.graph.get("edge", sorted(graph.nodes))
    for node in edge:
        for i in range(hosts_per_switch):
            mac = f"00:00:00:{(node >> 8) & 0xff:02x}:{node & 0xff:02x}:{i + 1:02x}"
            ip = f"10.{(node >> 8) & 0xff}.{node & 0xff}.{i + 1}"
            hosts.append(Host(mac=mac, dpid=node, port=next_port[node], ips=(ip,)))
            next_port[node] += 1
    switches = {n: frozenset(range(1, next_port[n])) for n in graph.nodes}
    weights = {frozenset((a, b)): d.get("weight", 1.0) for a, b, d in graph.edges(data=True)}
    return Snapshot(switches, tuple(sorted(links)), tuple(sorted(hosts)), weights)


def fat_tree(k: int):
    """The fat-tree switch graph of topologies.sdn_topos.FatTreeTopo, without Mininet."""
    import networkx as nx

    half = k // 2
    g = nx.Graph()
    counter = iter(range(1, 10**6))
    cores = [next(counter) for _ in range(half * half)]
    edges_all = []
    for _ in range(k):
        aggs = [next(counter) for _ in range(half)]
        edges = [next(counter) for _ in range(half)]
        for i, agg in enumerate(aggs):
            for j in range(half):
                g.add_edge(agg, cores[i * half + j])
            for edge in edges:
                g.add_edge(agg, edge)
        edges_all += edges
    g.graph["edge"] = edges_all
    return g
