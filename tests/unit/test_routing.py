"""Routing core: shortest paths, ECMP sets, backups, and delivery through compiled rules."""

from __future__ import annotations

import dataclasses
import itertools
import random

import networkx as nx
import pytest

from sdn.compile import routing
from sdn.compile.routes import NetworkCompiler, Options, compile_network
from sdn.explain.flowsim import Network
from sdn.model.pipeline import PRIO_ROUTE, TABLE_NEXT_HOP, TABLE_ROUTE
from testing.flowsim import fat_tree, snapshot_from_graph


def random_connected_graph(seed: int, nodes: int = 9, extra_edges: int = 5) -> nx.Graph:
    rng = random.Random(seed)
    g = nx.random_labeled_tree(nodes, seed=seed) if hasattr(nx, "random_labeled_tree") \
        else nx.random_tree(nodes, seed=seed)
    g = nx.relabel_nodes(g, {n: n + 1 for n in g.nodes})
    while extra_edges:
        a, b = rng.sample(sorted(g.nodes), 2)
        if not g.has_edge(a, b):
            g.add_edge(a, b)
            extra_edges -= 1
    return g


def deliveries(snapshot, rules, dead=frozenset(), flows=1):
    """Trace every host pair; return (src, dst, trace) for each."""
    net = Network(snapshot, rules, dead)
    for src, dst in itertools.permutations(snapshot.hosts, 2):
        for flow in range(flows):
            pkt = {"eth_src": src.mac, "eth_dst": dst.mac, "eth_type": 0x0800, "flow": flow}
            yield src, dst, net.send(src.dpid, src.port, pkt)


def test_next_hops_are_on_shortest_paths():
    for seed in range(20):
        g = random_connected_graph(seed)
        for u, v in g.edges:
            g[u][v]["weight"] = 1.0
        for dst in g.nodes:
            dist = nx.single_source_shortest_path_length(g, dst)
            for node, hop in routing.next_hops(g, dst).items():
                assert hop.primary, node
                assert all(dist[n] == dist[node] - 1 for n in hop.primary)
                expected = sorted(n for n in g.neighbors(node) if dist[n] == dist[node] - 1)
                assert list(hop.primary) == expected  # the whole ECMP set


def test_backup_avoids_primary_and_prefers_loop_free():
    ring = nx.cycle_graph(range(1, 5))
    nx.set_edge_attributes(ring, 1.0, "weight")
    hops = routing.next_hops(ring, 3, ecmp=False)
    # 1 reaches 3 over 2 or 4: the other one is a loop-free backup.
    assert hops[1].backup not in hops[1].primary and hops[1].loop_free
    # 2 is next to 3: its only alternative (1) sends the packet back, a U-turn.
    assert hops[2].primary == (3,) and hops[2].backup == 1 and not hops[2].loop_free


@pytest.mark.parametrize("seed", range(25))
def test_compiled_rules_deliver_every_pair_on_shortest_paths(seed):
    g = random_connected_graph(seed)
    snapshot = snapshot_from_graph(g)
    rules = compile_network(snapshot)
    graph = snapshot.graph()
    for src, dst, trace in deliveries(snapshot, rules):
        assert not trace.looped, (src, dst, trace.path)
        assert trace.delivered == [(dst.dpid, dst.port)], (src, dst, trace)
        assert trace.hops == nx.shortest_path_length(graph, src.dpid, dst.dpid) + 1


@pytest.mark.parametrize("seed", range(12))
def test_recompiled_rules_deliver_after_any_single_link_loss(seed):
    g = random_connected_graph(seed)
    snapshot = snapshot_from_graph(g)
    for link in snapshot.links:
        survivor = snapshot_from_graph(g)
        survivor = type(survivor)(survivor.switches, tuple(lk for lk in survivor.links
                                                           if lk != link),
                                  survivor.hosts, survivor.weights)
        if not nx.is_connected(survivor.graph()):
            continue
        rules = compile_network(survivor)
        for src, dst, trace in deliveries(survivor, rules):
            assert not trace.looped and trace.delivered == [(dst.dpid, dst.port)], (link, src, dst)


