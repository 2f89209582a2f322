"""The fixed part of every switch's pipeline: what table 0 traps and learns, where misses
go, and flooding along the spanning tree. Pure."""

from __future__ import annotations

import networkx as nx

from sdn.compile.arp import ETH_TYPE_ARP
from sdn.model.cookies import COOKIE_CONTROL, COOKIE_FLOOD, COOKIE_LEARN, cookie
from sdn.model.pipeline import (
    METADATA_FROM_LINK,
    TABLE_CHAIN,
    TABLE_FORWARD,
    TABLE_INGRESS,
    TABLE_POLICY,
)
from sdn.model.rules import FlowRule, Meter, match
from sdn.model.topology import Snapshot

ETH_TYPE_LLDP = 0x88CC
MULTICAST_BIT = "01:00:00:00:00:00"
PACKET_IN_LEARN_BYTES = 128
NO_BUFFER = 0xFFFF
PRIO_LLDP = 1000
PRIO_LINK_PORT = 950  # LLDP aside, whatever crosses a link goes on (flooded ARP too)
PRIO_GRATUITOUS_ARP = 920
PRIO_KNOWN_ARP = 910
PRIO_ARP = 900
PRIO_KNOWN_SOURCE = 100
PRIO_FLOOD = 100
PRIO_MISS = 0

# What a switch sends the controller only to learn hosts or answer ARP is metered per
# switch in packets/s, so a flood of new sources cannot swamp the controller or bloat
# every table; LLDP is not metered, so discovery goes on during a flood. Known hosts'
# traffic never meets these meters. Ids above every class meter's (sdn.compile.classes).
METER_ARP_IN = 0xFFFE  # unknown ARP, gratuitous ARP
METER_LEARN_IN = 0xFFFF  # first packets of unknown sources, unknown destinations
ARP_IN_PPS = 200
LEARN_IN_PPS = 500


def base_pipeline(dpid: int, snapshot: Snapshot) -> list[FlowRule]:
    control = cookie(COOKIE_CONTROL, "pipeline")
    learn = cookie(COOKIE_LEARN, "hosts")
    to_controller = ("controller", NO_BUFFER)
    rules = [
        FlowRule(dpid, TABLE_INGRESS, PRIO_LLDP, match(eth_type=ETH_TYPE_LLDP),
                 (to_controller,), cookie=control),
        FlowRule(dpid, TABLE_INGRESS, PRIO_ARP, match(eth_type=ETH_TYPE_ARP),
                 (to_controller,), cookie=control, meter=METER_ARP_IN),
        FlowRule(dpid, TABLE_INGRESS, PRIO_MISS, match(),
                 (("controller", PACKET_IN_LEARN_BYTES),), goto=TABLE_POLICY, cookie=learn,
                 meter=METER_LEARN_IN),
        FlowRule(dpid, TABLE_POLICY, PRIO_MISS, match(), goto=TABLE_CHAIN, cookie=control),
        FlowRule(dpid, TABLE_CHAIN, PRIO_MISS, match(), goto=TABLE_FORWARD, cookie=control),
        FlowRule(dpid, TABLE_FORWARD, PRIO_MISS, match(), (to_controller,), cookie=control,
                 meter=METER_LEARN_IN),
    ]
    rules += [
        FlowRule(dpid, TABLE_INGRESS, PRIO_LINK_PORT, match(in_port=port),
                 goto=TABLE_POLICY, cookie=control,
                 write_metadata=(METADATA_FROM_LINK, METADATA_FROM_LINK))
        for port in sorted(snapshot.link_ports(dpid))
    ]
    local = [h for h in snapshot.hosts if h.dpid == dpid]
    rules += [
        FlowRule(dpid, TABLE_INGRESS, PRIO_KNOWN_SOURCE, match(in_port=h.port, eth_src=h.mac),
                 goto=TABLE_POLICY, cookie=learn)
        for h in local
    ]
    for h in local:
        for ip in h.ips:
            arp_from = {"in_port": h.port, "eth_src": h.mac, "eth_type": ETH_TYPE_ARP,
                        "arp_spa": ip}
            rules.append(FlowRule(dpid, TABLE_INGRESS, PRIO_KNOWN_ARP, match(**arp_from),
                                  goto=TABLE_POLICY, cookie=learn))
            rules.append(FlowRule(dpid, TABLE_INGRESS, PRIO_GRATUITOUS_ARP,
                                  match(**arp_from, arp_tpa=ip), (to_controller,),
                                  cookie=learn, meter=METER_ARP_IN))
    return rules


def packet_in_meters(dpid: int) -> list[Meter]:
    """The meters `base_pipeline`'s controller-bound rules use (a burst of one second)."""
    return [Meter(dpid, METER_ARP_IN, ARP_IN_PPS, ARP_IN_PPS, pktps=True),
            Meter(dpid, METER_LEARN_IN, LEARN_IN_PPS, LEARN_IN_PPS, pktps=True)]


def flood_rules(dpid: int, snapshot: Snapshot, tree: nx.Graph) -> list[FlowRule]:
    """Broadcast and multicast leave by tree and settled edge ports only, never where they
    came in; what arrives on a link the tree does not use is dropped, so loops cannot storm
    (not even in the first moments, before LLDP has found every link)."""
    links = snapshot.link_ports(dpid)
    tree_ports = {
        lk.port_at(dpid) for lk in snapshot.links
        if dpid in (lk.a, lk.b) and tree.has_edge(lk.a, lk.b)
        and tree[lk.a][lk.b].get("link") == lk
    }
    edge = snapshot.switches[dpid] - links - snapshot.unsettled.get(dpid, frozenset())
    flood_set = edge | tree_ports
    flood = cookie(COOKIE_FLOOD, "tree")
    rules = []
    for port in sorted(snapshot.switches[dpid]):
        outs = tuple(("output", p) for p in sorted(flood_set - {port})) if port in flood_set else ()
        rules.append(FlowRule(
            dpid, TABLE_FORWARD, PRIO_FLOOD,
            match(in_port=port, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)), outs, cookie=flood))
    return rules
