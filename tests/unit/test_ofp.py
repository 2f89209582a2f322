"""Rules survive the trip to OpenFlow messages and back unchanged (what makes re-applying
and restarting free of FlowMods)."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn import ofp
from sdn.compiler import compile_network
from tests.unit.flowsim import fat_tree, snapshot_from_graph


def as_stats(rule):
    """What a switch returns in a flow-stats reply for an installed rule."""
    return parser.OFPFlowStats(
        table_id=rule.table, priority=rule.priority, cookie=rule.cookie,
        match=parser.OFPMatch(**dict(rule.match)), instructions=ofp.instructions(rule))


def as_desc(group):
    mod = ofp.group_mod(None, group, 0)
    return parser.OFPGroupDescStats(type_=mod.type, group_id=mod.group_id, buckets=mod.buckets)


def test_every_compiled_rule_and_group_round_trips():
    rules = compile_network(snapshot_from_graph(fat_tree(4)))
    flows = groups = 0
    for dpid, switch in rules.items():
        for rule in switch.flows.values():
            assert ofp.decode_flow(dpid, as_stats(rule)) == rule
            flows += 1
        for group in switch.groups.values():
            assert ofp.decode_group(dpid, as_desc(group)) == group
            groups += 1
    assert flows > 500 and groups > 20
