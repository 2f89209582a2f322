"""The controller's event logic without sockets or os-ken: packet-ins in, effects out, and
what the resulting rules do in the flow simulator."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from sdn.compile.desired import desired_rules
from sdn.controller.events import LINK_TIMEOUT, PROBE_MAC, EventHandler
from sdn.model.pipeline import TABLE_FORWARD, TABLE_INGRESS
from sdn.model.topology import (
    ADDRESSES_PER_HOST,
    EDGE_SETTLE_SECONDS,
    HOSTS_PER_PORT,
    VERIFY_SECONDS,
    Topology,
)
from sdn.southbound import arp, lldp
from testing.flowsim import Network

H1_MAC, H1_IP = "00:00:00:00:00:01", "10.0.0.1"
H2_MAC, H2_IP = "00:00:00:00:00:02", "10.0.0.2"
VIP, VIP_MAC = "10.0.0.100", "02:00:00:00:01:00"
# a ring of three switches: port 1 and 2 are links, port 3 has a host
RING = ((1, 1, 2, 2), (2, 1, 3, 2), (3, 1, 1, 2))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ring() -> tuple[EventHandler, Clock]:
    """Three switches whose links were found by LLDP, their edge ports settled."""
    clock = Clock()
    topology = Topology(clock=clock)
    handler = EventHandler(topology, {VIP: VIP_MAC}.get)
    for dpid in (1, 2, 3):
        topology.add_switch(dpid, [1, 2, 3])
    for a, a_port, b, b_port in RING:
        effects = handler.packet_in(b, b_port, TABLE_INGRESS, lldp.build_probe(a, a_port),
                                    [1, 2, 3], clock.now)
        assert effects.changed and not effects.packets
    clock.now += EDGE_SETTLE_SECONDS + 0.1
    return handler, clock


def arp_frame(op: str, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    dst = "ff:ff:ff:ff:ff:ff" if op == "who-has" else H1_MAC
    return bytes(Ether(src=src_mac, dst=dst) / ARP(op=op, hwsrc=src_mac, psrc=src_ip,
                                                     pdst=dst_ip))


def test_lldp_finds_links_and_only_new_ones_change_the_network():
    handler, clock = ring()
    assert len(handler.topology.links) == 3
    again = handler.packet_in(2, 2, TABLE_INGRESS, lldp.build_probe(1, 1), [1, 2, 3], clock.now)
    assert not again.changed


def test_arp_from_a_new_host_is_answered_and_learned_and_its_routes_follow():
    handler, clock = ring()
    announce = handler.packet_in(3, 3, TABLE_INGRESS, arp_frame("is-at", H2_MAC, H2_IP, H2_IP),
                                 [1, 2, 3], clock.now)
    assert announce.changed and not announce.packets  # gratuitous: learned, not answered

    effects = handler.packet_in(1, 3, TABLE_INGRESS, arp_frame("who-has", H1_MAC, H1_IP, H2_IP),
                                [1, 2, 3], clock.now)
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
    handler, clock = ring()
    effects = handler.packet_in(2, 3, TABLE_INGRESS, arp_frame("who-has", H1_MAC, H1_IP, VIP),
                                [1, 2, 3], clock.now)
    [(_, _, data)] = effects.packets
    assert arp.parse(data).src_mac == VIP_MAC


def test_an_unknown_destination_goes_to_every_edge_port_but_its_own_never_a_link():
    handler, clock = ring()
    frame = bytes(Ether(src=H1_MAC, dst="00:00:00:00:00:09", type=0x0800)) + bytes(20)
    effects = handler.packet_in(1, 3, TABLE_FORWARD, frame, [1, 2, 3], clock.now)
    assert sorted((d, p) for d, p, _ in effects.packets) == [(2, 3), (3, 3)]
    assert effects.changed  # and the sender was learned


def test_arp_arriving_over_a_link_teaches_nothing():
    handler, clock = ring()
    effects = handler.packet_in(1, 1, TABLE_INGRESS, arp_frame("who-has", H1_MAC, H1_IP, H2_IP),
                                [1, 2, 3], clock.now)
    assert not effects.changed and not effects.packets and not handler.topology.hosts


def test_links_without_lldp_age_out_and_probes_skip_nothing_but_vnf_arms():
    handler, clock = ring()
    assert not handler.expire_links(clock.now + LINK_TIMEOUT - 0.5).changed
    probes = handler.probes()
    assert sorted((d, p) for d, p, _ in probes.packets) == [(d, p) for d in (1, 2, 3)
                                                            for p in (1, 2, 3)]
    assert handler.expire_links(clock.now + LINK_TIMEOUT + 0.5).changed
    assert not handler.topology.links


def test_malformed_frames_change_nothing():
    handler, clock = ring()
    for frame in (b"", b"\x01" * 13, bytes(12) + b"\x88\xcc" + b"\xff" * 5,
                  bytes(12) + b"\x08\x06" + b"\x00" * 3):
        effects = handler.packet_in(1, 3, TABLE_INGRESS, frame, [1, 2, 3], clock.now)
        assert not effects.packets and not effects.changed
    assert not handler.topology.hosts and len(handler.topology.links) == 3


def test_a_flood_of_new_sources_on_one_port_learns_only_what_a_port_may_hold():
    handler, clock = ring()
    for i in range(2000):
        mac = f"02:00:00:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"
        handler.packet_in(1, 3, TABLE_INGRESS,
                          arp_frame("who-has", mac, f"10.9.{i >> 8 & 0xff}.{i & 0xff}", H2_IP),
                          [1, 2, 3], clock.now)
    assert len(handler.topology.hosts) == HOSTS_PER_PORT
    legit = handler.packet_in(3, 3, TABLE_INGRESS, arp_frame("is-at", H2_MAC, H2_IP, H2_IP),
                              [1, 2, 3], clock.now)
    assert legit.changed and H2_MAC in handler.topology.hosts  # other ports are unaffected


def test_a_host_keeps_its_addresses_when_it_moves_and_holds_only_so_many():
    handler, clock = ring()
    for i in range(ADDRESSES_PER_HOST + 5):
        handler.packet_in(1, 3, TABLE_INGRESS, arp_frame("is-at", H1_MAC, f"10.0.1.{i + 1}",
                                                         f"10.0.1.{i + 1}"), [1, 2, 3], clock.now)
    ips = handler.topology.hosts[H1_MAC].ips
    assert len(ips) == ADDRESSES_PER_HOST
    handler.packet_in(2, 3, TABLE_INGRESS, bytes(Ether(src=H1_MAC, dst=H2_MAC, type=0x0800))
                      + bytes(20), [1, 2, 3], clock.now)
    clock.now += VERIFY_SECONDS  # its old place did not answer the probe
    assert handler.settle_claims().changed
    moved = handler.topology.hosts[H1_MAC]
    assert (moved.dpid, moved.port) == (2, 3) and moved.ips == ips


def victim_and_attacker() -> tuple[EventHandler, Clock]:
    """h2 (the victim) at switch 3, h1 (the attacker) at switch 1, both known."""
    handler, clock = ring()
    for dpid, mac, ip in ((3, H2_MAC, H2_IP), (1, H1_MAC, H1_IP)):
        handler.packet_in(dpid, 3, TABLE_INGRESS, arp_frame("is-at", mac, ip, ip), [1, 2, 3],
                          clock.now)
    return handler, clock


def probe_of(effects) -> tuple[int, int, arp.ArpMessage]:
    [(dpid, port, data)] = effects.packets
    return dpid, port, arp.parse(data)


def test_a_host_repeating_anothers_mac_does_not_take_its_place():
    handler, clock = victim_and_attacker()
    spoof = bytes(Ether(src=H2_MAC, dst="00:00:00:00:00:09", type=0x0800)) + bytes(20)
    effects = handler.packet_in(1, 3, TABLE_INGRESS, spoof, [1, 2, 3], clock.now)
    dpid, port, probe = probe_of(effects)  # the victim is asked where it was
    assert (dpid, port) == (3, 3) and probe.opcode == arp.REQUEST
    assert (probe.dst_mac, probe.dst_ip, probe.src_ip) == (H2_MAC, H2_IP, "0.0.0.0")
    answer = bytes(Ether(src=H2_MAC, dst=PROBE_MAC) / ARP(op="is-at", hwsrc=H2_MAC, psrc=H2_IP,
                                                         hwdst=PROBE_MAC, pdst="0.0.0.0"))
    assert not handler.packet_in(3, 3, TABLE_FORWARD, answer, [1, 2, 3], clock.now).packets
    clock.now += VERIFY_SECONDS
    assert not handler.settle_claims().changed
    assert (handler.topology.hosts[H2_MAC].dpid, handler.topology.hosts[H2_MAC].port) == (3, 3)


def test_a_host_claiming_anothers_address_is_not_believed_nor_passed_on():
    handler, clock = victim_and_attacker()
    lie = bytes(Ether(src=H1_MAC, dst="00:00:00:00:00:07")
                / ARP(op="is-at", hwsrc=H1_MAC, psrc=H2_IP, hwdst="00:00:00:00:00:07",
                      pdst="10.0.0.7"))
    effects = handler.packet_in(1, 3, TABLE_INGRESS, lie, [1, 2, 3], clock.now)
    dpid, port, probe = probe_of(effects)  # only the probe: the lie reaches nobody
    assert (dpid, port, probe.dst_ip) == (3, 3, H2_IP)
    answer = arp_frame("is-at", H2_MAC, H2_IP, H2_IP)
    handler.packet_in(3, 3, TABLE_INGRESS, answer, [1, 2, 3], clock.now)
    clock.now += VERIFY_SECONDS
    handler.settle_claims()
    assert handler.topology.host_by_ip(H2_IP).mac == H2_MAC
