"""The controller's event logic without sockets or os-ken: packet-ins in, effects out, and
what the resulting rules do in the flow simulator."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from sdn.compile.desired import desired_rules
from sdn.controller.events import (
    LINK_TIMEOUT_ROUNDS,
    PROBE_MAC,
    SUSPECT_ROUNDS,
    Effects,
    EventHandler,
)
from sdn.explain.flowsim import Network
from sdn.model.pipeline import CONTROLLER_PORT, TABLE_FORWARD, TABLE_INGRESS, TABLE_PORT
from sdn.model.topology import (
    ADDRESSES_PER_HOST,
    EDGE_SETTLE_SECONDS,
    HOSTS_PER_PORT,
    VERIFY_SECONDS,
    Topology,
)
from sdn.southbound import arp, lldp

H1_MAC, H1_IP = "00:00:00:00:00:01", "10.0.0.1"
H2_MAC, H2_IP = "00:00:00:00:00:02", "10.0.0.2"
VIP, VIP_MAC = "10.0.0.100", "02:00:00:00:01:00"
# a ring of three switches: port 1 and 2 are links, port 3 has a host
RING = ((1, 1, 2, 2), (2, 1, 3, 2), (3, 1, 1, 2))
SWITCHES = (1, 2, 3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def arrive(handler: EventHandler, dpid: int, port: int, frame: bytes,
           table: int = TABLE_INGRESS) -> Effects:
    """A frame switch `dpid` sends up from `port`."""
    return handler.packet_in(dpid, port, table, frame, SWITCHES)


def hear(handler: EventHandler, links, round_: int) -> None:
    """The LLDP of round `round_` read on `links` (a, a_port, b, b_port)."""
    for a, a_port, b, b_port in links:
        arrive(handler, b, b_port, lldp.build_probe(a, a_port, round_))


def ring() -> tuple[EventHandler, Clock]:
    """Three switches whose links were found by LLDP, their edge ports settled: a round
    later each read back the probe sent through its own tables."""
    clock = Clock()
    topology = Topology(clock=clock)
    handler = EventHandler(topology, {VIP: VIP_MAC}.get)
    for dpid in SWITCHES:
        topology.add_switch(dpid, [1, 2, 3])
    for a, a_port, b, b_port in RING:
        effects = arrive(handler, b, b_port, lldp.build_probe(a, a_port))
        assert effects.changed and not effects.packets
    clock.now += EDGE_SETTLE_SECONDS + 0.1
    assert not topology.edge_ports(1)  # no LLDP read since they came up
    own = [(d, p, f) for d, p, f in handler.probes().packets if p == TABLE_PORT]
    assert sorted(d for d, _, _ in own) == list(SWITCHES)
    for dpid, _, frame in own:
        effects = arrive(handler, dpid, CONTROLLER_PORT, frame)
        assert effects.changed and not effects.packets
    assert all(topology.edge_ports(d) == [3] for d in SWITCHES)
    assert len(topology.links) == 3 and not topology.awaiting_evidence()
    return handler, clock


def arp_frame(op: str, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    dst = "ff:ff:ff:ff:ff:ff" if op == "who-has" else H1_MAC
    return bytes(Ether(src=src_mac, dst=dst) / ARP(op=op, hwsrc=src_mac, psrc=src_ip,
                                                     pdst=dst_ip))


def test_lldp_finds_links_and_only_new_ones_change_the_network():
    handler, _ = ring()
    assert len(handler.topology.links) == 3
    assert not arrive(handler, 2, 2, lldp.build_probe(1, 1)).changed


def test_arp_from_a_new_host_is_answered_and_learned_and_its_routes_follow():
    handler, _ = ring()
    announce = arrive(handler, 3, 3, arp_frame("is-at", H2_MAC, H2_IP, H2_IP))
    assert announce.changed and not announce.packets  # gratuitous: learned, not answered

    effects = arrive(handler, 1, 3, arp_frame("who-has", H1_MAC, H1_IP, H2_IP))
    assert effects.changed  # h1 is new
    [(dpid, port, data)] = effects.packets
    reply = arp.parse(data)
    assert (dpid, port) == (1, 3)
    assert reply.opcode == arp.REPLY and reply.src_mac == H2_MAC and reply.src_ip == H2_IP
    assert reply.dst_mac == H1_MAC and reply.dst_ip == H1_IP

    snapshot = handler.topology.snapshot()
    net = Network(snapshot, desired_rules(None, snapshot))
    ip = {"eth_type": 0x0800, "ip_proto": 17, "udp_src": 1, "udp_dst": 2}
    there = net.send(3, 3, {**ip, "eth_src": H2_MAC, "eth_dst": H1_MAC,
                            "ipv4_src": H2_IP, "ipv4_dst": H1_IP})
    back = net.send(1, 3, {**ip, "eth_src": H1_MAC, "eth_dst": H2_MAC,
                           "ipv4_src": H1_IP, "ipv4_dst": H2_IP})
    assert there.delivered == [(1, 3)] and not there.to_controller
    assert back.delivered == [(3, 3)] and not back.to_controller


def test_the_controller_answers_for_a_virtual_ip():
    handler, _ = ring()
    [(_, _, data)] = arrive(handler, 2, 3, arp_frame("who-has", H1_MAC, H1_IP, VIP)).packets
    assert arp.parse(data).src_mac == VIP_MAC


def test_an_unknown_destination_goes_to_every_edge_port_but_its_own_never_a_link():
    handler, _ = ring()
    frame = bytes(Ether(src=H1_MAC, dst="00:00:00:00:00:09", type=0x0800)) + bytes(20)
    effects = arrive(handler, 1, 3, frame, TABLE_FORWARD)
    assert sorted((d, p) for d, p, _ in effects.packets) == [(2, 3), (3, 3)]
    assert effects.changed  # and the sender was learned


def test_arp_arriving_over_a_link_teaches_nothing():
    handler, _ = ring()
    effects = arrive(handler, 1, 1, arp_frame("who-has", H1_MAC, H1_IP, H2_IP))
    assert not effects.changed and not effects.packets and not handler.topology.hosts


def test_probes_go_out_of_every_port_but_vnf_arms_and_number_their_round():
    handler, _ = ring()
    probes = handler.probes().packets
    assert sorted((d, p) for d, p, _ in probes) == [(d, p) for d in SWITCHES for p in (1, 2, 3)]
    assert {lldp.parse_probe(frame)[2] for _, _, frame in probes} == {2}  # ring() had 1
    assert {lldp.parse_probe(f)[2] for _, _, f in handler.probes().packets} == {3}


def test_a_link_goes_down_when_its_ends_are_heard_and_it_is_not():
    handler, _ = ring()
    alive = [link for link in RING if {link[0], link[2]} != {1, 2}]  # 1-2 went silent
    suspected = LINK_TIMEOUT_ROUNDS + 1
    for round_ in range(1, 8):
        handler.topology.round = round_
        hear(handler, alive, round_)
        effects = handler.expire_links()
        assert effects.changed == (round_ == suspected + SUSPECT_ROUNDS)
        # when first found silent it is probed again out of both ends, not dropped
        assert sorted((d, p) for d, p, _ in effects.packets) == (
            [(1, 1), (2, 2)] if round_ == suspected else [])
    assert {frozenset((lk.a, lk.b)) for lk in handler.topology.links} == {
        frozenset((2, 3)), frozenset((3, 1))}
    assert not handler.topology.is_edge_port(1, 1)  # it carried LLDP: still faces a switch


def test_a_suspected_link_that_answers_the_repeat_probe_stays():
    """A switch dropped a few of 1-2's LLDP packet-ins: the repeat probe is heard."""
    handler, _ = ring()
    alive = [link for link in RING if {link[0], link[2]} != {1, 2}]
    for round_ in range(1, LINK_TIMEOUT_ROUNDS + 2):
        hear(handler, alive, round_)
        handler.expire_links()
    assert handler.suspects
    hear(handler, RING, LINK_TIMEOUT_ROUNDS + 2)
    for round_ in range(LINK_TIMEOUT_ROUNDS + 3, LINK_TIMEOUT_ROUNDS + 8):
        hear(handler, RING, round_)
        assert not handler.expire_links().changed
    assert len(handler.topology.links) == 3 and not handler.suspects


