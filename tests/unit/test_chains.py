"""Service-chain steering: packets traced through compiled rules and modelled VNFs."""

from __future__ import annotations

import itertools
import zlib
from collections import defaultdict
from dataclasses import replace

import pytest

from sdn.compile.chain_model import (
    MAX_INSTANCES,
    VLAN_PRESENT,
    ChainError,
    SettledFlow,
    VnfInstance,
    bypass_cookie,
)
from sdn.compile.chain_steering import tag_vids
from sdn.compile.chains import compile_chains, without_vnf_ports
from sdn.compile.routes import compile_network
from sdn.controller.placement import specs_for
from sdn.explain.flowsim import Network, Trace, VnfModel
from sdn.model.cookies import (
    CHAIN_BYPASS,
    CHAIN_HEALTH,
    CHAIN_STEER,
    CHAIN_TAG,
    chain_cookie,
    chain_sub_kind,
)
from sdn.model.pipeline import TABLE_CHAIN
from sdn.model.rules import SwitchRules
from sdn.model.topology import Host, Link, Snapshot, Topology
from sdn.policy.load import load_policy

VIP = "10.0.0.100"
VIP_MAC = "02:00:00:00:01:00"
BACKEND_PORT = 8080
ARMS = {"fw": (20, 21), "lb": (22, 23), "mon": (24, 25), "fw-1": (26, 27), "lb-1": (26, 27)}

POLICY = """
version: 1
vnfs:
  fw:  {{type: firewall, switch: s1, failure_mode: {fw_mode}, offload: true}}
  lb:  {{type: loadbalancer, switch: s2, vip: {vip}, vip_mac: "{vip_mac}", port: 80,
        backends: [{{ip: 10.0.0.3, port: {bport}}}, {{ip: 10.0.0.4, port: {bport}}}]}}
  mon: {{type: analyzer, switch: s3, failure_mode: {mon_mode}, offload: true}}
chains:
{chains}
"""
WEB = "  - {name: web, match: {proto: tcp, dst: 10.0.0.100, dst_port: 80}, through: [fw, lb, mon]}"
TO_H5 = "  - {name: plain, match: {proto: udp, dst: 10.0.0.5}, through: [fw, mon]}"


def make_policy(chains=(WEB,), fw_mode="closed", mon_mode="open"):
    text = POLICY.format(fw_mode=fw_mode, mon_mode=mon_mode, vip=VIP, vip_mac=VIP_MAC,
                         bport=BACKEND_PORT, chains="\n".join(chains))
    return load_policy(text)


def host(n: int, dpid: int, port: int) -> Host:
    return Host(mac=f"00:00:00:00:00:{n:02x}", dpid=dpid, port=port, ips=(f"10.0.0.{n}",),
                name=f"h{n}")


def make_snapshot(topology: str) -> Snapshot:
    """Switches 1-3 in a line, or 1-4 in a ring; h1, h2 on s1, h5 on s2, backends h3, h4
    on s3; VNF arms at ports 20+ of the switches the tests choose."""
    if topology == "linear":
        links = (Link.between(1, 1, 2, 1), Link.between(2, 2, 3, 1))
    else:
        links = (Link.between(1, 1, 2, 1), Link.between(2, 2, 3, 1),
                 Link.between(3, 2, 4, 1), Link.between(4, 2, 1, 2))
    switches = {d: frozenset({1, 2, 10, 11, *range(20, 28)}) for d in range(1, 5)}
    if topology == "linear":
        del switches[4]
    hosts = (host(1, 1, 10), host(2, 1, 11), host(5, 2, 10), host(3, 3, 10), host(4, 3, 11))
    return Snapshot(switches, links, hosts)


def instance(name: str, dpid: int, alive: bool = True) -> VnfInstance:
    vnf = name.split("-")[0]
    return VnfInstance(vnf, name, dpid, *ARMS[name], alive)


def standard_instances(**alive: bool) -> list[VnfInstance]:
    return [instance("fw", 1, alive.get("fw", True)), instance("lb", 2, alive.get("lb", True)),
            instance("mon", 3, alive.get("mon", True))]


