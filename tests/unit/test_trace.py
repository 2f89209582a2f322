"""`sdnctl trace`'s core (sdn.explain.trace) on compiled rules: the path the routes take,
every ECMP path, the rule and policy object at each hop, drops and VNF arms named."""

from __future__ import annotations

import networkx as nx

from sdn.compile.chain_model import VnfInstance
from sdn.compile.desired import desired_rules
from sdn.explain.behaviour import cases, changes
from sdn.explain.trace import Context, Probe, trace
from sdn.model.rules import FlowRule
from sdn.policy.load import load_policy
from testing.flowsim import fat_tree, snapshot_from_graph


def context(snapshot, vnfs=()) -> Context:
    return Context(switch_name=lambda dpid: f"s{dpid}",
                   port_name=lambda dpid, port: f"s{dpid}-eth{port}",
                   hosts_at={(h.dpid, h.port): f"h{h.dpid}" for h in snapshot.hosts},
                   object_of=lambda cookie: f"object {cookie:#x}", vnfs=tuple(vnfs),
                   mac_of=lambda ip: next((h.mac for h in snapshot.hosts if ip in h.ips),
                                          None))


def rule_text(rule: FlowRule) -> dict:
    return {"table": rule.table, "priority": rule.priority, "cookie": rule.cookie}


def probe(snapshot, src: int, dst: int, **kwargs) -> Probe:
    a = next(h for h in snapshot.hosts if h.dpid == src)
    b = next(h for h in snapshot.hosts if h.dpid == dst)
    return Probe(a.mac, a.ips[0], a.dpid, a.port, b.mac, b.ips[0], **kwargs)


def test_a_ring_path_hop_by_hop():
    snapshot = snapshot_from_graph(nx.cycle_graph(range(1, 7)))
    rules = desired_rules(None, snapshot)
    result = trace(snapshot, rules, probe(snapshot, 1, 3, proto="tcp", dport=80),
                   context(snapshot), rule_text)
    assert [v["switch"] for v in result["visits"]] == ["s1", "s2", "s3"]
    assert [v["from"] for v in result["visits"]] == [None, 0, 1]
    assert result["outcome"] == {"delivered": ["h3"], "through_vnfs": [], "looped": False,
                                 "to_controller": [], "dropped": False}
    first = result["visits"][0]
    assert first["in_port"] == "s1-eth3"  # the host's port: after the two ring links
    assert first["rules"][0]["table"] == 0 and first["rules"][0]["object"].startswith("object")
    assert [o["kind"] for o in first["out"]] == ["link"]
    assert result["visits"][-1]["out"] == [{"port": "s3-eth3", "port_no": 3,
                                            "kind": "delivered", "to": "h3"}]


def test_every_ecmp_path_is_shown():
    snapshot = snapshot_from_graph(fat_tree(4))
    rules = desired_rules(None, snapshot)
    src, dst = snapshot.hosts[0], snapshot.hosts[-1]
    result = trace(snapshot, rules, Probe(src.mac, src.ips[0], src.dpid, src.port, dst.mac,
                                          dst.ips[0], "udp", 5000, 5001),
                   context(snapshot), rule_text)
    cores = {v["switch"] for v in result["visits"]} & {f"s{c}" for c in range(1, 5)}
    assert len(cores) > 1  # pod to pod: through more than one core
    assert any(len(g["buckets"]) > 1 for v in result["visits"] for g in v["groups"])
    assert set(result["outcome"]["delivered"]) == {f"h{dst.dpid}"}


def test_an_unknown_destination_is_not_delivered():
    snapshot = snapshot_from_graph(nx.path_graph(range(1, 4)))
    rules = desired_rules(None, snapshot)
    src = snapshot.hosts[0]
    result = trace(snapshot, rules, Probe(src.mac, src.ips[0], src.dpid, src.port,
                                          "00:00:00:ee:ee:ee", "10.9.9.9"),
                   context(snapshot), rule_text)
    assert result["outcome"]["delivered"] == []
    assert result["outcome"]["to_controller"] or result["outcome"]["dropped"]


