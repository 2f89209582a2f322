"""Compile (topology snapshot, options) into the rules every switch should hold. Pure.

Pipeline per switch:
  table 0  LLDP to the controller; inter-switch ports and known hosts go on (ARP too,
           when it comes from a host's known address, gratuitous ARP aside); other ARP
           goes to the controller; anything else is copied to it (host learning) and
           goes on.
  table 1  policy (traffic classes, sdn.compile.classes); empty here, falls through.
  table 2  service-chain steering (sdn.compile.chains); empty here, falls through.
  table 3  ARP requests for known addresses are answered (sdn.compile.arp), on every switch
           with hosts; multicast/broadcast along the spanning tree; hosts on this switch are
           delivered; every other known host is mapped to its switch (metadata) and
           goes to table 4; unknown unicast to the controller.
  table 4  one route per destination switch: out of its one port, or by a select group
           when protection is off, else on to its next hop in table 5.
  table 5  per next hop (primary ports, backup) the select and fast-failover groups it
           leaves by, and the U-turns, by in_port, for packets a neighbour hands back
           (sdn.compile.route_groups.NextHops).

The result is a pure function of (snapshot, options), but it is computed incrementally:
`NetworkCompiler` keeps the previous result and, after a topology change, recomputes only
the routes and switches the change can affect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import networkx as nx

from sdn.compile import routing
from sdn.compile.arp import answer_rule
from sdn.compile.pipeline import base_pipeline, flood_rules
from sdn.compile.route_groups import CellGroups, GroupPool, NextHop, NextHops, forward_actions
from sdn.model.cookies import COOKIE_ROUTE, cookie
from sdn.model.pipeline import (
    METADATA_DPID_MASK,
    PRIO_ROUTE,
    TABLE_FORWARD,
    TABLE_NEXT_HOP,
    TABLE_ROUTE,
)
from sdn.model.rules import (
    FlowRule,
    RuleKey,
    SwitchRules,
    match,
)
from sdn.model.topology import Host, Link, Snapshot


@dataclass(frozen=True)
class Options:
    ecmp: bool = True
    protection: bool = True


DEFAULT_OPTIONS = Options()

def compile_network(
    snapshot: Snapshot, options: Options = DEFAULT_OPTIONS, cache: CompilerCache | None = None
) -> dict[int, SwitchRules]:
    """Every switch's rules. Each call returns new `SwitchRules` the caller may extend.
    With a `cache` the work is incremental against its previous call with the same
    options; without, it starts from nothing."""
    compiler = cache.get(options) if cache is not None else NetworkCompiler(options)
    return compiler.compile(snapshot)


class CompilerCache:
    """One incremental compiler per option set: the controller keeps one for its life."""

    def __init__(self) -> None:
        self._compilers: dict[Options, NetworkCompiler] = {}

    def get(self, options: Options) -> NetworkCompiler:
        compiler = self._compilers.get(options)
        if compiler is None:
            compiler = self._compilers[options] = NetworkCompiler(options)
        return compiler


# Routes, compiled incrementally.

Edge = tuple[int, int]  # (lower dpid, higher dpid)

# Beyond this many changed links a rebuild from scratch is as cheap as repairing.
MAX_REPAIRED_EDGES = 16


def switch_edges(snapshot: Snapshot) -> dict[Edge, tuple[float, Link]]:
    """The switch graph as `Snapshot.graph` defines it: per pair of switches the
    lowest-numbered link carries traffic, with the pair's weight."""
    edges: dict[Edge, tuple[float, Link]] = {}
    for link in snapshot.links:
        if link.a == link.b:
            continue
        pair = (link.a, link.b)
        held = edges.get(pair)
        if held is None or link < held[1]:
            edges[pair] = (snapshot.weights.get(frozenset(pair), 1.0), link)
    return edges