class LoadBalancerModel:
    """NAT like nfv.functions.loadbalancer: client -> VIP:80 becomes client -> backend:8080 (chosen
    by a hash of the client's address and port), and back."""

    def __init__(self) -> None:
        self.table: dict[tuple, tuple] = {}

    def backend(self, src: str, sport: int) -> str:
        return ("10.0.0.3", "10.0.0.4")[zlib.crc32(f"{src}:{sport}".encode()) % 2]

    def __call__(self, pkt: dict, side: str) -> dict:
        if side == "ingress" and pkt["ipv4_dst"] == VIP and pkt["tcp_dst"] == 80:
            ip = self.backend(pkt["ipv4_src"], pkt["tcp_src"])
            self.table[(ip, BACKEND_PORT, pkt["ipv4_src"], pkt["tcp_src"])] = True
            last = int(ip.rsplit(".", 1)[1])
            return pkt | {"ipv4_dst": ip, "tcp_dst": BACKEND_PORT,
                          "eth_dst": f"00:00:00:00:00:{last:02x}"}
        key = (pkt["ipv4_src"], pkt.get("tcp_src"), pkt["ipv4_dst"], pkt.get("tcp_dst"))
        if side == "egress" and key in self.table:
            return pkt | {"ipv4_src": VIP, "tcp_src": 80, "eth_src": VIP_MAC}
        return pkt


def build(policy, snapshot, instances, settled=()):
    rules = {d: SwitchRules() for d in snapshot.switches}
    for dpid, held in compile_network(without_vnf_ports(snapshot, instances)).items():
        rules[dpid].add_flows(held.flows.values())
        rules[dpid].groups.update(held.groups)
    for dpid, chain_rules in compile_chains(policy, snapshot, instances, settled).items():
        rules[dpid].add_flows(chain_rules)
    lb = LoadBalancerModel()
    models = [VnfModel(i.dpid, i.ingress_port, i.egress_port, lb if i.vnf == "lb" else None)
              for i in instances if i.alive]
    return Network(snapshot, rules, vnfs=models), rules, lb


def tcp(src: Host, dst_ip: str, dst_mac: str, sport: int = 40000, dport: int = 80) -> dict:
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ip_proto": 6,
            "ipv4_src": src.ips[0], "ipv4_dst": dst_ip, "tcp_src": sport, "tcp_dst": dport}


def reply_to(pkt: dict) -> dict:
    """What the destination host answers to a delivered packet."""
    return {**pkt, "eth_src": pkt["eth_dst"], "eth_dst": pkt["eth_src"],
            "ipv4_src": pkt["ipv4_dst"], "ipv4_dst": pkt["ipv4_src"],
            "tcp_src": pkt["tcp_dst"], "tcp_dst": pkt["tcp_src"]}


def send_from(net: Network, snapshot: Snapshot, src: Host, pkt: dict) -> Trace:
    return net.send(src.dpid, src.port, pkt)


def arms(*names_sides: tuple[str, str]) -> list[tuple[int, int]]:
    dpids = {"fw": 1, "lb": 2, "mon": 3, "fw-1": 2}
    return [(dpids[n], ARMS[n][0 if side == "in" else 1]) for n, side in names_sides]


def by_ip(snapshot: Snapshot, ip: str) -> Host:
    return next(h for h in snapshot.hosts if ip in h.ips)


def round_trip(net, snapshot, client: Host, sport: int = 40000):
    out = send_from(net, snapshot, client, tcp(client, VIP, VIP_MAC, sport))
    assert not out.looped and len(out.packets) == 1, out
    server = by_ip(snapshot, out.packets[0]["ipv4_dst"])
    back = send_from(net, snapshot, server, reply_to(out.packets[0]))
    assert not back.looped, back
    return out, back


