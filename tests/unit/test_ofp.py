"""Rules survive the trip to OpenFlow messages and back unchanged (what makes re-applying
and restarting free of FlowMods)."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.compile.routes import compile_network
from sdn.southbound import codec as ofp
from testing.flowsim import fat_tree, snapshot_from_graph


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


def parsed_flow_mod(rule):
    """The FlowMod bytes we send for `rule`, parsed back as a switch would read them."""
    from os_ken.ofproto import ofproto_v1_3 as ofproto

    buf = bytes(ofp.flow_add_bytes(rule, 7))
    return parser.OFPFlowMod.parser(None, ofproto.OFP_VERSION, ofproto.OFPT_FLOW_MOD,
                                    len(buf), 7, buf)


def test_idle_timeout_is_sent_with_flow_removed_and_read_back():
    from os_ken.ofproto import ofproto_v1_3 as ofproto

    from sdn.model.rules import FlowRule, match

    rule = FlowRule(1, 2, 50000, match(eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.1",
                                       ipv4_dst="10.0.0.5", tcp_src=40000, tcp_dst=80),
                    goto=3, cookie=0x0604000012345678, idle_timeout=10)
    mod = parsed_flow_mod(rule)
    assert mod.idle_timeout == 10 and mod.hard_timeout == 0
    assert mod.flags & ofproto.OFPFF_SEND_FLOW_REM
    stat = parser.OFPFlowStats(table_id=mod.table_id, priority=mod.priority,
                               idle_timeout=mod.idle_timeout, flags=mod.flags,
                               cookie=mod.cookie, match=mod.match,
                               instructions=mod.instructions)
    assert ofp.decode_flow(1, stat) == rule
    permanent = parsed_flow_mod(FlowRule(1, 2, 50000, rule.match, goto=3))
    assert (permanent.idle_timeout, permanent.flags) == (0, 0)
    assert ofp.decode_flow(1, as_stats(rule)) != rule  # the timeout is part of the rule
    assert ofp.match_items(mod.match) == rule.match


def test_moves_read_back_with_nxm_field_names_compare_equal():
    """Open vSwitch reports a move of OXM fields with their NXM names (eth_src_nxm)."""
    as_ovs_reports = parser.NXActionRegMove(src_field="arp_sha_nxm", dst_field="arp_tha_nxm",
                                            n_bits=48)
    assert ofp.decode_actions([as_ovs_reports]) == (("move", "arp_sha", "arp_tha", 48),)


def test_cached_flow_deletes_are_the_messages_os_ken_would_send():
    from sdn.model.rules import FlowRule, match

    for rule in (FlowRule(1, 0, 65535, match(eth_type=0x88CC)),
                 FlowRule(2, 3, 100, match(eth_dst="00:00:00:00:00:01", metadata=(1, 0xFF)))):
        for xid in (1, 0xFFFFFFFF):
            expected = ofp.flow_delete(ofp.Encoder(), rule)
            expected.set_xid(xid)
            expected.serialize()
            assert bytes(ofp.flow_delete_bytes(rule, xid)) == bytes(expected.buf)


def os_ken_bytes(msg, xid):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def test_assembled_flow_mods_are_the_messages_os_ken_would_send():
    """FlowMods are assembled from cached match and instruction bytes: byte for byte what
    os-ken serializes, for every compiled rule and for each kind of action and instruction."""
    from sdn.model.rules import FlowRule, match

    compiled = [rule for switch in compile_network(snapshot_from_graph(fat_tree(4))).values()
                for rule in switch.flows.values()]
    vlan = match(in_port=3, vlan_vid=(0x1000 | 10, 0x1FFF), eth_type=0x0800,
                 ipv4_src=("10.0.0.0", "255.255.255.0"), ip_proto=17, udp_dst=53)
    crafted = [
        FlowRule(1, 1, 40000, vlan, (("set_queue", 2), ("output", 4)), goto=None,
                 cookie=0x0102030405060708, meter=77),
        FlowRule(1, 2, 300, match(eth_dst="0a:00:00:00:00:01"),
                 (("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1000 | 5),
                  ("set_field", "eth_dst", "0a:00:00:00:00:02"), ("controller", 128)),
                 write_metadata=(5, 0xFF), goto=3),
        FlowRule(1, 3, 5, match(eth_type=0x0806, arp_tpa="10.0.0.9"),
                 (("move", "arp_sha", "arp_tha", 48), ("resubmit", 4), ("pop_vlan",))),
        FlowRule(1, 2, 50000, match(eth_type=0x0800, ip_proto=6, tcp_dst=80), goto=3,
                 idle_timeout=10),
        FlowRule(1, 0, 0, match()),
    ]
    for rule in compiled + crafted:
        for xid in (1, 0xFFFFFFFF):
            assert ofp.flow_add_bytes(rule, xid) == os_ken_bytes(
                ofp.flow_add(ofp.Encoder(), rule), xid), rule
            assert ofp.flow_delete_bytes(rule, xid) == os_ken_bytes(
                ofp.flow_delete(ofp.Encoder(), rule), xid), rule
    assert len(compiled) > 500