def test_a_starved_controller_loses_no_link():
    """Nothing read for many seconds (a busy controller), then its backlog: rounds in
    order, links in any order within a round, the ageing looked at after every packet."""
    handler, clock = ring()
    clock.now += 30
    assert not handler.expire_links().changed
    for round_ in range(1, 9):
        for link in (RING if round_ % 2 else reversed(RING)):
            hear(handler, [link], round_)
            assert not handler.expire_links().changed
    assert len(handler.topology.links) == 3


def test_a_switch_whose_probes_and_packet_ins_lag_loses_no_link():
    """Switch 1 just connected: its probes wait behind its FlowMods and what it traps
    behind them too, while 2 and 3 hear each other round after round. Nothing read says
    1's links are gone, so none goes."""
    handler, _ = ring()
    between_2_and_3 = [link for link in RING if {link[0], link[2]} == {2, 3}]
    both_ways = between_2_and_3 + [(b, bp, a, ap) for a, ap, b, bp in between_2_and_3]
    for round_ in range(1, 9):
        hear(handler, both_ways, round_)
        assert not handler.expire_links().changed
    hear(handler, RING, 9)
    assert not handler.expire_links().changed and len(handler.topology.links) == 3


def test_a_repeat_of_the_probes_is_no_new_round():
    handler, _ = ring()
    handler.probes()
    repeat = handler.probes(new_round=False).packets
    assert {lldp.parse_probe(frame)[2] for _, _, frame in repeat} == {2}
    assert handler.round == 2


