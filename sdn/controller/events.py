"""What the controller does about what switches tell it, without sockets or os-ken.

The os-ken adapter (sdn.controller.app) decodes each event and calls in here; these
methods update the topology and return `Effects`: the packets to send and whether the
network must be recompiled. Unit tests drive them directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from prometheus_client import Counter

from sdn.compile.arp import ETH_TYPE_ARP
from sdn.compile.pipeline import ETH_TYPE_LLDP
from sdn.model.pipeline import CONTROLLER_PORT, TABLE_FORWARD, TABLE_INGRESS, TABLE_PORT
from sdn.model.topology import Link, Topology
from sdn.southbound import arp, lldp

LOG = logging.getLogger(__name__)

# A link goes down when, in one of its directions, probes of a round this many rounds
# after the last one heard on the link have been read both from its sending end (at any
# neighbour) and at its receiving end (from any neighbour): evidence, not the clock, so
# LLDP waiting in a backlog (read in round order, any order within a round), a controller
# too busy to read, or a switch whose probes wait behind its FlowMods loses no link (with
# a round a second, about 4 s of silence).
LINK_TIMEOUT_ROUNDS = 3
# A link found silent is first suspected: probed again at once out of both its ends, and
# it goes only if it stays silent while its ends are heard this many rounds more. A
# switch that drops a packet-in now and then (Open vSwitch under load does) loses no link.
SUSPECT_ROUNDS = 2
# The controller's own address for the ARP probes that verify moves (locally administered).
PROBE_MAC = "02:5d:c0:00:00:01"

PACKET_INS = Counter("sdn_packet_in_total", "Packet-in messages by kind", ["kind"])
SPOOFED_ARP = Counter("sdn_arp_spoofed_total",
                      "ARP not answered or passed on: its sender address is another host's")
PROBES = Counter("sdn_host_probes_total", "ARP probes sent to verify a host move or an "
                 "address takeover")
LINK_EVENTS = Counter("sdn_link_events_total", "Inter-switch links found and lost, by how: "
                      "found, timed out (no LLDP), port down", ["event"])
HOSTS_REFUSED = Counter("sdn_hosts_refused_total",
                        "Hosts not learned: their port holds the most hosts a port may")


@dataclass
class Effects:
    """What one event asks of the adapter."""

    packets: list[tuple[int, int, bytes]] = field(default_factory=list)  # dpid, port, frame
    changed: bool = False  # the topology changed: recompile and sync

    def send(self, dpid: int, port: int, data: bytes) -> None:
        self.packets.append((dpid, port, data))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


class EventHandler:
    """Host learning, ARP answers, delivery of misses, LLDP discovery and link ageing."""

    def __init__(self, topology: Topology, vip_mac: Callable[[str], str | None]) -> None:
        self.topology = topology
        self.vip_mac = vip_mac
        self.link_seen: dict[Link, int] = {}  # the newest round read on the link
        self.heard_from: dict[int, int] = {}  # dpid -> its newest probe read anywhere
        self.suspects: dict[Link, int] = {}  # silent links probed again: listened then

    def packet_in(self, dpid: int, in_port: int, table_id: int, data: bytes,
                  connected: Collection[int]) -> Effects:
        """A frame a switch sent up; `connected` are the switches we can send to."""
        effects = Effects()
        if len(data) < 14:
            return effects
        eth_type = int.from_bytes(data[12:14], "big")
        if eth_type == ETH_TYPE_LLDP:
            PACKET_INS.labels("lldp").inc()
            self._on_lldp(dpid, in_port, data, effects)
        elif eth_type == ETH_TYPE_ARP:
            PACKET_INS.labels("arp").inc()
            self._on_arp(dpid, in_port, data, connected, effects)
        elif table_id == TABLE_INGRESS:
            PACKET_INS.labels("learn").inc()
            self._learn(mac_text(data[6:12]), dpid, in_port, None, effects)
        elif table_id == TABLE_FORWARD:
            PACKET_INS.labels("miss").inc()
            self._learn(mac_text(data[6:12]), dpid, in_port, None, effects)
            self._deliver(dpid, in_port, mac_text(data[0:6]), data, connected, effects)
        return effects

    @property
    def round(self) -> int:
        """The LLDP probing round under way."""
        return self.topology.round

    def probes(self, ports: Collection[tuple[int, int]] | None = None,
               new_round: bool = True) -> Effects:
        """LLDP probes out of `ports`, or out of every known port (in a new round unless
        told otherwise: a repeat must not age links faster); VNF arms see only their own
        traffic. A new round also sends a probe through the own tables of every switch
        whose ports wait for evidence (`Topology.hear`): read back, it shows that LLDP
        arriving there is read up to this round, links or none."""
        effects = Effects()
        if ports is None:
            if new_round:
                self.topology.round += 1
                for dpid in self.topology.awaiting_evidence():
                    effects.send(dpid, TABLE_PORT, lldp.build_probe(dpid, 0, self.round))
            ports = [(dpid, port) for dpid, known in list(self.topology.ports.items())
                     for port in list(known)]
        for dpid, port in ports:
            if not self.topology.is_service_port(dpid, port):
                effects.send(dpid, port, lldp.build_probe(dpid, port, self.round))
        return effects

    def settle_claims(self) -> Effects:
        """Moves and address takeovers nobody objected to take effect."""
        return Effects(changed=self.topology.settle_claims())

    def expire_links(self) -> Effects:
        """Links not heard for LINK_TIMEOUT_ROUNDS of the rounds read at their ends are
        probed again; if that goes unheard too they go."""
        effects = Effects()
        for link in list(self.topology.links):
            seen = self.link_seen.setdefault(link, self.round)
            listened = max(self._listened(link.a, link.b, seen),
                           self._listened(link.b, link.a, seen))
            if listened - seen <= LINK_TIMEOUT_ROUNDS:
                self.suspects.pop(link, None)
                continue
            suspected = self.suspects.setdefault(link, listened)
            if suspected == listened:
                effects.send(link.a, link.a_port, lldp.build_probe(link.a, link.a_port,
                                                                   self.round))
                effects.send(link.b, link.b_port, lldp.build_probe(link.b, link.b_port,
                                                                   self.round))
            elif listened - suspected >= SUSPECT_ROUNDS:
                LOG.warning("link %s timed out (no LLDP)", link)
                LINK_EVENTS.labels("timed out").inc()
                self.topology.remove_link(link)
                self.link_seen.pop(link, None)
                self.suspects.pop(link, None)
                effects.changed = True
        for gone in self.suspects.keys() - self.topology.links:  # went with their ports
            del self.suspects[gone]
        return effects

    def _listened(self, sender: int, receiver: int, default: int) -> int:
        """The newest round both read from `sender` and read at `receiver`."""
        return min(self.heard_from.get(sender, default),
                   self.topology.heard.get(receiver, default))

    def _on_lldp(self, dpid: int, in_port: int, data: bytes, effects: Effects) -> None:
        origin = lldp.parse_probe(data)
        if origin is None:
            return
        src, src_port, round_ = origin
        if self.topology.hear(dpid, round_):
            effects.changed = True  # ports of it may be edge ports now
        if in_port == CONTROLLER_PORT:
            return  # a probe through its own tables (`probes`), not over a link
        link = Link.between(src, src_port, dpid, in_port)
        self.link_seen[link] = max(self.link_seen.get(link, round_), round_)
        self.heard_from[src] = max(self.heard_from.get(src, round_), round_)
        if self.topology.add_link(src, src_port, dpid, in_port):
            LOG.info("link %016x:%d <-> %016x:%d", src, src_port, dpid, in_port)
            LINK_EVENTS.labels("found").inc()
            effects.changed = True

    def _on_arp(self, dpid: int, in_port: int, data: bytes, connected: Collection[int],
                effects: Effects) -> None:
        msg = arp.parse(data)
        if msg is None or self.topology.faces_switch(dpid, in_port):
            return
        self._learn(msg.src_mac, dpid, in_port, msg.src_ip, effects)
        if msg.gratuitous or msg.dst_mac == PROBE_MAC:
            return
        owner = self.topology.host_by_ip(msg.src_ip)
        if owner is not None and owner.mac != msg.src_mac:
            SPOOFED_ARP.inc()  # dynamic ARP inspection: poison nobody's cache
            return
        if msg.opcode == arp.REQUEST:
            target = self.topology.host_by_ip(msg.dst_ip)
            answer = target.mac if target is not None else self.vip_mac(msg.dst_ip)
            if answer is not None:
                effects.send(dpid, in_port, arp.reply(msg, answer))
                return
        self._deliver(dpid, in_port, msg.dst_mac, data, connected, effects)

    def _deliver(self, dpid: int, in_port: int, dst_mac: str, data: bytes,
                 connected: Collection[int], effects: Effects) -> None:
        """Hand a packet straight to its host's port, or to every edge port when unknown;
        never through the data plane, so it cannot loop."""
        host = self.topology.hosts.get(dst_mac)
        if host is not None:
            effects.send(host.dpid, host.port, data)
            return
        for sw in connected:
            for port in self.topology.edge_ports(sw):
                if (sw, port) != (dpid, in_port):
                    effects.send(sw, port, data)

    def _learn(self, mac: str, dpid: int, port: int, ip: str | None, effects: Effects) -> None:
        if int(mac[:2], 16) & 1:
            return
        claims = set(self.topology.claims)
        if self.topology.learn_host(mac, dpid, port, ip):
            LOG.info("host %s at %016x port %d", mac, dpid, port)
            effects.changed = True
        elif not self.topology.has_room(mac, dpid, port):
            HOSTS_REFUSED.inc()
            return
        for key in self.topology.claims.keys() - claims:
            claim = self.topology.claims[key]
            owner = claim.owner
            LOG.info("%s at %016x port %d claims %s of %s: asking it", mac, dpid, port,
                     claim.ip or "the place", owner.mac)
            PROBES.inc()
            effects.send(owner.dpid, owner.port,
                         arp.probe(owner.mac, claim.ip or owner.ips[0], PROBE_MAC))