class _Cell(NamedTuple):
    """One switch's route toward one destination switch: what it depends on (its primary
    ports and backup, `NextHop`), and what it holds (its next hop's id, or groups)."""

    inputs: NextHop
    key: RuleKey
    next_hop: int | None
    groups: tuple[int, ...]


class NetworkCompiler:
    """Keeps the last compiled network and turns the next snapshot into rules by
    repairing only what the difference can affect: routes per destination switch
    (`routing.DestinationRoutes`), then the table-4 cells (switch, destination) whose
    inputs changed, the host mappings where reachability changed, and the per-switch
    base and flood rules of switches whose ports, hosts or tree links changed.

    `compile` returns every switch's rules, as a fresh compiler would; `update` returns
    only the switches whose rules changed since the previous call (the controller sends
    nothing to the others), `rules` any one switch. All return new `SwitchRules` the
    caller may extend. `changed` names the switches the last call changed, and `touched`
    the keys of the rules it changed there (None after a rebuild: anything may have)."""

    def __init__(self, options: Options = DEFAULT_OPTIONS) -> None:
        self.options = options
        self.changed: set[int] = set()
        self.touched: dict[int, set[RuleKey]] | None = None
        self.rebuilds = 0
        self._reset()

    def _reset(self) -> None:
        self._graph = nx.Graph()  # for the spanning tree
        self._adj: dict[int, dict[int, float]] = {}  # for routes: neighbour -> weight
        self._route_graph: object = routing.route_graph(self._adj)  # as routes read it
        self._ports: dict[int, dict[int, int]] = {}  # neighbour -> port toward it
        self._edges: dict[Edge, tuple[float, Link]] = {}
        self._routes: dict[int, routing.DestinationRoutes] = {}
        self._cells: dict[int, dict[int, _Cell]] = {}  # destination -> switch -> cell
        self._hosts: dict[str, Host] = {}
        self._mapped: dict[int, dict[str, Host]] = {}  # destination -> hosts mapped to it
        self._flows: dict[int, dict[RuleKey, FlowRule]] = {}
        self._next_hops: dict[int, NextHops] = {}  # each with the switch's GroupPool
        self._static: dict[int, tuple[tuple, tuple[RuleKey, ...]]] = {}
        self._answers: dict[str, str] = {}  # IP -> MAC the switches answer ARP with
        self._answering: set[int] = set()  # switches with hosts, which hold the answers
        self._tree: nx.Graph | None = None

    def compile(self, snapshot: Snapshot) -> dict[int, SwitchRules]:
        self._compile(snapshot)
        return {dpid: self.rules(dpid) for dpid in snapshot.switches}

    def update(self, snapshot: Snapshot) -> dict[int, SwitchRules]:
        self._compile(snapshot)
        return {dpid: self.rules(dpid) for dpid in sorted(self.changed)
                if dpid in snapshot.switches}

    def rules(self, dpid: int) -> SwitchRules:
        return SwitchRules(self._flows.get(dpid, {}).copy(), self._pool(dpid).groups.copy())

    def _compile(self, snapshot: Snapshot) -> None:
        edges = switch_edges(snapshot)
        if self._rebuild_needed(edges):
            self._reset()
            self.rebuilds += 1
            self.changed = set(snapshot.switches)
            self.touched = None
        else:
            self.changed = set()
            self.touched = {}
        nodes = set(snapshot.switches).union(*edges)
        hosts = {h.mac: h for h in snapshot.hosts if h.dpid in nodes}
        lost = [e for e, held in self._edges.items() if edges.get(e) != held]
        gained = [e for e, now in edges.items() if self._edges.get(e) != now]

        old_hosts = self._hosts
        for mac, host in old_hosts.items():
            if _place(hosts.get(mac)) != _place(host):
                self._unmap_host(host)
        destinations = {h.dpid for h in hosts.values()}
        for dst in [d for d in self._routes if d not in destinations]:
            self._drop_destination(dst)
        self._update_graph(edges, nodes, lost, gained)
        tree_changed = self._tree is None or bool(gained) or any(
            self._tree.has_edge(*e) for e in lost)
        forced = {n for e in lost if e in edges for n in e}  # same pair, other link: ports
        for dst, routes in self._routes.items():
            self._refresh_destination(dst, routes, forced)
        for dst in sorted(destinations - self._routes.keys()):
            self._add_destination(dst)
        for mac, host in hosts.items():
            if _place(old_hosts.get(mac)) != _place(host):
                self._map_host(host)
        self._hosts = hosts
        if tree_changed:
            self._tree = self._spanning_tree()
        self._update_static(snapshot)
        self._update_answers(snapshot)
        for gone in [n for n in self._flows if n not in snapshot.switches]:
            del self._flows[gone]
            self._next_hops.pop(gone, None)
            self._static.pop(gone, None)

    def _rebuild_needed(self, edges: dict[Edge, tuple[float, Link]]) -> bool:
        if not self._edges or any(w <= routing.EPSILON for w, _ in edges.values()):
            return True
        changes = sum(1 for e, held in self._edges.items() if edges.get(e) != held)
        changes += sum(1 for e in edges if e not in self._edges)
        return changes > MAX_REPAIRED_EDGES

    def _update_graph(self, edges: dict[Edge, tuple[float, Link]], nodes: set[int],
                      lost: list[Edge], gained: list[Edge]) -> None:
        """Losses first, then gains, each followed by repairing every destination's
        routes, so each repair sees a graph that only shrank or only grew."""
        graph, adj, ports = self._graph, self._adj, self._ports
        graph.remove_edges_from(lost)
        for a, b in lost:
            del adj[a][b], adj[b][a], ports[a][b], ports[b][a]
        if lost:
            dropped = [(a, b, self._edges[(a, b)][0]) for a, b in lost]
            self._route_graph = routing.route_graph(adj)
            for routes in self._routes.values():
                routes.lose_edges(self._route_graph, dropped)
        gone, new = [n for n in adj if n not in nodes], nodes - adj.keys()
        for node in gone:
            graph.remove_node(node)
            del adj[node], ports[node]
        for node in new:
            graph.add_node(node)
            adj[node], ports[node] = {}, {}
        for a, b in gained:
            weight, link = edges[(a, b)]
            graph.add_edge(a, b, weight=weight, link=link)
            adj[a][b] = adj[b][a] = weight
            ports[a][b], ports[b][a] = link.port_at(a), link.port_at(b)
        if gone or new or gained:  # the graph the routes read is indexed anew only then
            self._route_graph = routing.route_graph(adj)
        if gained:
            for routes in self._routes.values():
                routes.gain_edges(self._route_graph, gained)
        self._edges = edges

    # table 4: routes toward destination switches
    def _add_destination(self, dst: int) -> None:
        routes = routing.DestinationRoutes(self._route_graph, dst, ecmp=self.options.ecmp)
        self._routes[dst] = routes
        self._cells[dst] = {}
        self._mapped[dst] = {}
        for node in routes.hops:
            self._set_cell(dst, node, self._inputs(node, routes.hops))

    def _drop_destination(self, dst: int) -> None:
        for node in list(self._cells[dst]):
            self._remove_cell(dst, node)
        del self._routes[dst], self._cells[dst], self._mapped[dst]

    def _refresh_destination(self, dst: int, routes: routing.DestinationRoutes,
                             forced: set[int]) -> None:
        """Rebuild the cells whose inputs changed: a cell reads its own switch's hops
        only (and the ports toward them, hence `forced`)."""
        changed = routes.take_changed()
        cells, hops = self._cells[dst], routes.hops
        for node in changed.keys() | forced:
            if node in hops:
                inputs = self._inputs(node, hops)
                cell = cells.get(node)
                if cell is None or cell.inputs != inputs:
                    self._set_cell(dst, node, inputs)
            elif node in cells:
                self._remove_cell(dst, node)
        for node, before in changed.items():
            if (before is None) == (node in hops):
                for host in self._mapped[dst].values():
                    if node in hops:
                        self._put(node, [_host_rule(node, host)])
                    else:
                        self._delete(node, [_host_rule(node, host).key])

    def _inputs(self, node: int, hops: dict[int, routing.Hops]) -> NextHop:
        toward = self._ports[node]
        hop = hops[node]
        ports = tuple(toward[n] for n in hop.primary)
        if not self.options.protection or hop.backup is None:
            return ports, None
        return ports, toward[hop.backup]

    def _set_cell(self, dst: int, node: int, inputs: NextHop) -> None:
        """The new route goes in before the old one's next hop and groups are released,
        so what both use keeps its id and its rules."""
        old = self._cells[dst].get(node)
        ports, backup = inputs
        if self.options.protection and (len(ports) > 1 or backup is not None):
            next_hop, added = self._next_hop_table(node).acquire(inputs)
            if added:
                self._put(node, added)
            rule = FlowRule(node, TABLE_ROUTE, PRIO_ROUTE, match(metadata=dst),
                            goto=TABLE_NEXT_HOP, cookie=cookie(COOKIE_ROUTE, dst),
                            write_metadata=(next_hop, METADATA_DPID_MASK))
            cell = _Cell(inputs, rule.key, next_hop, ())
        else:
            groups = CellGroups(self._pool(node))
            rule = FlowRule(node, TABLE_ROUTE, PRIO_ROUTE, match(metadata=dst),
                            forward_actions(groups, ports, backup),
                            cookie=cookie(COOKIE_ROUTE, dst))
            cell = _Cell(inputs, rule.key, None, tuple(groups.taken))
        self._put(node, (rule,))
        self._cells[dst][node] = cell
        if old is not None:
            self._release(node, old)

    def _remove_cell(self, dst: int, node: int) -> None:
        cell = self._cells[dst].pop(node)
        self._delete(node, [cell.key])
        self._release(node, cell)

    def _release(self, node: int, cell: _Cell) -> None:
        if cell.next_hop is not None:
            gone = self._next_hop_table(node).release(cell.next_hop)
            if gone:
                self._delete(node, gone)
        for gid in cell.groups:
            self._pool(node).release(gid)

    # table 3: hosts -> their switch
    def _map_host(self, host: Host) -> None:
        self._mapped[host.dpid][host.mac] = host
        for node in (host.dpid, *self._routes[host.dpid].hops):
            self._put(node, [_host_rule(node, host)])

    def _unmap_host(self, host: Host) -> None:
        del self._mapped[host.dpid][host.mac]
        for node in (host.dpid, *self._routes[host.dpid].hops):
            self._delete(node, [_host_rule(node, host).key])

    # tables 0-3: per-switch base pipeline and flooding
    def _update_static(self, snapshot: Snapshot) -> None:
        link_ports: dict[int, set[int]] = {}
        for lk in snapshot.links:
            link_ports.setdefault(lk.a, set()).add(lk.a_port)
            link_ports.setdefault(lk.b, set()).add(lk.b_port)
        local: dict[int, list[tuple[str, int, tuple[str, ...]]]] = {}
        for h in snapshot.hosts:
            local.setdefault(h.dpid, []).append((h.mac, h.port, h.ips))
        tree_ports: dict[int, set[int]] = {}
        for a, b, data in self._tree.edges(data=True):
            tree_ports.setdefault(a, set()).add(data["link"].port_at(a))
            tree_ports.setdefault(b, set()).add(data["link"].port_at(b))
        for dpid, ports in snapshot.switches.items():
            signature = (ports, frozenset(link_ports.get(dpid, ())),
                         tuple(sorted(local.get(dpid, ()))),
                         frozenset(tree_ports.get(dpid, ())),
                         snapshot.unsettled.get(dpid, frozenset()))
            held = self._static.get(dpid)
            if held is not None and held[0] == signature:
                continue
            if held is not None:
                self._delete(dpid, held[1])
            rules = base_pipeline(dpid, snapshot) + flood_rules(dpid, snapshot, self._tree)
            self._put(dpid, rules)
            self._static[dpid] = (signature, tuple(r.key for r in rules))

    # table 3: ARP answers
    def _update_answers(self, snapshot: Snapshot) -> None:
        """Every switch with hosts answers for every known address; a host's own first
        switch is the only one its requests reach. An address two hosts claim is answered
        with the first by MAC (the topology moves an address to its latest claimant)."""
        answers: dict[str, str] = {}
        for mac, host in self._hosts.items():
            for ip in host.ips:
                held = answers.get(ip)
                if held is None or mac < held:
                    answers[ip] = mac
        answering = {h.dpid for h in self._hosts.values()} & snapshot.switches.keys()
        changed = {ip for ip in answers.keys() | self._answers.keys()
                   if answers.get(ip) != self._answers.get(ip)}
        for dpid in self._answering - answering:
            if dpid in self._flows:
                self._delete(dpid, [answer_rule(dpid, ip, mac).key
                                    for ip, mac in self._answers.items()])
        for dpid in answering - self._answering:
            self._put(dpid, [answer_rule(dpid, ip, mac) for ip, mac in answers.items()])
        if changed:
            for dpid in answering & self._answering:
                self._put(dpid, [answer_rule(dpid, ip, answers[ip])
                                 for ip in changed if ip in answers])
                self._delete(dpid, [answer_rule(dpid, ip, "").key
                                    for ip in changed if ip not in answers])
        self._answers, self._answering = answers, answering

    def _spanning_tree(self) -> nx.Graph:
        """The minimum spanning forest (`routing.tree_edges`) of the switch graph, from the
        edges we already hold."""
        tree = nx.Graph()
        tree.add_nodes_from(self._adj)
        for a, b in routing.tree_edges({e: w for e, (w, _) in self._edges.items()}):
            tree.add_edge(a, b, weight=self._edges[(a, b)][0], link=self._edges[(a, b)][1])
        return tree

    # bookkeeping
    def _next_hop_table(self, dpid: int) -> NextHops:
        table = self._next_hops.get(dpid)
        if table is None:
            table = self._next_hops[dpid] = NextHops(GroupPool(dpid))
        return table

    def _pool(self, dpid: int) -> GroupPool:
        return self._next_hop_table(dpid).pool

    def _put(self, dpid: int, rules: Iterable[FlowRule]) -> None:
        flows = self._flows.setdefault(dpid, {})
        touched = self._touched(dpid)
        for rule in rules:
            flows[rule.key] = rule
            touched.add(rule.key)
        self.changed.add(dpid)

    def _delete(self, dpid: int, keys: Iterable[RuleKey]) -> None:
        flows = self._flows[dpid]
        touched = self._touched(dpid)
        for key in keys:
            del flows[key]
            touched.add(key)
        self.changed.add(dpid)

    def _touched(self, dpid: int) -> set[RuleKey]:
        if self.touched is None:
            return set()  # after a rebuild nothing is tracked
        return self.touched.setdefault(dpid, set())


def _place(host: Host | None) -> tuple[int, int] | None:
    return None if host is None else (host.dpid, host.port)


def _host_rule(node: int, host: Host) -> FlowRule:
    """Table 3: deliver a local host, or tag the packet with its switch for table 4."""
    route = cookie(COOKIE_ROUTE, host.mac)
    if node == host.dpid:
        return FlowRule(node, TABLE_FORWARD, PRIO_ROUTE, match(eth_dst=host.mac),
                        (("output", host.port),), cookie=route)
    return FlowRule(node, TABLE_FORWARD, PRIO_ROUTE, match(eth_dst=host.mac),
                    goto=TABLE_ROUTE, cookie=route,
                    write_metadata=(host.dpid, METADATA_DPID_MASK))
