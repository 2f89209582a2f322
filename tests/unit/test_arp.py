"""ARP in the data plane: switches answer requests for known addresses at the first
switch, and everything else about ARP still reaches the controller or its owner."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import networkx as nx
import pytest

from sdn.compile import arp
from sdn.compile.desired import desired_rules
from sdn.compile.pipeline import METER_ARP_IN, METER_LEARN_IN
from sdn.compile.routes import NetworkCompiler
from sdn.explain.flowsim import Network
from sdn.policy.load import load_policy
from sdn.southbound.connection import SwitchConnection
from testing.flowsim import fat_tree, snapshot_from_graph

BROADCAST = "ff:ff:ff:ff:ff:ff"


@pytest.fixture(scope="module")
def fabric():
    snapshot = snapshot_from_graph(fat_tree(4), hosts_per_switch=2)
    return snapshot, NetworkCompiler().compile(snapshot)


def request(sender, target_ip: str, eth_dst: str = BROADCAST, sender_ip: str | None = None):
    spa = sender_ip if sender_ip is not None else sender.ips[0]
    return {"eth_src": sender.mac, "eth_dst": eth_dst, "eth_type": arp.ETH_TYPE_ARP,
            "arp_op": arp.REQUEST, "arp_sha": sender.mac, "arp_spa": spa,
            "arp_tha": "00:00:00:00:00:00", "arp_tpa": target_ip}


def test_a_known_address_is_answered_by_the_first_switch(fabric):
    """The asker gets the owner's answer from its own switch; the owner gets the request
    as unicast, so it knows the asker before the asker's first packet arrives."""
    snapshot, rules = fabric
    net = Network(snapshot, rules)
    for asker, owner in [(snapshot.hosts[0], snapshot.hosts[-1]),
                         (snapshot.hosts[0], snapshot.hosts[1]),
                         (snapshot.hosts[5], snapshot.hosts[2])]:
        sent = request(asker, owner.ips[0])
        trace = net.send(asker.dpid, asker.port, sent)
        assert trace.to_controller == [] and not trace.looped
        got = dict(zip(trace.delivered, trace.packets, strict=True))
        assert sorted(got) == sorted([(asker.dpid, asker.port), (owner.dpid, owner.port)])
        reply = got[(asker.dpid, asker.port)]
        assert (reply["eth_src"], reply["eth_dst"]) == (owner.mac, asker.mac)
        assert reply["arp_op"] == arp.REPLY
        assert (reply["arp_sha"], reply["arp_spa"]) == (owner.mac, owner.ips[0])
        assert (reply["arp_tha"], reply["arp_tpa"]) == (asker.mac, asker.ips[0])
        told = {k: v for k, v in got[(owner.dpid, owner.port)].items() if k in sent}
        assert told == {**sent, "eth_dst": owner.mac}


def test_an_unknown_address_floods_once_to_every_other_host(fabric):
    snapshot, rules = fabric
    asker = snapshot.hosts[0]
    trace = Network(snapshot, rules).send(asker.dpid, asker.port, request(asker, "10.99.0.1"))
    others = sorted((h.dpid, h.port) for h in snapshot.hosts if h != asker)
    assert sorted(trace.delivered) == others and not trace.looped
    assert trace.to_controller == []


def test_the_controller_still_sees_what_it_learns_from(fabric):
    """Unknown senders, a known sender from a new address or port, and gratuitous ARP
    go to the controller and nowhere else."""
    snapshot, rules = fabric
    net = Network(snapshot, rules)
    asker, owner = snapshot.hosts[0], snapshot.hosts[-1]
    stranger = dataclasses.replace(asker, mac="02:00:00:00:00:99", ips=("10.99.0.2",))
    cases = [
        (asker.port, request(stranger, owner.ips[0])),
        (asker.port, request(asker, owner.ips[0], sender_ip="10.99.0.3")),
        (snapshot.hosts[1].port, request(asker, owner.ips[0])),
        (asker.port, request(asker, asker.ips[0])),  # gratuitous
    ]
    for port, pkt in cases:
        trace = net.send(asker.dpid, port, pkt)
        assert trace.to_controller == [asker.dpid] and trace.delivered == [], pkt


