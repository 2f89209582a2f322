"""The switches answer ARP for known addresses: the rules that do it. Pure."""

from __future__ import annotations

from sdn.model.cookies import COOKIE_ARP, cookie
from sdn.model.pipeline import IN_PORT, TABLE_FORWARD
from sdn.model.rules import Action, FlowRule, match

REQUEST, REPLY = 1, 2  # ARP opcodes (RFC 826)
ETH_TYPE_ARP = 0x0806
BROADCAST = "ff:ff:ff:ff:ff:ff"
# Table 3, above routes and flooding: a broadcast request for an address we know never
# leaves its first switch.
PRIO_ANSWER = 300


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
