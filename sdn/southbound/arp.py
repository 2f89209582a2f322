"""ARP as the controller sees it: parse what a switch sends up, build the replies it sends
back. The data-plane answers are compiled in sdn.compile.arp."""

from __future__ import annotations

from dataclasses import dataclass

from os_ken.lib.packet import arp, ethernet, packet

from sdn.compile.arp import REPLY, REQUEST


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


def probe(target_mac: str, target_ip: str, probe_mac: str) -> bytes:
    """An ARP probe (RFC 5227: sender address 0.0.0.0) asking `target_mac` whether it
    still holds `target_ip`; its answer comes back to `probe_mac`."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=target_mac, src=probe_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=REQUEST, src_mac=probe_mac, src_ip="0.0.0.0",
                             dst_mac=target_mac, dst_ip=target_ip))
    pkt.serialize()
    return bytes(pkt.data)


def reply(request: ArpMessage, answer_mac: str) -> bytes:
    """The reply `answer_mac` would have sent to the requester."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=request.src_mac, src=answer_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=REPLY, src_mac=answer_mac, src_ip=request.dst_ip,
                             dst_mac=request.src_mac, dst_ip=request.src_ip))
    pkt.serialize()
    return bytes(pkt.data)
