"""Traffic classes: table-1 rules, precedence, port ranges, edge-only marking, meters and
their codec and diff, and the egress HTB plan."""

from __future__ import annotations

import itertools
import json
import struct
from types import SimpleNamespace

import networkx as nx
import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.compile import classes as qos
from sdn.compile import queues
from sdn.compile.desired import DEFAULT_CAPACITY_BPS, DesiredCache, desired_rules
from sdn.controller import tc_helper as tcqueues
from sdn.explain.flowsim import Network
from sdn.model.cookies import COOKIE_CLASS, cookie
from sdn.model.pipeline import METADATA_FROM_LINK, TABLE_CHAIN, TABLE_INGRESS, TABLE_POLICY
from sdn.model.rules import FlowRule, Meter, SwitchRules, match
from sdn.model.topology import Host
from sdn.policy.load import load_policy
from sdn.reconcile.diff import diff
from sdn.southbound import codec
from sdn.southbound.connection import SwitchConnection
from testing.flowsim import snapshot_from_graph

POLICY = """\
version: 1
hosts:
  h1: {mac: "00:00:00:00:01:01", ip: 10.0.0.1}
classes:
  - {name: voice, match: {proto: udp, src: h1, dst_port: "5000-5010"}, priority: high,
     min_rate: 20mbit}
  - {name: web, match: {proto: tcp, dst: 10.0.0.0/24, dst_port: 80}, priority: medium}
  - {name: bulk, match: {proto: tcp}, priority: low, max_rate: 10mbit}
"""


def linear(n: int = 3):
    """Switches 1..n in a line, one host on each (port numbers as Mininet gives them)."""
    snapshot = snapshot_from_graph(nx.path_graph(range(1, n + 1)))
    hosts = tuple(Host(h.mac, h.dpid, h.port, (f"10.0.0.{h.dpid}",)) for h in snapshot.hosts)
    return snapshot.__class__(snapshot.switches, snapshot.links, hosts, snapshot.weights)


def table1(rules: SwitchRules) -> list[FlowRule]:
    return sorted((r for r in rules.flows.values() if r.table == TABLE_POLICY and r.priority),
                  key=lambda r: -r.priority)


# port ranges


@pytest.mark.parametrize("bits", [4, 6])
def test_port_masks_cover_exactly_the_range(bits):
    universe = range(1 << bits)
    for low, high in itertools.combinations_with_replacement(universe, 2):
        masks = qos.port_masks(low, high, bits)
        covered = [p for p in universe for v, m in masks if p & m == v]
        assert sorted(covered) == list(range(low, high + 1)), (low, high)  # exact, disjoint
        assert all(v & ~m == 0 for v, m in masks)  # canonical: no bits under the mask
        assert len(masks) <= max(1, 2 * (bits - 1))


def test_port_masks_minimal_on_16_bits():
    assert qos.port_masks(0, 65535) == [(0, 0)]
    assert qos.port_masks(80, 80) == [(80, 0xFFFF)]
    assert qos.port_masks(1024, 2047) == [(1024, 0xFC00)]
    masks = qos.port_masks(1000, 2000)
    assert sum(1 for p in range(65536) for v, m in masks if p & m == v) == 1001
    assert len(masks) == 8  # 1000-1007, -1023, -1535, -1791, -1919, -1983, -1999, 2000
    with pytest.raises(ValueError):
        qos.port_masks(10, 9)


# rules