@pytest.mark.parametrize("graph_name", ["ring4", "ring6", "fattree4", "mesh5", "grid3x3"])
def test_fast_failover_alone_repairs_any_single_link_loss(graph_name):
    """Before the controller reacts, the groups already in the switches route around a
    dead link: every pair is still delivered exactly once, without loops."""
    graph = {
        "ring4": lambda: nx.cycle_graph(range(1, 5)),
        "ring6": lambda: nx.cycle_graph(range(1, 7)),
        "fattree4": lambda: fat_tree(4),
        "mesh5": lambda: nx.complete_graph(range(1, 6)),
        "grid3x3": lambda: nx.convert_node_labels_to_integers(nx.grid_2d_graph(3, 3), 1),
    }[graph_name]()
    snapshot = snapshot_from_graph(graph)
    rules = compile_network(snapshot)
    for link in snapshot.links:
        for src, dst, trace in deliveries(snapshot, rules, frozenset({link})):
            assert not trace.looped, (link, src.dpid, dst.dpid, trace.path)
            assert trace.delivered == [(dst.dpid, dst.port)], (link, src.dpid, dst.dpid, trace)


def test_without_protection_a_dead_link_drops():
    snapshot = snapshot_from_graph(nx.cycle_graph(range(1, 5)))
    rules = compile_network(snapshot, Options(protection=False, ecmp=False))
    dead = frozenset({snapshot.links[0]})
    lost = [t for _, _, t in deliveries(snapshot, rules, dead) if not t.delivered]
    assert lost  # the protection test above is not passing by accident


def test_ecmp_spreads_flows_over_several_core_switches():
    g = fat_tree(4)
    snapshot = snapshot_from_graph(g)
    rules = compile_network(snapshot)
    src, dst = snapshot.hosts[0], snapshot.hosts[-1]
    net = Network(snapshot, rules)
    cores = set()
    for flow in range(32):
        pkt = {"eth_src": f"00:00:00:00:{flow:02x}:01", "eth_dst": dst.mac, "flow": flow}
        trace = net.send(src.dpid, src.port, pkt)
        assert trace.delivered == [(dst.dpid, dst.port)]
        cores |= set(trace.path) & set(range(1, 5))
    assert len(cores) > 1


def test_spanning_tree_is_deterministic_and_spans():
    g = nx.complete_graph(range(1, 7))
    weights = {(a, b): 1.0 for a, b in g.edges}
    e1 = routing.tree_edges(weights)
    assert e1 == routing.tree_edges(dict(reversed(list(weights.items()))))
    assert nx.is_tree(nx.Graph(list(e1))) and set(nx.Graph(list(e1)).nodes) == set(g.nodes)