# --------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("topology", ["linear", "ring"])
def test_chain_visits_vnfs_in_order_and_replies_come_back_in_reverse(topology):
    snapshot = make_snapshot(topology)
    net, _, _ = build(make_policy(), snapshot, standard_instances())
    h1 = by_ip(snapshot, "10.0.0.1")
    out, back = round_trip(net, snapshot, h1)
    assert out.visits == arms(("fw", "in"), ("lb", "in"), ("mon", "in"))
    delivered = out.packets[0]
    assert delivered["ipv4_dst"] in ("10.0.0.3", "10.0.0.4")
    assert delivered["tcp_dst"] == BACKEND_PORT and delivered["vlan_vid"] == 0
    backend = by_ip(snapshot, delivered["ipv4_dst"])
    assert out.delivered == [(backend.dpid, backend.port)]
    assert all(p["vlan_vid"] == 0 for p in out.visit_packets + back.visit_packets)

    assert back.visits == arms(("mon", "out"), ("lb", "out"), ("fw", "out"))
    assert back.delivered == [(h1.dpid, h1.port)]
    assert back.packets[0]["ipv4_src"] == VIP and back.packets[0]["tcp_src"] == 80


def test_unchained_traffic_never_reaches_a_vnf():
    snapshot = make_snapshot("ring")
    policy = make_policy((WEB, TO_H5))
    net, _, _ = build(policy, snapshot, standard_instances())
    vnf_arms = {(i.dpid, p) for i in standard_instances()
                for p in (i.ingress_port, i.egress_port)}
    for src, dst in itertools.permutations(snapshot.hosts, 2):
        for proto_fields in ({"ip_proto": 6, "tcp_src": 1234, "tcp_dst": 80},
                             {"ip_proto": 1}, {"ip_proto": 17, "udp_src": 9, "udp_dst": 53}):
            if proto_fields["ip_proto"] == 17 and "10.0.0.5" in src.ips + dst.ips:
                continue  # chain "plain", or its replies
            pkt = {"eth_src": src.mac, "eth_dst": dst.mac, "eth_type": 0x0800,
                   "ipv4_src": src.ips[0], "ipv4_dst": dst.ips[0], **proto_fields}
            trace = net.send(src.dpid, src.port, pkt)
            assert trace.visits == [], (src.name, dst.name, proto_fields)
            assert trace.delivered == [(dst.dpid, dst.port)]
    # statically too: whatever leads to an arm or pushes a tag matches a tag or a chain
    for held in net.rules.values():
        for rule in held.flows.values():
            outs = {(rule.dpid, a[1]) for a in rule.actions if a[0] == "output"}
            if outs & vnf_arms or ("push_vlan", 0x8100) in rule.actions:
                fields = dict(rule.match)
                assert rule.table == TABLE_CHAIN, rule
                if chain_sub_kind(rule.cookie) == CHAIN_TAG:
                    assert fields["vlan_vid"] & VLAN_PRESENT, rule
                elif chain_sub_kind(rule.cookie) == CHAIN_HEALTH:  # answers to the LB's checks
                    assert (fields["ipv4_dst"], fields["tcp_src"]) == (VIP, BACKEND_PORT), rule
                else:
                    assert chain_sub_kind(rule.cookie) == CHAIN_STEER, rule
                    assert fields["eth_type"] == 0x0800 and "ip_proto" in fields, rule


def test_two_chains_share_a_vnf():
    snapshot = make_snapshot("linear")
    net, _, _ = build(make_policy((WEB, TO_H5)), snapshot, standard_instances())
    h1, h2, h5 = (by_ip(snapshot, f"10.0.0.{n}") for n in (1, 2, 5))
    udp = {"eth_src": h2.mac, "eth_dst": h5.mac, "eth_type": 0x0800, "ip_proto": 17,
           "ipv4_src": h2.ips[0], "ipv4_dst": h5.ips[0], "udp_src": 5000, "udp_dst": 53}
    plain = net.send(h2.dpid, h2.port, udp)
    assert plain.visits == arms(("fw", "in"), ("mon", "in"))
    assert plain.delivered == [(h5.dpid, h5.port)]
    answer = {**udp, "eth_src": h5.mac, "eth_dst": h2.mac, "ipv4_src": h5.ips[0],
              "ipv4_dst": h2.ips[0], "udp_src": 53, "udp_dst": 5000}
    back = net.send(h5.dpid, h5.port, answer)
    assert back.visits == arms(("mon", "out"), ("fw", "out"))
    assert back.delivered == [(h2.dpid, h2.port)]
    web, _ = round_trip(net, snapshot, h1)
    assert web.visits == arms(("fw", "in"), ("lb", "in"), ("mon", "in"))