def test_every_switch_gets_each_class_in_precedence_order():
    policy = load_policy(POLICY)
    snapshot = linear()
    ids = policy.object_ids()
    rules = qos.class_rules(policy, snapshot)
    assert sorted(rules) == [1, 2, 3]
    meter_id = qos.meter_ids(policy)["bulk"]
    for dpid, switch in rules.items():
        flows = table1(switch)
        by_class = {}
        for rule in flows:
            by_class.setdefault(rule.cookie, []).append(rule)
            fields = dict(rule.match)
            assert fields["eth_type"] == 0x0800
            assert fields["metadata"] == (0, METADATA_FROM_LINK)
            assert rule.goto == TABLE_CHAIN and rule.dpid == dpid
        voice, web, bulk = (by_class[cookie(COOKIE_CLASS, ids[f"class:{n}"])]
                            for n in ("voice", "web", "bulk"))
        assert min(r.priority for r in voice) > max(r.priority for r in web)
        assert min(r.priority for r in web) > max(r.priority for r in bulk)
        assert min(r.priority for r in bulk) > 0  # above table 1's miss rule
        assert len(voice) == 3  # 5000-5010 = 5000-5007, 5008-5009, 5010
        assert {dict(r.match)["ipv4_src"] for r in voice} == {"10.0.0.1"}
        assert {dict(r.match)["ip_proto"] for r in voice} == {17}
        assert {r.actions for r in voice} == {(("set_field", "ip_dscp", 46),)}
        assert dict(web[0].match)["ipv4_dst"] == ("10.0.0.0", "255.255.255.0")
        assert dict(web[0].match)["tcp_dst"] == 80
        assert web[0].actions == (("set_field", "ip_dscp", 26),) and web[0].meter is None
        assert "tcp_dst" not in dict(bulk[0].match) and bulk[0].meter == meter_id
        assert switch.meters == {meter_id: Meter(dpid, meter_id, 10_000, 5000)}
        assert len(sorted(switch.flows.values())) == len(flows)  # rules stay comparable


def trace(net: Network, src: Host, dst: Host, proto: int, port: int, dscp: int = 46):
    """A packet the sender marked EF itself: only the edge's classification counts."""
    pkt = {"eth_src": src.mac, "eth_dst": dst.mac, "eth_type": 0x0800, "ip_proto": proto,
           "ipv4_src": src.ips[0], "ipv4_dst": dst.ips[0], "ip_dscp": dscp}
    l4 = {6: "tcp", 17: "udp"}[proto]
    pkt |= {f"{l4}_src": 40000, f"{l4}_dst": port}
    return net.send(src.dpid, src.port, pkt)


def test_classified_once_at_the_ingress_edge_with_first_match_winning():
    policy = load_policy(POLICY)
    snapshot = linear()
    rules = desired_rules(policy, snapshot)
    net = Network(snapshot, rules)
    h1, h2, h3 = snapshot.hosts
    meter_id = qos.meter_ids(policy)["bulk"]
    cases = [  # (src, dst, proto, port) -> DSCP, meter
        (h1, h3, 17, 5004, 46, None),  # voice
        (h2, h3, 17, 5004, 0, None),  # voice is from h1 only: unclassified, best effort
        (h1, h3, 6, 80, 26, None),  # web before bulk
        (h3, h1, 6, 5201, 10, meter_id),  # bulk, the other way
    ]
    for src, dst, proto, port, dscp, meter in cases:
        t = trace(net, src, dst, proto, port)
        assert t.delivered == [(dst.dpid, dst.port)], (src, dst, port)
        marks = [(d, v) for d, f, v in t.set_fields if f == "ip_dscp"]
        assert marks == [(src.dpid, dscp)], (src, dst, port)
        assert t.meters == ([] if meter is None else [(src.dpid, meter)])


def test_link_ports_flag_metadata_and_host_ports_do_not():
    snapshot = linear()
    rules = desired_rules(None, snapshot)
    link_ports = snapshot.link_ports(2)
    table0 = [r for r in rules[2].flows.values() if r.table == TABLE_INGRESS
              and r.goto is not None]
    flagged = {dict(r.match)["in_port"] for r in table0 if r.write_metadata}
    assert flagged == link_ports
    assert all(r.write_metadata == (METADATA_FROM_LINK, METADATA_FROM_LINK)
               for r in table0 if r.write_metadata)


def test_in_host_class_only_where_the_host_is():
    text = POLICY.replace("{proto: tcp}, priority: low", "{in_host: h1}, priority: low")
    policy = load_policy(text)
    snapshot = linear()
    rules = qos.class_rules(policy, snapshot)
    h1 = snapshot.hosts[0]
    bulk = [r for s in rules.values() for r in table1(s) if r.meter is not None]
    assert [(r.dpid, dict(r.match)["in_port"]) for r in bulk] == [(h1.dpid, h1.port)]
    unseen = snapshot.__class__(snapshot.switches, snapshot.links, snapshot.hosts[1:])
    assert not [r for s in qos.class_rules(policy, unseen).values()
                for r in table1(s) if r.meter is not None]


