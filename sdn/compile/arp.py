"""ARP parsing and proxy replies, by the controller (packets) or by the switches (rules).
Pure."""

from __future__ import annotations

from dataclasses import dataclass

from os_ken.lib.packet import arp, ethernet, packet

from sdn.model.rules import COOKIE_ARP, IN_PORT, TABLE_FORWARD, Action, FlowRule, cookie, match

REQUEST = arp.ARP_REQUEST
REPLY = arp.ARP_REPLY
ETH_TYPE_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
# Table 3, above routes and flooding: a broadcast request for an address we know never
# leaves its first switch.
PRIO_ANSWER = 300


@dataclass(frozen=True)
class ArpMessage:
    opcode: int
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str

    @property
    def gratuitous(self) -> bool:
        return self.src_ip == self.dst_ip


def parse(data: bytes) -> ArpMessage | None:
    try:
        msg = packet.Packet(data).get_protocol(arp.arp)
    except Exception:  # malformed frames from the wire are ignored, not fatal
        return None
    if msg is None:
        return None
    return ArpMessage(msg.opcode, msg.src_mac, msg.src_ip, msg.dst_mac, msg.dst_ip)


def reply(request: ArpMessage, answer_mac: str) -> bytes:
    """The reply `answer_mac` would have sent to the requester."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=request.src_mac, src=answer_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=REPLY, src_mac=answer_mac, src_ip=request.dst_ip,
                             dst_mac=request.src_mac, dst_ip=request.src_ip))
    pkt.serialize()
    return bytes(pkt.data)


def answer_rule(dpid: int, ip: str, mac: str, tell_owner: bool = True) -> FlowRule:
    """Table 3: a broadcast request for `ip` turns into the reply `mac` would send and goes
    back out of the port it came in on, so a host resolving a known address pays no
    controller round trip. With `tell_owner` the request also goes on to its owner, as
    unicast, first: the owner learns the asker from it, so its answer to the asker's
    first packet needs no ARP of its own. Unicast requests (a host re-checking a
    neighbour it has cached) still reach the owner, whose answer says it is alive."""
    to_owner = (("set_field", "eth_dst", mac), ("resubmit", TABLE_FORWARD)) if tell_owner else ()
    return FlowRule(
        dpid, TABLE_FORWARD, PRIO_ANSWER,
        match(eth_type=ETH_TYPE_ARP, eth_dst=BROADCAST, arp_op=REQUEST, arp_tpa=ip),
        to_owner + _reply_actions(ip, mac), cookie=cookie(COOKIE_ARP, ip))


def _reply_actions(ip: str, mac: str) -> tuple[Action, ...]:
    """The request rewritten in place into the reply, the data-plane twin of `reply` (the
    asker's MAC is still in eth_src, whatever eth_dst is by now)."""
    return (
        ("move", "eth_src", "eth_dst", 48),
        ("set_field", "eth_src", mac),
        ("set_field", "arp_op", REPLY),
        ("move", "arp_sha", "arp_tha", 48),
        ("move", "arp_spa", "arp_tpa", 32),
        ("set_field", "arp_sha", mac),
        ("set_field", "arp_spa", ip),
        ("output", IN_PORT),
    )
