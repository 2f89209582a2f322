"""Compile (topology snapshot, options) into the rules every switch should hold. Pure.

Pipeline per switch:
  table 0  LLDP and ARP to the controller; known hosts and inter-switch ports go on;
           anything else is copied to the controller (host learning) and goes on.
  table 1  policy (traffic classes, chains); empty here, falls through.
  table 2  multicast/broadcast along the spanning tree; per-host routes (fast-failover
           and select groups); unknown unicast to the controller.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from sdn import routing
from sdn.flows import (
    COOKIE_CONTROL,
    COOKIE_FLOOD,
    COOKIE_LEARN,
    COOKIE_ROUTE,
    IN_PORT,
    TABLE_FORWARD,
    TABLE_INGRESS,
    TABLE_POLICY,
    Bucket,
    FlowRule,
    GroupTable,
    SwitchRules,
    cookie,
    match,
)
from sdn.topology import Host, Snapshot

ETH_TYPE_LLDP = 0x88CC
ETH_TYPE_ARP = 0x0806
MULTICAST_BIT = "01:00:00:00:00:00"
PACKET_IN_LEARN_BYTES = 128
NO_BUFFER = 0xFFFF

PRIO_LLDP = 1000
PRIO_ARP = 900
PRIO_KNOWN_SOURCE = 100
PRIO_LINK_PORT = 50
PRIO_UTURN = 210
PRIO_ROUTE = 200
PRIO_FLOOD = 100
PRIO_MISS = 0


@dataclass(frozen=True)
class Options:
    ecmp: bool = True
    protection: bool = True


DEFAULT_OPTIONS = Options()


def compile_network(
    snapshot: Snapshot, options: Options = DEFAULT_OPTIONS
) -> dict[int, SwitchRules]:
    graph = snapshot.graph()
    groups = {dpid: GroupTable(dpid) for dpid in snapshot.switches}
    result = {dpid: SwitchRules() for dpid in snapshot.switches}
    for dpid, rules in result.items():
        rules.add_flows(base_pipeline(dpid, snapshot))
        rules.add_flows(flood_rules(dpid, snapshot, routing.spanning_tree(graph)))
    for rule in route_rules(snapshot, graph, groups, options):
        result[rule.dpid].add_flow(rule)
    for dpid, table in groups.items():
        result[dpid].groups = table.groups()
    return result


def base_pipeline(dpid: int, snapshot: Snapshot) -> list[FlowRule]:
    control = cookie(COOKIE_CONTROL, "pipeline")
    learn = cookie(COOKIE_LEARN, "hosts")
    to_controller = ("controller", NO_BUFFER)
    rules = [
        FlowRule(dpid, TABLE_INGRESS, PRIO_LLDP, match(eth_type=ETH_TYPE_LLDP),
                 (to_controller,), cookie=control),
        FlowRule(dpid, TABLE_INGRESS, PRIO_ARP, match(eth_type=ETH_TYPE_ARP),
                 (to_controller,), cookie=control),
        FlowRule(dpid, TABLE_INGRESS, PRIO_MISS, match(),
                 (("controller", PACKET_IN_LEARN_BYTES),), goto=TABLE_POLICY, cookie=learn),
        FlowRule(dpid, TABLE_POLICY, PRIO_MISS, match(), goto=TABLE_FORWARD, cookie=control),
        FlowRule(dpid, TABLE_FORWARD, PRIO_MISS, match(), (to_controller,), cookie=control),
    ]
    rules += [
        FlowRule(dpid, TABLE_INGRESS, PRIO_LINK_PORT, match(in_port=port),
                 goto=TABLE_POLICY, cookie=control)
        for port in sorted(snapshot.link_ports(dpid))
    ]
    rules += [
        FlowRule(dpid, TABLE_INGRESS, PRIO_KNOWN_SOURCE, match(in_port=h.port, eth_src=h.mac),
                 goto=TABLE_POLICY, cookie=learn)
        for h in snapshot.hosts if h.dpid == dpid
    ]
    return rules


def flood_rules(dpid: int, snapshot: Snapshot, tree: nx.Graph) -> list[FlowRule]:
    """Broadcast and multicast leave by tree and edge ports only, never where they came in;
    what arrives on a link the tree does not use is dropped, so loops cannot storm."""
    links = snapshot.link_ports(dpid)
    tree_ports = {
        lk.port_at(dpid) for lk in snapshot.links
        if dpid in (lk.a, lk.b) and tree.has_edge(lk.a, lk.b)
        and tree[lk.a][lk.b].get("link") == lk
    }
    flood_set = (snapshot.switches[dpid] - links) | tree_ports
    flood = cookie(COOKIE_FLOOD, "tree")
    rules = []
    for port in sorted(snapshot.switches[dpid]):
        outs = tuple(("output", p) for p in sorted(flood_set - {port})) if port in flood_set else ()
        rules.append(FlowRule(
            dpid, TABLE_FORWARD, PRIO_FLOOD,
            match(in_port=port, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)), outs, cookie=flood))
    return rules


def route_rules(
    snapshot: Snapshot, graph: nx.Graph, groups: dict[int, GroupTable], options: Options
) -> list[FlowRule]:
    rules: list[FlowRule] = []
    by_switch: dict[int, list[Host]] = {}
    for host in snapshot.hosts:
        if host.dpid in graph:
            by_switch.setdefault(host.dpid, []).append(host)
    for dst, hosts in sorted(by_switch.items()):
        hops = routing.next_hops(graph, dst, ecmp=options.ecmp)
        for host in hosts:
            rules += _host_routes(host, graph, hops, groups, options)
    return rules


def _port(graph: nx.Graph, a: int, b: int) -> int:
    return graph[a][b]["link"].port_at(a)


def _host_routes(
    host: Host, graph: nx.Graph, hops: dict[int, routing.Hops],
    groups: dict[int, GroupTable], options: Options,
) -> list[FlowRule]:
    route = cookie(COOKIE_ROUTE, host.mac)
    to_host = match(eth_dst=host.mac)
    rules = [FlowRule(host.dpid, TABLE_FORWARD, PRIO_ROUTE, to_host,
                      (("output", host.port),), cookie=route)]
    for node, hop in hops.items():
        primary_ports = [_port(graph, node, n) for n in hop.primary]
        backup = hop.backup if options.protection else None
        backup_port = _port(graph, node, backup) if backup is not None else None
        rules.append(FlowRule(node, TABLE_FORWARD, PRIO_ROUTE, to_host,
                              _forward(groups[node], primary_ports, backup_port), cookie=route))
        if options.protection:
            rules += _uturn_rules(node, host.mac, hop, hops, primary_ports, backup_port,
                                  groups[node], route)
    return rules


def _uturn_rules(
    node: int, mac: str, hop: routing.Hops, hops: dict[int, routing.Hops],
    primary_ports: list[int], backup_port: int | None, table: GroupTable, route: int,
) -> list[FlowRule]:
    """Rules for packets a neighbour sends back to us after its own primaries failed:
    from a primary neighbour they go on by our other ports; from our backup neighbour
    they go back to it (IN_PORT) only when our primaries are gone too."""
    rules = []
    for n, port in zip(hop.primary, primary_ports, strict=True):
        others = [p for p in primary_ports if p != port]
        others += [backup_port] if backup_port is not None else []
        if others and n in hops and hops[n].backup == node:
            rules.append(FlowRule(
                node, TABLE_FORWARD, PRIO_UTURN, match(eth_dst=mac, in_port=port),
                _failover(table, others), cookie=route))
    b = hop.backup
    if backup_port is not None and b in hops and (node in hops[b].primary
                                                  or hops[b].backup == node):
        buckets = [Bucket((("output", p),), watch_port=p) for p in primary_ports]
        buckets.append(Bucket((("output", IN_PORT),), watch_port=backup_port))
        rules.append(FlowRule(
            node, TABLE_FORWARD, PRIO_UTURN, match(eth_dst=mac, in_port=backup_port),
            (("group", table.get("ff", buckets)),), cookie=route))
    return rules


def _forward(table: GroupTable, primary: list[int], backup: int | None) -> tuple:
    """Actions toward a destination: one port, an ECMP select group, either guarded by a
    fast-failover group when there is a backup."""
    if len(primary) > 1:
        select = table.get("select", (
            Bucket((("output", p),), watch_port=p, weight=1) for p in primary))
        if backup is None:
            return (("group", select),)
        return (("group", table.get("ff", (
            Bucket((("group", select),), watch_group=select),
            Bucket((("output", backup),), watch_port=backup),
        ))),)
    if backup is None:
        return (("output", primary[0]),)
    return _failover(table, [primary[0], backup])


def _failover(table: GroupTable, ports: list[int]) -> tuple:
    return (("group", table.get("ff", (
        Bucket((("output", p),), watch_port=p) for p in ports))),)