def test_editing_one_class_changes_only_its_rules_and_meter():
    policy = load_policy(POLICY)
    edited = load_policy(POLICY.replace("max_rate: 10mbit", "max_rate: 20mbit"))
    snapshot = linear()
    before, after = desired_rules(policy, snapshot), desired_rules(edited, snapshot)
    bulk_before = cookie(COOKIE_CLASS, policy.object_ids()["class:bulk"])
    bulk_after = cookie(COOKIE_CLASS, edited.object_ids()["class:bulk"])
    old_meter, new_meter = qos.meter_ids(policy)["bulk"], qos.meter_ids(edited)["bulk"]
    assert old_meter != new_meter
    for dpid in before:
        changes = diff(before[dpid], after[dpid])
        assert {r.cookie for r in changes.flow_adds} == {bulk_after}
        assert not changes.flow_deletes  # same keys: the ADD replaces them
        assert all(r.meter == new_meter for r in changes.flow_adds)
        assert [m.meter_id for m in changes.meter_adds] == [new_meter]
        assert [m.meter_id for m in changes.meter_deletes] == [old_meter]
        assert not diff(after[dpid], after[dpid])
    assert bulk_before != bulk_after


def test_meter_ids_stay_when_classes_are_added():
    policy = load_policy(POLICY)
    more = load_policy(POLICY.replace("classes:\n", "classes:\n  - {name: first, match: "
                                      "{proto: udp, dst_port: 9}, max_rate: 1mbit}\n"))
    assert qos.meter_ids(more)["bulk"] == qos.meter_ids(policy)["bulk"]
    assert len(set(qos.meter_ids(more).values())) == 2


def test_burst_scales_with_the_rate():
    assert qos.burst_kbits(10_000_000) == 5000  # half a second of traffic
    assert qos.burst_kbits(100_000) == qos.MIN_BURST_KBITS


# codec and switch diff


def test_meter_codec_round_trip_and_foreign_meters():
    meter = Meter(1, 77, 10_000, 500)
    msg = codec.meter_mod(None, meter, ofp.OFPMC_ADD)
    assert msg.flags == ofp.OFPMF_KBPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    config = parser.OFPMeterConfigStats(flags=msg.flags, meter_id=77, bands=msg.bands)
    assert codec.decode_meter(1, config) == meter
    pktps = parser.OFPMeterConfigStats(flags=ofp.OFPMF_PKTPS, meter_id=77, bands=msg.bands)
    assert codec.decode_meter(1, pktps) != meter  # not the flags we set: replaced
    packets = Meter(1, 0xFFFE, 200, 200, pktps=True)
    msg = codec.meter_mod(None, packets, ofp.OFPMC_ADD)
    assert msg.flags == ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
    config = parser.OFPMeterConfigStats(flags=msg.flags, meter_id=0xFFFE, bands=msg.bands)
    assert codec.decode_meter(1, config) == packets


def test_class_rule_codec_round_trip():
    policy = load_policy(POLICY)
    for rule in table1(qos.class_rules(policy, linear())[1]):
        mod = codec.flow_add(None, rule)
        buf = bytearray()
        mod.match.serialize(buf, 0)
        stat = SimpleNamespace(table_id=rule.table, priority=rule.priority, cookie=rule.cookie,
                               match=parser.OFPMatch.parser(bytes(buf), 0),
                               instructions=mod.instructions)
        assert codec.decode_flow(1, stat) == rule


def test_batched_flow_adds_are_the_messages_os_ken_would_send():
    dp = FakeDatapath()
    policy = load_policy(POLICY)
    rules = [r for s in qos.class_rules(policy, linear()).values() for r in s.flows.values()]
    conn = SwitchConnection(dp)
    conn.flows_read = conn.groups_read = conn.meters_read = True
    conn.apply(SwitchRules({r.key: r for r in rules if r.dpid == 2}))
    raw = [m for m in dp.sent if isinstance(m, tuple)]
    assert len(raw) == len([r for r in rules if r.dpid == 2])
    assert len({xid for _, xid, _ in raw}) == len(raw)  # every message its own xid
    for (_, xid, buf), rule in zip(raw, sorted(r for r in rules if r.dpid == 2), strict=True):
        msg = codec.flow_add(dp, rule)
        msg.set_xid(xid)
        msg.serialize()
        assert buf == bytes(msg.buf)