def test_malformed_frames_change_nothing():
    handler, _ = ring()
    for frame in (b"", b"\x01" * 13, bytes(12) + b"\x88\xcc" + b"\xff" * 5,
                  bytes(12) + b"\x08\x06" + b"\x00" * 3):
        effects = arrive(handler, 1, 3, frame)
        assert not effects.packets and not effects.changed
    assert not handler.topology.hosts and len(handler.topology.links) == 3


def test_a_flood_of_new_sources_on_one_port_learns_only_what_a_port_may_hold():
    handler, _ = ring()
    for i in range(2000):
        mac = f"02:00:00:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"
        arrive(handler, 1, 3,
               arp_frame("who-has", mac, f"10.9.{i >> 8 & 0xff}.{i & 0xff}", H2_IP))
    assert len(handler.topology.hosts) == HOSTS_PER_PORT
    legit = arrive(handler, 3, 3, arp_frame("is-at", H2_MAC, H2_IP, H2_IP))
    assert legit.changed and H2_MAC in handler.topology.hosts  # other ports are unaffected


def test_a_host_keeps_its_addresses_when_it_moves_and_holds_only_so_many():
    handler, clock = ring()
    for i in range(ADDRESSES_PER_HOST + 5):
        ip = f"10.0.1.{i + 1}"
        arrive(handler, 1, 3, arp_frame("is-at", H1_MAC, ip, ip))
    ips = handler.topology.hosts[H1_MAC].ips
    assert len(ips) == ADDRESSES_PER_HOST
    arrive(handler, 2, 3, bytes(Ether(src=H1_MAC, dst=H2_MAC, type=0x0800)) + bytes(20))
    clock.now += VERIFY_SECONDS  # its old place did not answer the probe
    assert handler.settle_claims().changed
    moved = handler.topology.hosts[H1_MAC]
    assert (moved.dpid, moved.port) == (2, 3) and moved.ips == ips


