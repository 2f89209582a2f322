"""The network model: links, edge ports, host learning and what a snapshot shows."""

from __future__ import annotations

from sdn.model.topology import (
    DEPARTED_SECONDS,
    EDGE_SETTLE_SECONDS,
    VERIFY_SECONDS,
    Link,
    Topology,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def two_switches(clock: Clock) -> Topology:
    topo = Topology(clock=clock)
    topo.add_switch(1, [1, 2, 3])
    topo.add_switch(2, [1, 2])
    return topo


def settle(topo: Topology, clock: Clock) -> None:
    """Time passes and LLDP of a new round is read at every switch: ports up before are
    shown to face no switch (unless LLDP came in on them)."""
    clock.now += EDGE_SETTLE_SECONDS + 0.01
    topo.round += 1
    for dpid in topo.ports:
        topo.hear(dpid, topo.round)


def settled_switches() -> Topology:
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    return topo


def test_link_is_stored_once_whatever_the_direction():
    assert Link.between(2, 1, 1, 3) == Link.between(1, 3, 2, 1) == Link(1, 3, 2, 1)


def test_link_ports_are_not_edge_ports_and_purge_hosts_learned_there():
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    assert topo.learn_host("00:00:00:00:00:09", 1, 3)
    assert topo.add_link(1, 3, 2, 1)
    assert "00:00:00:00:00:09" not in topo.hosts
    assert not topo.is_edge_port(1, 3)
    assert topo.edge_ports(1) == [1, 2]
    assert not topo.learn_host("00:00:00:00:00:09", 1, 3)


def test_ports_settle_before_they_count_as_edge():
    clock = Clock()
    topo = two_switches(clock)
    assert topo.edge_ports(1) == []
    settle(topo, clock)
    assert topo.edge_ports(1) == [1, 2, 3]


def test_a_port_is_an_edge_port_only_once_lldp_after_it_came_up_was_read():
    """A starved controller reads LLDP seconds late: the clock alone would take an
    undiscovered link for an edge port (hosts learned there, floods into it)."""
    clock = Clock()
    topo = two_switches(clock)
    assert topo.awaiting_evidence() == [1, 2]
    settle(topo, clock)
    assert topo.awaiting_evidence() == []
    topo.round = 7
    topo.port_up(1, 4)
    topo.port_up(2, 3)
    clock.now += 30
    assert 4 not in topo.edge_ports(1) and 4 in topo.snapshot().unsettled[1]
    assert not topo.learn_host("00:00:00:00:00:09", 1, 4)
    assert topo.awaiting_evidence() == [1, 2]
    assert not topo.hear(1, 7)  # a probe of the round it came up in proves nothing
    assert topo.hear(1, 8) and topo.edge_ports(1) == [1, 2, 3, 4]
    assert topo.hosts["00:00:00:00:00:09"].port == 4  # seen while it waited: learnt now
    assert not topo.hear(1, 9)  # nothing waited for it any more
    assert topo.awaiting_evidence() == [2] and topo.edge_ports(2) == [1, 2]
    assert topo.learn_host("00:00:00:00:00:01", 2, 3, trusted=True)  # read back after a restart


def test_hosts_seen_at_a_port_waiting_for_evidence_are_learnt_once_it_is_an_edge_port():
    """A moved host may send one packet and then wait: what its port showed before the
    evidence came is not lost. What was seen at a port that turns out to be a link is."""
    clock = Clock()
    topo = two_switches(clock)
    clock.now += 30
    assert not topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    assert not topo.learn_host("00:00:00:00:00:02", 1, 3, "10.0.0.2")  # a flooded frame
    assert not topo.hosts and topo.awaiting_evidence() == [1, 2]
    topo.add_link(1, 3, 2, 1)  # port 3 faces switch 2
    topo.round = 1
    assert topo.hear(1, 1)
    assert set(topo.hosts) == {"00:00:00:00:00:01"}
    assert topo.hosts["00:00:00:00:00:01"].ips == ("10.0.0.1",)
    assert not topo.pending and topo.awaiting_evidence() == [2]


def test_an_aged_out_link_is_not_flooded_to_until_its_ports_go_down():
    """A link LLDP no longer confirms (a starved controller, a lossy link) leaves the
    model, but its ports still face a switch: flooding there would close a loop around
    the spanning tree, a broadcast storm on exactly the link whose LLDP is late."""
    from sdn.compile.routes import compile_network

    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.add_link(1, 3, 2, 1)
    topo.remove_link(Link(1, 3, 2, 1))  # aged out

    def flooded_to(dpid):
        rules = compile_network(topo.snapshot())[dpid].flows.values()
        return {a[1] for r in rules if dict(r.match).get("eth_dst") for a in r.actions
                if a[0] == "output"}, {dict(r.match)["in_port"] for r in rules
                                       if dict(r.match).get("eth_dst") and r.actions}

    assert flooded_to(1) == ({1, 2}, {1, 2})  # not to 3, and what comes in there stops
    assert flooded_to(2) == (set(), set())  # port 2 alone: nowhere else to flood to
    assert 3 in topo.snapshot().unsettled[1] and 1 in topo.snapshot().unsettled[2]
    topo.port_down(1, 3)
    topo.port_up(1, 3)
    settle(topo, clock)
    assert flooded_to(1) == ({1, 2, 3}, {1, 2, 3})  # a new cable: an edge port again


def test_a_flood_echo_does_not_move_a_host():
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    topo.port_up(2, 3)  # a fresh port, maybe an undiscovered link
    assert not topo.learn_host("00:00:00:00:00:01", 2, 3)
    assert topo.hosts["00:00:00:00:00:01"].dpid == 1
    settle(topo, clock)
    assert not topo.learn_host("00:00:00:00:00:01", 2, 3)  # a move, once settled: verified
    clock.now += VERIFY_SECONDS
    assert topo.settle_claims() and topo.hosts["00:00:00:00:00:01"].dpid == 2


def test_host_keeps_its_addresses_and_is_found_by_ip():
    topo = settled_switches()
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    assert topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.11")  # switches answer ARP
    assert not topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.11")
    assert topo.hosts["00:00:00:00:00:01"].ips == ("10.0.0.1", "10.0.0.11")
    assert topo.host_by_ip("10.0.0.11").mac == "00:00:00:00:00:01"


def test_an_address_moves_to_its_claimant_only_if_its_owner_stays_silent():
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    topo.learn_host("00:00:00:00:00:02", 2, 2, "10.0.0.1")
    assert topo.host_by_ip("10.0.0.1").mac == "00:00:00:00:00:01"  # claimed, not taken
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")  # the owner answers its probe
    clock.now += VERIFY_SECONDS
    assert not topo.settle_claims() and topo.host_by_ip("10.0.0.1").mac.endswith("01")
    topo.learn_host("00:00:00:00:00:02", 2, 2, "10.0.0.1")  # claimed again: no answer
    clock.now += VERIFY_SECONDS
    assert topo.settle_claims()
    assert topo.host_by_ip("10.0.0.1").mac == "00:00:00:00:00:02"
    assert topo.hosts["00:00:00:00:00:01"].ips == ()


def test_a_host_whose_port_went_down_moves_at_once():
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    topo.port_down(1, 1)
    assert topo.learn_host("00:00:00:00:00:01", 2, 2, "10.0.0.1") and not topo.claims


def test_a_host_back_after_its_port_went_down_keeps_the_addresses_nobody_took():
    """Its first frame at the new place is often IPv4, which carries no address we learn
    from: the addresses come from before, unless another host holds one now."""
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.11")
    topo.port_down(1, 1)
    assert not topo.hosts
    topo.learn_host("00:00:00:00:00:03", 1, 2, "10.0.0.11")  # taken meanwhile
    assert topo.learn_host("00:00:00:00:00:01", 2, 2)
    assert topo.hosts["00:00:00:00:00:01"].ips == ("10.0.0.1",)
    topo.port_down(2, 2)
    clock.now += DEPARTED_SECONDS + 1
    assert topo.learn_host("00:00:00:00:00:01", 1, 3)
    assert topo.hosts["00:00:00:00:00:01"].ips == ()  # gone too long: a stranger


def test_a_move_being_verified_stands_once_the_old_port_goes_down():
    """The host was seen at its new place while the old port was still up; the old port
    then goes down before the verification ends: it is at the new place, addresses and
    all, at once."""
    clock = Clock()
    topo = two_switches(clock)
    settle(topo, clock)
    topo.learn_host("00:00:00:00:00:01", 1, 1, "10.0.0.1")
    assert not topo.learn_host("00:00:00:00:00:01", 2, 2)  # a claim, being verified
    topo.port_down(1, 1)
    host = topo.hosts["00:00:00:00:00:01"]
    assert (host.dpid, host.port, host.ips) == (2, 2, ("10.0.0.1",)) and not topo.claims


def test_arp_probes_unspecified_address_is_nobodys():
    topo = settled_switches()
    topo.learn_host("00:00:00:00:00:01", 1, 1, "0.0.0.0")
    assert topo.hosts["00:00:00:00:00:01"].ips == ()
    assert topo.host_by_ip("0.0.0.0") is None


def test_port_down_removes_link_and_hosts_there():
    topo = settled_switches()
    topo.add_link(1, 3, 2, 1)
    topo.learn_host("00:00:00:00:00:02", 2, 2)
    assert topo.port_down(1, 3)
    assert not topo.links
    topo.port_down(2, 2)
    assert not topo.hosts


def test_switch_removal_takes_its_links_and_hosts():
    topo = settled_switches()
    topo.add_link(1, 3, 2, 1)
    topo.learn_host("00:00:00:00:00:02", 2, 2)
    topo.remove_switch(2)
    assert not topo.links and not topo.hosts and 2 not in topo.snapshot().switches


def test_vnf_arms_are_hidden_from_snapshots_and_learning():
    clock = Clock()
    topo = two_switches(clock)
    topo.name_ports(1, {1: "s1-eth1", 2: "vfw-i", 3: "vfw-e"}, bridge="s1")
    topo.service_port_names |= {"vfw-i", "vfw-e"}
    settle(topo, clock)
    assert topo.snapshot().switches[1] == frozenset({1})
    assert not topo.learn_host("00:00:00:00:00:01", 1, 2)
    assert topo.edge_ports(1) == [1]
    assert topo.bridge_names[1] == "s1"