def test_forged_tags_from_hosts_are_dropped():
    snapshot = make_snapshot("linear")
    instances = standard_instances()
    net, _, _ = build(make_policy(), snapshot, instances)
    vid = tag_vids(instances)["mon/mon"]
    h1, h5 = by_ip(snapshot, "10.0.0.1"), by_ip(snapshot, "10.0.0.5")
    for sender in (h1, h5):
        pkt = tcp(sender, "10.0.0.3", "00:00:00:00:00:03") | {"vlan_vid": VLAN_PRESENT | vid}
        trace = net.send(sender.dpid, sender.port, pkt)
        assert trace.visits == [] and trace.delivered == []


# --------------------------------------------------------------------------- replicas


def test_replicas_keep_both_directions_of_a_flow_on_one_instance_and_spread_clients():
    snapshot = make_snapshot("ring")
    instances = [*standard_instances(), instance("fw-1", 2)]
    net, _, _ = build(make_policy(), snapshot, instances)
    used = {}
    for client in (by_ip(snapshot, "10.0.0.1"), by_ip(snapshot, "10.0.0.2")):
        for sport in (40000, 40001, 40002):
            out, back = round_trip(net, snapshot, client, sport)
            first_in, last_out = out.visits[0], back.visits[-1]
            fw_in = {(1, 20): "fw", (2, 26): "fw-1"}[first_in]
            fw_out = {(1, 21): "fw", (2, 27): "fw-1"}[last_out]
            assert fw_in == fw_out, (client.name, sport)
            assert out.visits[1:] == arms(("lb", "in"), ("mon", "in"))
            used.setdefault(client.name, set()).add(fw_in)
    assert used == {"h1": {"fw-1"}, "h2": {"fw"}}  # low bit of .1 and .2


# --------------------------------------------------------------------------- health checks


def health_answer(backend: Host, probe_port: int) -> dict:
    """A backend's SYN-ACK to a load balancer's check (from VIP:probe_port)."""
    return {**tcp(backend, VIP, VIP_MAC, sport=BACKEND_PORT, dport=probe_port),
            "tcp_flags": 0x12}


@pytest.mark.parametrize("chains", [(), (WEB.replace("dst: 10.0.0.100", "src: 10.0.0.1, "
                                                      "dst: 10.0.0.100"),), (WEB,)])
def test_health_check_answers_reach_the_load_balancer_whatever_the_chains(chains):
    """No chain at all, a chain whose src leaves the VIP out, or one that covers it: the
    backends' answers go straight to the load balancer's egress arm."""
    snapshot = make_snapshot("ring")
    net, _, _ = build(make_policy(chains), snapshot, standard_instances())
    for backend in ("10.0.0.3", "10.0.0.4"):
        trace = net.send(*_place(snapshot, backend), health_answer(by_ip(snapshot, backend),
                                                                   40000))
        assert trace.visits == arms(("lb", "out")), trace


def test_each_replica_gets_the_answers_to_its_own_checks():
    snapshot = make_snapshot("ring")
    policy = load_policy(POLICY.replace("port: 80,", "port: 80, replicas: 2,").format(
        fw_mode="closed", mon_mode="open", vip=VIP, vip_mac=VIP_MAC, bport=BACKEND_PORT,
        chains=WEB))
    lb0, lb1 = instance("lb", 2), replace(instance("lb-1", 4), replica=1)
    net, _, _ = build(policy, snapshot, [instance("fw", 1), lb0, lb1, instance("mon", 3)])
    backend = by_ip(snapshot, "10.0.0.3")
    for probe_port, arm in ((40000, (2, 23)), (40001, (4, 27)), (40002, (2, 23))):
        trace = net.send(backend.dpid, backend.port, health_answer(backend, probe_port))
        assert trace.visits == [arm], (probe_port, trace)


