"""What the policy's network functions do to a traced packet, from their configuration.

- A firewall: the first of its rules that matches decides (else its default), as for the
  first packet of a connection; a packet coming back through it (its egress arm) passes
  if the connection it answers would have been allowed, as its connection tracking does.
- A load balancer: a packet to its VIP and port leaves towards *each* backend (the
  Maglev choice is the function's, per connection: every backend it may pick is shown),
  addresses and MACs rewritten as its NAT does; an answer from a backend leaves with the
  VIP as its source.
- An analyzer passes everything.

Every decision is recorded as a note for the trace to show.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from sdn.explain.flowsim import VnfModel
from sdn.policy.schema import Firewall, FirewallRule, LoadBalancer, Policy

Note = dict[str, Any]


def models_for(policy: Policy | None, instances: list[tuple[str, str, int, int, int]],
               mac_of: Callable[[str], str | None], notes: list[Note]) -> list[VnfModel]:
    """`instances`: (policy VNF name, instance, dpid, ingress port, egress port)."""
    models = []
    for vnf_name, instance, dpid, ingress, egress in instances:
        vnf = policy.vnfs.get(vnf_name) if policy is not None else None
        models.append(VnfModel(dpid, ingress, egress,
                               _rewrite(vnf, vnf_name, instance, mac_of, notes)))
    return models


def _rewrite(vnf, vnf_name: str, instance: str, mac_of, notes: list[Note]):
    def rewrite(pkt: dict, side: str) -> list[dict]:
        if isinstance(vnf, Firewall):
            out, verdict = _firewall(vnf, pkt, side)
        elif isinstance(vnf, LoadBalancer):
            out, verdict = _load_balancer(vnf, vnf_name, pkt, side, mac_of)
        else:
            out, verdict = [pkt], "passes (analyzer)"
        notes.append({"vnf": instance, "side": side, "verdict": verdict})
        return out
    return rewrite


def _ports(pkt: dict) -> tuple[int | None, int | None]:
    for proto in ("tcp", "udp"):
        if f"{proto}_src" in pkt:
            return pkt[f"{proto}_src"], pkt[f"{proto}_dst"]
    return None, None


def _matches(rule: FirewallRule, pkt: dict, src: str, dst: str,
             sport: int | None, dport: int | None) -> bool:
    if rule.ip_proto is not None and pkt.get("ip_proto") != rule.ip_proto:
        return False
    for want, have in ((rule.src, src), (rule.dst, dst)):
        if want is not None and ipaddress.IPv4Address(have) not in ipaddress.IPv4Network(want):
            return False
    for want, have in ((rule.src_port, sport), (rule.dst_port, dport)):
        if want is not None and (have is None or not want[0] <= have <= want[1]):
            return False
    return rule.icmp_type is None or pkt.get("icmpv4_type") == rule.icmp_type


def _firewall(vnf: Firewall, pkt: dict, side: str) -> tuple[list[dict], str]:
    sport, dport = _ports(pkt)
    src, dst = pkt["ipv4_src"], pkt["ipv4_dst"]
    if side == "egress":  # an answer: judged as the connection it answers
        src, dst, sport, dport = dst, src, dport, sport
    for index, rule in enumerate(vnf.rules):
        if _matches(rule, pkt, src, dst, sport, dport):
            allowed = rule.action == "allow"
            return ([pkt] if allowed else []), (
                f"{rule.action} by rule {index + 1}"
                + (" (an answer to an allowed connection)" if side == "egress" and allowed
                   else ""))
    allowed = vnf.default == "allow"
    return ([pkt] if allowed else []), f"{vnf.default} by default (no rule matches)"


def _load_balancer(vnf: LoadBalancer, name: str, pkt: dict, side: str, mac_of
                   ) -> tuple[list[dict], str]:
    proto = vnf.proto
    sport_field, dport_field = f"{proto}_src", f"{proto}_dst"
    to_vip = (side == "ingress" and pkt.get("ipv4_dst") == vnf.vip
              and (vnf.port is None or pkt.get(dport_field) == vnf.port))
    if to_vip:
        out = []
        for backend in vnf.backends:
            if backend.weight == 0:
                continue
            rewritten = {**pkt, "ipv4_dst": backend.ip,
                         "eth_dst": mac_of(backend.ip) or pkt["eth_dst"]}
            if backend.port is not None and dport_field in pkt:
                rewritten[dport_field] = backend.port
            out.append(rewritten)
        chosen = ", ".join(b.ip for b in vnf.backends if b.weight)
        return out, f"to one of {chosen} (Maglev per connection; each shown)"
    backends = {b.ip for b in vnf.backends}
    if side == "egress" and pkt.get("ipv4_src") in backends:
        answer = {**pkt, "ipv4_src": vnf.vip, "eth_src": vnf.mac_for(name)}
        if vnf.port is not None and sport_field in pkt:
            answer[sport_field] = vnf.port
        return [answer], f"answer from {pkt['ipv4_src']} leaves as the VIP {vnf.vip}"
    return [pkt], "passes (not for the VIP)"
