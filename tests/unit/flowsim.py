"""A small OpenFlow 1.3 pipeline simulator for compiled rules (test support, pure).

It follows a packet through tables, goto, groups (ff/select/all) and links, so the tests
can say where a packet ends up, and whether it loops, without a switch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from sdn.flows import IN_PORT, FlowRule, Group, SwitchRules
from sdn.topology import Link, Snapshot

MAX_HOPS = 64


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _matches(rule: FlowRule, pkt: dict) -> bool:
    for name, want in rule.match:
        have = pkt.get(name)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = (_mac_int(want[0]), _mac_int(want[1]))
            if _mac_int(have) & mask != value & mask:
                return False
        elif have != want:
            return False
    return True


@dataclass
class Trace:
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (dpid, port) off-network
    to_controller: list[int] = field(default_factory=list)
    hops: int = 0
    looped: bool = False
    path: list[int] = field(default_factory=list)


class Network:
    def __init__(self, snapshot: Snapshot, rules: dict[int, SwitchRules],
                 dead_links: frozenset[Link] = frozenset()) -> None:
        self.rules = rules
        self.peer: dict[tuple[int, int], tuple[int, int]] = {}
        self.dead: set[tuple[int, int]] = set()
        for lk in snapshot.links:
            self.peer[(lk.a, lk.a_port)] = (lk.b, lk.b_port)
            self.peer[(lk.b, lk.b_port)] = (lk.a, lk.a_port)
            if lk in dead_links:
                self.dead |= {(lk.a, lk.a_port), (lk.b, lk.b_port)}

    def live(self, dpid: int, port: int) -> bool:
        return (dpid, port) not in self.dead

    def send(self, dpid: int, in_port: int, pkt: dict) -> Trace:
        trace = Trace()
        queue = [(dpid, in_port)]
        while queue:
            here, port = queue.pop()
            trace.hops += 1
            trace.path.append(here)
            if trace.hops > MAX_HOPS:
                trace.looped = True
                return trace
            for out in self._pipeline(here, {**pkt, "in_port": port}, trace):
                if out == IN_PORT:
                    out = port
                elif out == port:
                    continue  # OpenFlow never sends a packet back out of its in_port
                if not self.live(here, out):
                    continue
                if (here, out) in self.peer:
                    queue.append(self.peer[(here, out)])
                else:
                    trace.delivered.append((here, out))
        return trace

    def _pipeline(self, dpid: int, pkt: dict, trace: Trace) -> list[int]:
        table, outs = 0, []
        switch = self.rules[dpid]
        while table is not None:
            candidates = [r for r in switch.flows.values() if r.table == table and _matches(r, pkt)]
            if not candidates:
                return outs
            rule = max(candidates, key=lambda r: r.priority)
            outs += self._actions(switch, rule.actions, pkt, trace, dpid)
            table = rule.goto
        return outs

    def _actions(self, switch: SwitchRules, actions, pkt, trace, dpid) -> list[int]:
        outs = []
        for action in actions:
            if action[0] == "output":
                outs.append(action[1])
            elif action[0] == "controller":
                trace.to_controller.append(dpid)
            elif action[0] == "group":
                outs += self._group(switch, switch.groups[action[1]], pkt, trace, dpid)
        return outs

    def _bucket_live(self, switch: SwitchRules, bucket, dpid: int) -> bool:
        if bucket.watch_port is not None and not self.live(dpid, bucket.watch_port):
            return False
        if bucket.watch_group is not None:
            group = switch.groups[bucket.watch_group]
            return any(self._bucket_live(switch, b, dpid) for b in group.buckets)
        return True

    def _group(self, switch: SwitchRules, group: Group, pkt, trace, dpid) -> list[int]:
        live = [b for b in group.buckets if self._bucket_live(switch, b, dpid)]
        if not live:
            return []
        if group.type == "ff":
            chosen = [live[0]]
        elif group.type == "select":
            key = zlib.crc32(f"{pkt.get('eth_src')}{pkt.get('flow', 0)}".encode())
            chosen = [live[key % len(live)]]
        else:
            chosen = live
        outs = []
        for bucket in chosen:
            outs += self._actions(switch, bucket.actions, pkt, trace, dpid)
        return outs


def snapshot_from_graph(graph, hosts_per_switch: int = 1) -> Snapshot:
    """Number ports like Mininet does (links first, then hosts) and put hosts on every switch
    (or on the nodes listed in the graph attribute 'edge', when present)."""
    from sdn.topology import Host

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
            hosts.append(Host(mac=mac, dpid=node, port=next_port[node]))
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