def test_load_balancer_replicas_are_told_which_they_are():
    """The runtime passes each replica its index, which picks its check ports."""
    policy = load_policy(POLICY.replace("port: 80,", "port: 80, replicas: 2,").format(
        fw_mode="closed", mon_mode="open", vip=VIP, vip_mac=VIP_MAC, bport=BACKEND_PORT,
        chains=WEB))
    topology = Topology()
    for dpid in (1, 2, 3):
        topology.add_switch(dpid, [])
        topology.bridge_names[dpid] = f"s{dpid}"
    lbs = [s for s in specs_for(policy, topology).values() if s.name == "lb"]
    assert [(s.instance, s.config["replica"], s.config["replicas"]) for s in lbs] == [
        ("lb-0", 0, 2), ("lb-1", 1, 2)]


def _place(snapshot: Snapshot, ip: str) -> tuple[int, int]:
    h = by_ip(snapshot, ip)
    return h.dpid, h.port


# --------------------------------------------------------------------------- failures


def test_fail_open_skips_a_dead_hop():
    snapshot = make_snapshot("linear")
    net, _, _ = build(make_policy(mon_mode="open"), snapshot, standard_instances(mon=False))
    out, back = round_trip(net, snapshot, by_ip(snapshot, "10.0.0.1"))
    assert out.visits == arms(("fw", "in"), ("lb", "in"))
    assert back.visits == arms(("lb", "out"), ("fw", "out"))
    assert back.delivered == [(1, 10)]


def test_a_vnf_whose_port_is_down_counts_as_dead():
    snapshot = make_snapshot("linear")
    switches = dict(snapshot.switches)
    switches[3] = switches[3] - {ARMS["mon"][1]}
    net, _, _ = build(make_policy(), replace(snapshot, switches=switches),
                      standard_instances())
    out = net.send(1, 10, tcp(by_ip(snapshot, "10.0.0.1"), VIP, VIP_MAC))
    assert out.visits == arms(("fw", "in"), ("lb", "in"))


def test_fail_closed_drops_chain_traffic_only():
    snapshot = make_snapshot("linear")
    net, _, _ = build(make_policy(fw_mode="closed"), snapshot, standard_instances(fw=False))
    h1, h5 = by_ip(snapshot, "10.0.0.1"), by_ip(snapshot, "10.0.0.5")
    out = net.send(h1.dpid, h1.port, tcp(h1, VIP, VIP_MAC))
    assert out.visits == [] and out.delivered == []
    other = net.send(h1.dpid, h1.port, tcp(h1, h5.ips[0], h5.mac))
    assert other.delivered == [(h5.dpid, h5.port)]


def test_fail_closed_drops_at_the_previous_hop():
    snapshot = make_snapshot("linear")
    policy = make_policy(mon_mode="closed")
    net, _, _ = build(policy, snapshot, standard_instances(mon=False))
    out = net.send(1, 10, tcp(by_ip(snapshot, "10.0.0.1"), VIP, VIP_MAC))
    assert out.visits == arms(("fw", "in"), ("lb", "in")) and out.delivered == []


# --------------------------------------------------------------------------- offload


def test_settled_flow_bypasses_the_vnf_that_settled_it_both_ways():
    snapshot = make_snapshot("linear")
    h1 = by_ip(snapshot, "10.0.0.1")
    settled = [SettledFlow("fw", 6, "10.0.0.1", 40000, VIP, 80)]
    net, rules, _ = build(make_policy(), snapshot, standard_instances(), settled)
    out, back = round_trip(net, snapshot, h1, 40000)
    assert out.visits == arms(("lb", "in"), ("mon", "in"))
    assert back.visits == arms(("mon", "out"), ("lb", "out"))
    assert back.delivered == [(h1.dpid, h1.port)]
    other, _ = round_trip(net, snapshot, h1, 40001)
    assert other.visits == arms(("fw", "in"), ("lb", "in"), ("mon", "in"))
    bypass = [r for held in rules.values() for r in held.flows.values()
              if chain_sub_kind(r.cookie) == CHAIN_BYPASS]
    assert bypass
    assert {r.cookie for r in bypass} == {bypass_cookie("web", settled[0].five)}