class FakeDatapath:
    """Records what is sent: os-ken messages as they are, raw writes split into
    (OpenFlow type, xid, bytes) per message."""

    id = 1
    ofproto = ofp
    ofproto_parser = parser

    def __init__(self) -> None:
        self.sent: list = []

    def send_msg(self, msg) -> None:
        self.sent.append(msg)

    def send(self, buf: bytes) -> None:
        while buf:
            _, kind, length, xid = struct.unpack_from("!BBHI", buf)
            self.sent.append((kind, xid, buf[:length]))
            buf = buf[length:]


def kind(sent) -> str:
    return "FlowMod(raw)" if isinstance(sent, tuple) else type(sent).__name__


def desired_with_meter(meter_id: int = 5) -> SwitchRules:
    rules = SwitchRules(meters={meter_id: Meter(1, meter_id, 1000, 100)})
    rules.add_flow(FlowRule(1, TABLE_POLICY, 10, match(ip_proto=6, eth_type=0x800), meter=meter_id,
                            goto=TABLE_CHAIN))
    return rules


def test_apply_orders_meters_around_flows_and_reapply_sends_nothing():
    dp = FakeDatapath()
    conn = SwitchConnection(dp)
    conn.flows_read = conn.groups_read = conn.meters_read = True
    desired = desired_with_meter()
    conn.apply(desired)
    assert [kind(m) for m in dp.sent] == ["OFPMeterMod", "FlowMod(raw)", "OFPBarrierRequest"]
    assert dp.sent[1][0] == ofp.OFPT_FLOW_MOD
    assert dp.sent[0].command == ofp.OFPMC_ADD
    dp.sent.clear()
    assert not conn.apply(desired) and dp.sent == []
    conn.apply(SwitchRules())
    assert [kind(m) for m in dp.sent] == ["FlowMod(raw)", "OFPMeterMod", "OFPBarrierRequest"]
    flow_mod = parser.OFPFlowMod.parser(None, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                                        len(dp.sent[0][2]), dp.sent[0][1], dp.sent[0][2])
    assert flow_mod.command == ofp.OFPFC_DELETE_STRICT
    assert dp.sent[1].command == ofp.OFPMC_DELETE


def test_unread_meters_are_inferred_from_the_flows_that_use_them():
    conn = SwitchConnection(FakeDatapath())
    desired = desired_with_meter()
    conn.held = SwitchRules(dict(desired.flows))  # a restarted controller read the flows
    assert not conn.plan(desired)
    assert [m.meter_id for m in conn.plan(SwitchRules()).meter_deletes] == [5]
    conn.meters_read = True  # read, and the switch had none: then they are added
    assert [m.meter_id for m in conn.plan(desired).meter_adds] == [5]


def test_meter_config_reply_fills_held_meters():
    conn = SwitchConnection(FakeDatapath())
    band = parser.OFPMeterBandDrop(rate=1000, burst_size=100)
    config = parser.OFPMeterConfigStats(flags=codec.METER_FLAGS, meter_id=5, bands=[band])
    conn.on_meter_config([config], more=False)
    assert conn.meters_read and conn.held.meters == {5: Meter(1, 5, 1000, 100)}


# egress queues


def test_queue_plan_guarantees_min_rates_by_level():
    policy = load_policy(POLICY)
    plan = queues.plan_queues(policy, {"s1-eth1": 50_000_000, "s1-eth2": 1_000_000_000})
    assert not plan.remove
    port = plan.ports["s1-eth1"]
    levels = {c.dscp: c for c in port.classes}
    high, medium, low, unmarked = (levels[(46,)], levels[(26,)], levels[(10,)], levels[()])
    assert high.rate == 20_000_000  # voice's min_rate
    assert medium.rate == low.rate == unmarked.rate == 500_000  # 1% floor
    assert {c.ceil for c in port.classes} == {50_000_000}
    assert [high.prio, medium.prio, low.prio, unmarked.prio] == [0, 1, 2, 3]
    assert port.default == unmarked.minor
    assert len({c.minor for c in port.classes}) == 4
    assert plan.ports["s1-eth2"].capacity == 1_000_000_000