def test_unicast_requests_reach_the_owner_who_answers_for_itself(fabric):
    snapshot, rules = fabric
    asker, owner = snapshot.hosts[0], snapshot.hosts[-1]
    trace = Network(snapshot, rules).send(
        asker.dpid, asker.port, request(asker, owner.ips[0], eth_dst=owner.mac))
    assert trace.delivered == [(owner.dpid, owner.port)] and trace.to_controller == []
    assert trace.packets[0]["arp_op"] == arp.REQUEST


def test_replies_from_known_hosts_are_routed(fabric):
    snapshot, rules = fabric
    asker, owner = snapshot.hosts[0], snapshot.hosts[-1]
    reply = {**request(owner, asker.ips[0], eth_dst=asker.mac), "arp_op": arp.REPLY}
    trace = Network(snapshot, rules).send(owner.dpid, owner.port, reply)
    assert trace.delivered == [(asker.dpid, asker.port)] and trace.to_controller == []


def test_only_switches_with_hosts_hold_answers(fabric):
    snapshot, rules = fabric
    with_hosts = {h.dpid for h in snapshot.hosts}
    addresses = sum(len(h.ips) for h in snapshot.hosts)
    for dpid, switch in rules.items():
        answers = [r for r in switch.flows.values() if r.priority == arp.PRIO_ANSWER]
        assert len(answers) == (addresses if dpid in with_hosts else 0)


VIP_POLICY = """\
version: 1
vnfs:
  lb:
    type: loadbalancer
    switch: s1
    vip: 10.0.0.100
    port: 80
    backends: [10.0.0.5, 10.0.0.6]
"""


def test_load_balancer_virtual_ips_are_answered_with_their_mac():
    policy = load_policy(VIP_POLICY, "vip.yaml")
    snapshot = snapshot_from_graph(fat_tree(4))
    rules = desired_rules(policy, snapshot)
    asker = snapshot.hosts[0]
    trace = Network(snapshot, rules).send(asker.dpid, asker.port, request(asker, "10.0.0.100"))
    reply = trace.packets[0]
    assert trace.delivered == [(asker.dpid, asker.port)]  # no host owns a VIP
    assert (reply["arp_sha"], reply["arp_spa"]) == (policy.virtual_ips()["10.0.0.100"],
                                                    "10.0.0.100")


def test_a_restarted_controller_reads_hosts_and_their_addresses_back(fabric):
    """What a switch holds names its hosts and their addresses, so a restarted controller
    compiles the same ARP answers and sends no FlowMod for them."""
    snapshot, rules = fabric
    dpid = snapshot.hosts[0].dpid
    conn = SwitchConnection(SimpleNamespace(id=dpid), held=rules[dpid])
    assert conn.learned_hosts() == [h for h in snapshot.hosts if h.dpid == dpid]


def test_controller_bound_rules_are_metered_and_lldp_is_not():
    snapshot = snapshot_from_graph(nx.path_graph([1, 2]))
    rules = desired_rules(None, snapshot)
    for dpid, switch in rules.items():
        assert {m.meter_id for m in switch.meters.values() if m.pktps} == {
            METER_ARP_IN, METER_LEARN_IN}
        to_controller = [r for r in switch.flows.values()
                         if any(a[0] == "controller" for a in r.actions)]
        lldp = [r for r in to_controller if dict(r.match).get("eth_type") == 0x88CC]
        assert len(lldp) == 1 and lldp[0].meter is None
        assert all(r.meter in (METER_ARP_IN, METER_LEARN_IN)
                   for r in to_controller if r not in lldp), dpid