def test_settled_flow_after_the_load_balancer_uses_the_backend_address():
    snapshot = make_snapshot("ring")
    h1 = by_ip(snapshot, "10.0.0.1")
    backend = LoadBalancerModel().backend("10.0.0.1", 40000)
    settled = [SettledFlow("mon", 6, "10.0.0.1", 40000, backend, BACKEND_PORT)]
    net, _, _ = build(make_policy(), snapshot, standard_instances(), settled)
    out, back = round_trip(net, snapshot, h1, 40000)
    assert out.visits == arms(("fw", "in"), ("lb", "in"))
    assert back.visits == arms(("lb", "out"), ("fw", "out"))


def test_a_load_balancer_is_never_bypassed():
    snapshot = make_snapshot("linear")
    settled = [SettledFlow("lb", 6, "10.0.0.1", 40000, VIP, 80)]
    net, _, _ = build(make_policy(), snapshot, standard_instances(), settled)
    out, _ = round_trip(net, snapshot, by_ip(snapshot, "10.0.0.1"), 40000)
    assert out.visits == arms(("fw", "in"), ("lb", "in"), ("mon", "in"))


# --------------------------------------------------------------------------- changes


def rules_by_cookie(policy, snapshot, instances):
    grouped = defaultdict(set)
    for rules in compile_chains(policy, snapshot, instances).values():
        for rule in rules:
            grouped[rule.cookie].add(rule)
    return grouped


@pytest.mark.parametrize("edited", [
    "  - {name: plain, match: {proto: udp, dst: 10.0.0.5}, through: [mon, fw]}",
    "  - {name: plain, match: {proto: udp, dst: 10.0.0.5}, through: [fw]}",
    "  - {name: plain, match: {proto: udp, dst: 10.0.0.5}, through: [mon]}",
])
def test_changing_one_chain_changes_only_its_rules(edited):
    snapshot = make_snapshot("ring")
    instances = standard_instances()
    before = rules_by_cookie(make_policy((WEB, TO_H5)), snapshot, instances)
    after = rules_by_cookie(make_policy((WEB, edited)), snapshot, instances)
    plain = chain_cookie(CHAIN_STEER, "plain")
    assert before[plain] != after[plain]
    assert {c: r for c, r in before.items() if c != plain} == \
        {c: r for c, r in after.items() if c != plain}


def test_adding_a_chain_at_the_end_leaves_the_others_alone():
    snapshot = make_snapshot("ring")
    instances = standard_instances()
    before = rules_by_cookie(make_policy((WEB,)), snapshot, instances)
    after = rules_by_cookie(make_policy((WEB, TO_H5)), snapshot, instances)
    assert all(after[c] == r for c, r in before.items())
    assert set(after) - set(before) == {chain_cookie(CHAIN_STEER, "plain")}


def test_reordered_chain_traffic_follows_the_new_order():
    snapshot = make_snapshot("linear")
    policy = make_policy(("  - {name: plain, match: {proto: udp}, through: [mon, fw]}",))
    net, _, _ = build(policy, snapshot, standard_instances())
    h1, h5 = by_ip(snapshot, "10.0.0.1"), by_ip(snapshot, "10.0.0.5")
    pkt = {"eth_src": h1.mac, "eth_dst": h5.mac, "eth_type": 0x0800, "ip_proto": 17,
           "ipv4_src": h1.ips[0], "ipv4_dst": h5.ips[0], "udp_src": 1, "udp_dst": 2}
    trace = net.send(h1.dpid, h1.port, pkt)
    assert trace.visits == arms(("mon", "in"), ("fw", "in"))
    assert trace.delivered == [(h5.dpid, h5.port)]


# --------------------------------------------------------------------------- tags