def test_queue_plan_scales_oversubscribed_guarantees_to_the_link():
    text = POLICY.replace("min_rate: 20mbit", "min_rate: 100mbit")
    port = queues.plan_queues(load_policy(text), {"p": 50_000_000}).ports["p"]
    assert sum(c.rate for c in port.classes) <= 50_000_000
    assert max(port.classes, key=lambda c: c.rate).dscp == (46,)


def test_no_classes_removes_our_queues_and_json_round_trips():
    plan = queues.plan_queues(load_policy("version: 1\n"), {"s1-eth1": 10**9})
    assert plan.ports == {} and plan.remove == ("s1-eth1",)
    full = queues.plan_queues(load_policy(POLICY), {"a": 10**8})
    assert queues.QueuePlan.from_json(json.loads(json.dumps(full.to_json()))) == full


def test_port_capacities_from_policy_links():
    snapshot = linear()
    text = POLICY + "topology:\n  links:\n    - {between: [s1, s2], capacity: 50mbit}\n"
    policy = load_policy(text)
    s1_s2 = next(lk for lk in snapshot.links if {lk.a, lk.b} == {1, 2})
    s2_s3 = next(lk for lk in snapshot.links if {lk.a, lk.b} == {2, 3})
    names = {(1, s1_s2.port_at(1)): "s1-eth1", (2, s1_s2.port_at(2)): "s2-eth1",
             (2, s2_s3.port_at(2)): "s2-eth2", (1, 9): "s1-eth9"}
    caps = queues.port_capacities(policy, snapshot, names)
    assert caps == {"s1-eth1": 50_000_000, "s2-eth1": 50_000_000,
                    "s2-eth2": DEFAULT_CAPACITY_BPS, "s1-eth9": DEFAULT_CAPACITY_BPS}


def test_tc_filter_keys_select_the_dscp_bits():
    port = queues.plan_queues(load_policy(POLICY), {"p": 10**8}).ports["p"]
    _, classes, filters = tcqueues.wanted_state(port)
    assert len(classes) == 5 and len(filters) == 3  # root + 4 levels; unmarked = default
    for classid, value, mask, offset in filters:
        tos = value >> 24
        assert offset == 1 and mask == 0xFC000000  # the TOS byte, its DSCP bits
        dscp = tos >> 2
        level = next(c for c in port.classes if tcqueues.handle(c.minor) == classid)
        assert level.dscp == (dscp,)
        assert tcqueues.dscp_key(dscp) == f"0x{value:08x}/0xfc000000+1"


def test_queue_changes_touch_only_ports_whose_plan_changed():
    policy = load_policy(POLICY)
    ports = {f"s{i}-eth{j}": 10**9 for i in range(1, 201) for j in range(1, 4)}
    applied = queues.plan_queues(policy, ports)
    assert applied.changes_since(queues.QueuePlan({})) == applied

    grown = queues.plan_queues(policy, {**ports, "s201-eth1": 10**9, "s1-eth1": 10**8})
    changes = grown.changes_since(applied)
    assert sorted(changes.ports) == ["s1-eth1", "s201-eth1"] and changes.remove == ()
    assert not queues.plan_queues(policy, ports).changes_since(applied)

    emptied = queues.plan_queues(load_policy("version: 1\n"), ports)
    assert emptied.changes_since(applied).remove == emptied.remove
    assert not emptied.changes_since(emptied)
    # a port that was not there to apply to is tried again next time
    retry = grown.changes_since(grown.without(["s201-eth1"]))
    assert list(retry.ports) == ["s201-eth1"]


def test_a_cached_compile_follows_a_policy_edit_and_back():
    """The routes do not change, the classes do: the cache must not hand out the rules of
    the policy compiled before."""
    policy = load_policy(POLICY)
    edited = load_policy(POLICY.replace("max_rate: 10mbit", "max_rate: 20mbit"))
    snapshot = linear()
    cache = DesiredCache()
    first = desired_rules(policy, snapshot, cache=cache)
    again = desired_rules(policy, snapshot, cache=cache)
    assert again is not first and all(again[d] is first[d] for d in first)  # the same rules
    for p in (edited, policy, edited):
        assert desired_rules(p, snapshot, cache=cache) == desired_rules(p, snapshot)