def test_broadcast_reaches_every_host_once_on_loopy_graphs():
    for graph in (nx.cycle_graph(range(1, 6)), fat_tree(4), nx.complete_graph(range(1, 5))):
        snapshot = snapshot_from_graph(graph)
        rules = compile_network(snapshot)
        net = Network(snapshot, rules)
        src = snapshot.hosts[0]
        trace = net.send(src.dpid, src.port,
                         {"eth_src": src.mac, "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0800})
        assert not trace.looped
        expected = sorted((h.dpid, h.port) for h in snapshot.hosts if h != src)
        assert sorted(trace.delivered) == expected


def test_weights_steer_paths():
    g = nx.cycle_graph(range(1, 5))
    nx.set_edge_attributes(g, 1.0, "weight")
    g[1][2]["weight"] = 10.0
    assert routing.shortest_path(g, 1, 2) == [1, 4, 3, 2]


# Incremental recompilation: always what a compile from scratch gives.

def canonical(rules):
    """Rules with group ids replaced by group content, and the set of groups held: equal
    networks compare equal even when a group id collision was resolved differently."""
    out = {}
    for dpid, switch in rules.items():
        def group(gid, switch=switch):
            g = switch.groups[gid]
            return (g.type, tuple((actions(b.actions), b.watch_port,
                                   None if b.watch_group is None else group(b.watch_group),
                                   b.weight) for b in g.buckets))

        def actions(acts):
            return tuple(("group", group(a[1])) if a[0] == "group" else a for a in acts)

        flows = {key: dataclasses.replace(r, actions=actions(r.actions))
                 for key, r in switch.flows.items()}
        out[dpid] = (flows, sorted(map(repr, (group(gid) for gid in switch.groups))))
    return out


def without_links(snapshot, dead):
    return dataclasses.replace(snapshot, links=tuple(lk for lk in snapshot.links
                                                     if lk not in dead))


def weighted(graph, rng):
    for u, v in graph.edges:
        graph[u][v]["weight"] = rng.choice([1.0, 1.0, 2.0, 0.5, 1.5])
    return graph


def implementations() -> dict:
    """Route repair's Python reference and the C module (`make setup` builds it: a
    missing module fails here rather than leaving the C path untested)."""
    from sdn.compile import _routes

    _routes.init(routing.Hops)
    return {"python": (routing.PyDestinationRoutes, lambda adj: adj),
            "c": (_routes.DestinationRoutes, _routes.RouteGraph)}


@pytest.mark.parametrize("impl", ["python", "c"])
@pytest.mark.parametrize("seed", range(30))
def test_destination_routes_repair_equals_fresh_computation(seed, impl):
    make, graph_of = implementations()[impl]
    rng = random.Random(seed)
    g = weighted(random_connected_graph(seed, nodes=12, extra_edges=8), rng)
    adj = routing.adjacency(g)
    dsts = sorted(g.nodes)[:4]
    kept = {d: make(graph_of(adj), d, ecmp=seed % 2 == 0) for d in dsts}
    held = {d: dict(routes.hops) for d, routes in kept.items()}
    for _ in range(12):
        removed = [(u, v) for u, v in g.edges if v not in adj[u]]
        if removed and rng.random() < 0.4:
            u, v = rng.choice(removed)
            adj[u][v] = adj[v][u] = g[u][v]["weight"]
            for routes in kept.values():
                routes.gain_edges(graph_of(adj), [(u, v)])
        else:
            u, v = rng.choice([(u, v) for u, v in g.edges if v in adj[u]])
            weight = adj[u].pop(v)
            del adj[v][u]
            for routes in kept.values():
                routes.lose_edges(graph_of(adj), [(u, v, weight)])
        for d, routes in kept.items():
            fresh = routing.PyDestinationRoutes(adj, d, ecmp=routes.ecmp)
            assert routes.dist == pytest.approx(fresh.dist), (seed, d)
            assert routes.hops == fresh.hops, (seed, d)
            was = held[d]
            assert routes.take_changed() == {
                n: was.get(n) for n in was.keys() | routes.hops.keys()
                if was.get(n) != routes.hops.get(n)}
            held[d] = dict(routes.hops)


@pytest.mark.parametrize("seed", range(8))
def test_c_and_python_route_repair_compile_the_same_rules(seed, monkeypatch):
    """The whole compiler on either route repair, through switches, links and hosts
    coming and going, ends up with the same rules at every step."""
    implementations()
    rng = random.Random(seed)
    full = snapshot_from_graph(random_connected_graph(seed, nodes=10, extra_edges=6))
    steps = []
    for _ in range(15):
        switches = {d: p for d, p in full.switches.items() if rng.random() < 0.9}
        links = tuple(lk for lk in full.links if lk.a in switches and lk.b in switches
                      and rng.random() < 0.8)
        hosts = tuple(h for h in full.hosts if h.dpid in switches and rng.random() < 0.9)
        steps.append(dataclasses.replace(full, switches=switches, links=links, hosts=hosts))
    options = [Options(), Options(ecmp=False)][seed % 2]
    in_c = NetworkCompiler(options)
    got_c = [canonical(in_c.compile(step)) for step in steps]
    monkeypatch.setattr(routing, "DestinationRoutes", routing.PyDestinationRoutes)
    monkeypatch.setattr(routing, "route_graph", lambda adj: adj)
    in_python = NetworkCompiler(options)
    assert got_c == [canonical(in_python.compile(step)) for step in steps]
    assert in_c.rebuilds == in_python.rebuilds


OPTIONS = [Options(), Options(ecmp=False), Options(protection=False),
           Options(ecmp=False, protection=False)]


@pytest.mark.parametrize("seed", range(16))
def test_incremental_compile_equals_compile_from_scratch(seed):
    """Random single-link losses and recoveries (partitions included): the incremental
    compiler, repairing each time, matches a fresh compiler on every step."""
    rng = random.Random(seed)
    g = random_connected_graph(seed, nodes=10, extra_edges=6)
    if seed % 3 == 0:
        g = weighted(g, rng)
    full = snapshot_from_graph(g, hosts_per_switch=2)
    options = OPTIONS[seed % len(OPTIONS)]
    compiler = NetworkCompiler(options)
    held = compiler.compile(full)
    dead: set = set()
    for step in range(10):
        if dead and rng.random() < 0.4:
            dead.remove(rng.choice(sorted(dead)))
        else:
            dead.add(rng.choice([lk for lk in full.links if lk not in dead]))
        snapshot = without_links(full, dead)
        # odd steps: everything; even ones: only what changed, over what switches hold
        held = compiler.compile(snapshot) if step % 2 else {**held,
                                                            **compiler.update(snapshot)}
        want = NetworkCompiler(options).compile(snapshot)
        assert canonical(held) == canonical(want), (seed, sorted(dead))
    assert compiler.rebuilds == 1  # only the first compile started from scratch


def test_incremental_compile_follows_hosts_and_switches_coming_and_going():
    g = fat_tree(4)
    full = snapshot_from_graph(g, hosts_per_switch=2)
    compiler = NetworkCompiler()
    compiler.compile(full)
    moved = dataclasses.replace(full.hosts[0], dpid=full.hosts[-1].dpid, port=99)
    gone_switch = full.hosts[3].dpid
    h1, h2, *rest = full.hosts
    more_ips = dataclasses.replace(h1, ips=(*h1.ips, "10.9.9.9"))
    shared_ip = dataclasses.replace(h2, ips=h1.ips)  # two claimants: answered for one
    no_ips = tuple(dataclasses.replace(h, ips=()) for h in full.hosts)
    steps = [
        dataclasses.replace(full, hosts=full.hosts[1:]),  # a host leaves
        dataclasses.replace(full, hosts=(moved, *full.hosts[1:])),  # and comes back elsewhere
        dataclasses.replace(  # an edge switch disconnects with its hosts and links
            full,
            switches={d: p for d, p in full.switches.items() if d != gone_switch},
            links=tuple(lk for lk in full.links if gone_switch not in (lk.a, lk.b)),
            hosts=tuple(h for h in full.hosts if h.dpid != gone_switch)),
        full,
        without_links(full, {full.links[0], full.links[7]}),
        dataclasses.replace(full, weights={frozenset((full.links[2].a, full.links[2].b)): 3.0}),
        full,
        dataclasses.replace(full, hosts=(more_ips, h2, *rest)),  # ARP answers follow IPs
        dataclasses.replace(full, hosts=(more_ips, shared_ip, *rest)),
        dataclasses.replace(full, hosts=no_ips),
        full,
    ]
    for snapshot in steps:
        got = compiler.compile(snapshot)
        assert canonical(got) == canonical(NetworkCompiler().compile(snapshot))
    assert compiler.rebuilds == 1


def test_a_link_loss_touches_only_nearby_switches():
    snapshot = snapshot_from_graph(fat_tree(8), hosts_per_switch=4)
    compiler = NetworkCompiler()
    compiler.compile(snapshot)
    compiler.compile(without_links(snapshot, {snapshot.links[0]}))
    assert 0 < len(compiler.changed) < len(snapshot.switches) / 2


def test_rules_scale_with_hosts_plus_switches():
    snapshot = snapshot_from_graph(fat_tree(8), hosts_per_switch=4)
    rules = compile_network(snapshot)
    edge_switches = len({h.dpid for h in snapshot.hosts})
    addresses = sum(len(h.ips) for h in snapshot.hosts)
    for dpid, switch in rules.items():
        ports = len(snapshot.switches[dpid])
        routes = [r for r in switch.flows.values() if r.table == TABLE_ROUTE]
        next_hops = {r.write_metadata for r in routes if r.goto == TABLE_NEXT_HOP}
        exits_and_uturns = [r for r in switch.flows.values() if r.table == TABLE_NEXT_HOP]
        # table 3: a rule per host and an ARP answer per address; table 4: a route per
        # destination switch; table 5: per next hop an exit and at most one U-turn per
        # port; plus a fixed base and a flood rule per port
        assert len(routes) <= edge_switches
        assert len(exits_and_uturns) <= len(next_hops) * (1 + ports)
        assert len(switch.flows) <= len(snapshot.hosts) + addresses + edge_switches \
            + len(next_hops) * (1 + ports) + 3 * ports + 16


@pytest.mark.parametrize("seed", range(12))
def test_incremental_compile_survives_discovery_churn(seed):
    """What discovery looks like at start-up: hosts learned on ports that later turn out
    to be links, hosts jumping between switches, links and switches appearing in bursts.
    Every step still equals a compile from scratch."""
    rng = random.Random(seed)
    full = snapshot_from_graph(random_connected_graph(seed, nodes=8, extra_edges=5))
    compiler = NetworkCompiler(OPTIONS[seed % len(OPTIONS)])
    held: dict = {}
    for _ in range(25):
        switches = {d: p for d, p in full.switches.items() if rng.random() < 0.9}
        links = tuple(lk for lk in full.links if lk.a in switches and lk.b in switches
                      and rng.random() < 0.8)
        hosts = tuple(
            dataclasses.replace(h, dpid=dpid, port=rng.choice(sorted(switches[dpid])))
            for h in full.hosts if rng.random() < 0.8
            for dpid in [rng.choice(sorted(switches))])
        snapshot = dataclasses.replace(full, switches=switches, links=links, hosts=hosts)
        held = {d: r for d, r in {**held, **compiler.update(snapshot)}.items()
                if d in switches}
        assert canonical(held) == canonical(NetworkCompiler(compiler.options).compile(snapshot))
    assert compiler.rebuilds == 1


@pytest.mark.parametrize("seed", range(4))
def test_a_link_loss_rewrites_routes_and_never_a_next_hop(seed):
    """Table 5 holds each next hop (primary ports, backup) once per switch, with its exit
    and U-turns; table 4 names it per destination. A link loss thus modifies exactly the
    routes whose primaries or backup changed, adds and removes next hops, and rewrites
    none."""
    graph = random_connected_graph(seed, nodes=30, extra_edges=15)
    snapshot = snapshot_from_graph(graph, hosts_per_switch=1)
    lost = snapshot.links[seed]
    failed = dataclasses.replace(snapshot, links=tuple(lk for lk in snapshot.links
                                                       if lk != lost))
    compiler = NetworkCompiler()
    before, after = compiler.compile(snapshot), compiler.compile(failed)

    def next_hops(snap):
        g = snap.graph()
        return {(node, dst): (hops.primary, hops.backup)
                for dst in g.nodes for node, hops in routing.next_hops(g, dst).items()}

    old_hops, new_hops = next_hops(snapshot), next_hops(failed)
    moved = {cell for cell in old_hops.keys() & new_hops.keys()
             if old_hops[cell] != new_hops[cell]}
    modified_routes = set()
    for dpid, rules in after.items():
        held = before[dpid].flows
        for key, rule in rules.flows.items():
            assert not (rule.table == TABLE_ROUTE and "in_port" in dict(rule.match))
            if rule.table == TABLE_NEXT_HOP:
                assert held.get(key, rule) == rule  # added or kept, never rewritten
            elif rule.table == TABLE_ROUTE and key in held and held[key] != rule:
                modified_routes.add((dpid, dict(rule.match)["metadata"]))
        exits = [r for r in rules.flows.values()
                 if r.table == TABLE_NEXT_HOP and r.priority == PRIO_ROUTE]
        named = {r.write_metadata[0] for r in rules.flows.values()
                 if r.table == TABLE_ROUTE and r.goto == TABLE_NEXT_HOP}
        assert {dict(r.match)["metadata"] for r in exits} == named  # one exit per next hop
    assert moved and modified_routes == moved