def test_tag_vids_are_distinct_in_range_and_stable():
    instances = [VnfInstance(f"v{i}", f"v{i}-{j}", 1, 1, 2) for i in range(40) for j in range(5)]
    vids = tag_vids(instances)
    assert len(set(vids.values())) == len(vids) == 200
    assert all(v >= 2 and v + 1 <= 4093 and v % 2 == 0 for v in vids.values())
    homes = defaultdict(list)
    for key in vids:
        homes[zlib.crc32(key.encode()) % MAX_INSTANCES].append(key)
    alone = {keys[0] for keys in homes.values() if len(keys) == 1}
    fewer = tag_vids(instances[:100])
    assert all(fewer[k] == vids[k] for k in fewer if k in alone)


def test_too_many_instances_is_a_clear_error():
    instances = [VnfInstance("v", f"v-{j}", 1, 1, 2) for j in range(MAX_INSTANCES + 1)]
    with pytest.raises(ChainError, match="at most 2046"):
        tag_vids(instances)


def test_two_load_balancers_in_one_chain_are_refused():
    text = """
version: 1
vnfs:
  a: {type: loadbalancer, switch: s1, vip: 10.0.0.100, backends: [10.0.0.3]}
  b: {type: loadbalancer, switch: s1, vip: 10.0.0.101, proto: udp, backends: [10.0.0.4]}
chains:
  - {name: two, match: {dst: 10.0.0.0/24}, through: [a, b]}
"""
    with pytest.raises(ChainError) as err:
        compile_chains(load_policy(text), make_snapshot("linear"), [])
    assert err.value.path == ("chains", 0, "through", 1)


def test_no_chains_no_instances_no_rules():
    snapshot = make_snapshot("linear")
    assert compile_chains(None, snapshot, []) == {d: [] for d in snapshot.switches}


def test_a_chain_narrowed_to_one_client_keeps_that_clients_replica():
    snapshot = make_snapshot("linear")
    instances = [*standard_instances(), instance("fw-1", 2)]
    narrowed = WEB.replace("{proto: tcp,", "{proto: tcp, src: 10.0.0.1,")
    net, _, _ = build(make_policy((narrowed,)), snapshot, instances)
    out, back = round_trip(net, snapshot, by_ip(snapshot, "10.0.0.1"))
    assert out.visits[0] == (2, ARMS["fw-1"][0]) and back.visits[-1] == (2, ARMS["fw-1"][1])


def test_rules_read_back_from_a_switch_compare_equal():
    """Matches and actions survive OpenFlow encoding as they are, so re-applying the same
    chains sends no FlowMod."""
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    from sdn.southbound.codec import decode_actions, encode_actions

    snapshot = make_snapshot("ring")
    instances = [*standard_instances(), instance("fw-1", 2)]
    settled = [SettledFlow("fw", 6, "10.0.0.1", 40000, VIP, 80)]
    policy = make_policy((WEB, TO_H5, "  - {name: ranged, match: {proto: tcp, "
                          "src: 10.0.1.0/24, dst_port: 1000-2000}, through: [mon]}"))
    checked = 0
    for rules in compile_chains(policy, snapshot, instances, settled).values():
        for rule in rules:
            buf = bytearray()
            parser.OFPMatch(**dict(rule.match)).serialize(buf, 0)
            back = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                for k, v in parser.OFPMatch.parser(bytes(buf), 0).items()))
            assert back == rule.match
            assert decode_actions(encode_actions(rule.actions)) == rule.actions
            checked += 1
    assert checked > 100


def test_diff_orders_exact_and_masked_ports_of_one_field():
    from sdn.reconcile.diff import diff

    policy = make_policy(("  - {name: ranged, match: {proto: tcp, dst_port: 1000-2000}, "
                          "through: [mon]}",))
    desired = SwitchRules()
    desired.add_flows(compile_chains(policy, make_snapshot("linear"), standard_instances())[1])
    changes = diff(SwitchRules(), desired)
    assert len(changes.flow_adds) == len(desired.flows)
    assert not diff(desired, desired)