def victim_and_attacker() -> tuple[EventHandler, Clock]:
    """h2 (the victim) at switch 3, h1 (the attacker) at switch 1, both known."""
    handler, clock = ring()
    for dpid, mac, ip in ((3, H2_MAC, H2_IP), (1, H1_MAC, H1_IP)):
        arrive(handler, dpid, 3, arp_frame("is-at", mac, ip, ip))
    return handler, clock


def probe_of(effects: Effects) -> tuple[int, int, arp.ArpMessage]:
    [(dpid, port, data)] = effects.packets
    return dpid, port, arp.parse(data)


def test_a_host_repeating_anothers_mac_does_not_take_its_place():
    handler, clock = victim_and_attacker()
    spoof = bytes(Ether(src=H2_MAC, dst="00:00:00:00:00:09", type=0x0800)) + bytes(20)
    dpid, port, probe = probe_of(arrive(handler, 1, 3, spoof))  # the victim is asked
    assert (dpid, port) == (3, 3) and probe.opcode == arp.REQUEST
    assert (probe.dst_mac, probe.dst_ip, probe.src_ip) == (H2_MAC, H2_IP, "0.0.0.0")
    answer = bytes(Ether(src=H2_MAC, dst=PROBE_MAC) / ARP(op="is-at", hwsrc=H2_MAC, psrc=H2_IP,
                                                         hwdst=PROBE_MAC, pdst="0.0.0.0"))
    assert not arrive(handler, 3, 3, answer, TABLE_FORWARD).packets
    clock.now += VERIFY_SECONDS
    assert not handler.settle_claims().changed
    assert (handler.topology.hosts[H2_MAC].dpid, handler.topology.hosts[H2_MAC].port) == (3, 3)


def test_a_host_claiming_anothers_address_is_not_believed_nor_passed_on():
    handler, clock = victim_and_attacker()
    lie = bytes(Ether(src=H1_MAC, dst="00:00:00:00:00:07")
                / ARP(op="is-at", hwsrc=H1_MAC, psrc=H2_IP, hwdst="00:00:00:00:00:07",
                      pdst="10.0.0.7"))
    dpid, port, probe = probe_of(arrive(handler, 1, 3, lie))  # the lie reaches nobody
    assert (dpid, port, probe.dst_ip) == (3, 3, H2_IP)
    arrive(handler, 3, 3, arp_frame("is-at", H2_MAC, H2_IP, H2_IP))  # the owner answers
    clock.now += VERIFY_SECONDS
    handler.settle_claims()
    assert handler.topology.host_by_ip(H2_IP).mac == H2_MAC


def test_a_lone_switch_learns_hosts_once_its_own_probe_comes_back():
    """No neighbour will ever send it LLDP: the probe through its own tables is the
    evidence that what arrives there is read. Until then, however long, no host."""
    clock = Clock()
    handler = EventHandler(Topology(clock=clock), {}.get)
    handler.topology.add_switch(7, [1, 2])
    clock.now += 60
    who_has = arp_frame("who-has", H1_MAC, H1_IP, H2_IP)
    assert not arrive(handler, 7, 1, who_has).changed and not handler.topology.hosts
    probes = handler.probes().packets
    assert sorted((d, p) for d, p, _ in probes) == [(7, 1), (7, 2), (7, TABLE_PORT)]
    own = next(frame for _, port, frame in probes if port == TABLE_PORT)
    stale = lldp.build_probe(7, 0, 0)  # from before its ports came up: no evidence
    assert not arrive(handler, 7, CONTROLLER_PORT, stale).changed
    assert arrive(handler, 7, CONTROLLER_PORT, own).changed
    assert not handler.topology.links  # its own probe is no link
    assert handler.topology.hosts[H1_MAC].ips == (H1_IP,)  # the ARP seen while it waited
    assert all(port != TABLE_PORT for _, port, _ in handler.probes().packets)