CHAIN = """version: 1
vnfs:
  fw:
    type: firewall
    switch: s2
    default: drop
    rules: [{action: allow, proto: tcp, dst: 10.0.3.1, dst_port: 80}]
  lb: {type: loadbalancer, switch: s2, vip: 10.0.9.9, port: 80,
       backends: [10.0.3.1, 10.0.1.1]}
chains:
  - {name: web, match: {proto: tcp, dst: 10.0.9.9, dst_port: 80}, through: [lb, fw]}
  - {name: ssh, match: {proto: tcp, dst_port: 22}, through: [fw]}
"""


def chain_setup():
    snapshot = snapshot_from_graph(nx.path_graph(range(1, 4)))
    policy = load_policy(CHAIN)
    instances = [VnfInstance("lb", "lb", 2, 10, 11), VnfInstance("fw", "fw", 2, 12, 13)]
    rules = desired_rules(policy, snapshot, instances)
    vnfs = [(i.vnf, i.instance, i.dpid, i.ingress_port, i.egress_port) for i in instances]
    return snapshot, policy, rules, context(snapshot, vnfs)


def test_a_load_balancer_sends_the_packet_to_each_backend_and_the_firewall_judges():
    snapshot, policy, rules, ctx = chain_setup()
    src = next(h for h in snapshot.hosts if h.dpid == 2)
    web = trace(snapshot, rules, Probe(src.mac, src.ips[0], src.dpid, src.port,
                                       policy.virtual_ips()["10.0.9.9"], "10.0.9.9", "tcp",
                                       40000, 80), ctx, rule_text, policy)
    verdicts = {(n["vnf"], n["verdict"].split(" (")[0]) for n in web["vnfs"]}
    assert ("lb", "to one of 10.0.3.1, 10.0.1.1") in verdicts
    assert ("fw", "allow by rule 1") in verdicts  # to 10.0.3.1:80
    assert ("fw", "drop by default") in verdicts  # to 10.0.1.1: no rule allows it
    assert web["outcome"]["delivered"] == ["h3"]
    assert web["outcome"]["through_vnfs"] == ["fw", "lb"]


def test_a_firewall_drop_ends_the_packet():
    snapshot, policy, rules, ctx = chain_setup()
    ssh = trace(snapshot, rules, probe(snapshot, 1, 3, proto="tcp", dport=22), ctx,
                rule_text, policy)
    assert [n["verdict"] for n in ssh["vnfs"]] == ["drop by default (no rule matches)"]
    assert ssh["outcome"]["delivered"] == [] and ssh["outcome"]["dropped"]
    other = trace(snapshot, rules, probe(snapshot, 1, 3, proto="udp", dport=53), ctx,
                  rule_text, policy)
    assert other["vnfs"] == [] and other["outcome"]["delivered"] == ["h3"]


def test_a_behavioural_diff_names_the_traffic_that_changes():
    snapshot, policy, rules, ctx = chain_setup()
    without_lb = load_policy(CHAIN.replace("through: [lb, fw]", "through: [fw]"))
    instances = [VnfInstance("lb", "lb", 2, 10, 11), VnfInstance("fw", "fw", 2, 12, 13)]
    after = desired_rules(without_lb, snapshot, instances)
    probes = cases([policy, without_lb], list(snapshot.hosts))
    assert any(c.probe.dst_ip == "10.0.9.9" and c.probe.dport == 80 for c in probes)
    assert any(c.probe.dport == 22 for c in probes)  # the ssh chain's packet

    def run(probe, changed):
        return trace(snapshot, after if changed else rules, probe, ctx, rule_text,
                     without_lb if changed else policy)

    found = changes(probes, run)
    web = [c for c in found if "10.0.9.9 tcp/80" in c["traffic"]]
    assert len(web) == 1, found
    assert "via lb→fw" in web[0]["before"] and web[0]["after"].startswith("dropped")
    assert not [c for c in found if "tcp/22" in c["traffic"]]  # ssh: unchanged
    assert changes(probes, lambda probe, _changed: run(probe, False)) == []
