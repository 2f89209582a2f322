"""Where a packet goes, and why (`sdnctl trace`): the flow simulator run on a switch's rule
sets — compiled or read back from the switches — with every switch visit explained.

Select (ECMP) groups are followed down every live bucket: which one a flow takes is the
switch's hash, so the trace shows each path it may take. Fast-failover groups take their
first live bucket. The policy's VNFs act on the packet as `vnf_models` says (a firewall's
verdict, a load balancer's NAT towards each backend), each decision noted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sdn.explain.flowsim import VLAN_PRESENT, Network, Trace
from sdn.explain.vnf_models import models_for
from sdn.model.rules import FlowRule, SwitchRules
from sdn.model.topology import Snapshot
from sdn.policy.schema import Policy

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_FIELDS = {"tcp": ("tcp_src", "tcp_dst"), "udp": ("udp_src", "udp_dst")}


@dataclass(frozen=True)
class Probe:
    """The packet to trace: from a host at its switch port, to an address and MAC."""

    src_mac: str
    src_ip: str
    dpid: int
    in_port: int
    dst_mac: str
    dst_ip: str
    proto: str | None = None  # tcp, udp, icmp; None: any IPv4
    sport: int | None = None
    dport: int | None = None

    def packet(self) -> dict[str, Any]:
        pkt: dict[str, Any] = {"eth_src": self.src_mac, "eth_dst": self.dst_mac,
                               "eth_type": 0x0800, "ipv4_src": self.src_ip,
                               "ipv4_dst": self.dst_ip}
        if self.proto is not None:
            pkt["ip_proto"] = PROTOCOLS[self.proto]
        if self.proto in PORT_FIELDS:
            src_field, dst_field = PORT_FIELDS[self.proto]
            pkt[src_field] = self.sport if self.sport is not None else 49152
            pkt[dst_field] = self.dport if self.dport is not None else 80
        elif self.proto == "icmp":
            pkt.update(icmpv4_type=8, icmpv4_code=0)
        return pkt


@dataclass(frozen=True)
class Context:
    """What names things (switches and ports, hosts at edge ports, cookies) and where the
    VNFs are: (policy VNF name, instance, dpid, ingress port, egress port)."""

    switch_name: Callable[[int], str]
    port_name: Callable[[int, int], str]
    hosts_at: Mapping[tuple[int, int], str]  # (dpid, port) -> host name or MAC
    object_of: Callable[[int], str]  # cookie -> the policy object it names
    vnfs: tuple[tuple[str, str, int, int, int], ...] = ()
    mac_of: Callable[[str], str | None] = lambda _ip: None  # a host's MAC by address

    @property
    def vnf_arms(self) -> dict[tuple[int, int], tuple[str, str]]:
        """(dpid, port) -> (instance, side)."""
        arms = {}
        for _name, instance, dpid, ingress, egress in self.vnfs:
            arms[(dpid, ingress)] = (instance, "ingress")
            arms[(dpid, egress)] = (instance, "egress")
        return arms


def trace(snapshot: Snapshot, rules: dict[int, SwitchRules], probe: Probe,
          context: Context, rule_text: Callable[[FlowRule], dict[str, Any]],
          policy: Policy | None = None) -> dict[str, Any]:
    """{"visits": [...], "vnfs": [...], "outcome": {...}}: one visit per switch the packet
    (or one of its copies: ECMP paths, load-balancer backends) enters, with the rules it
    matched, the buckets it took and where it left; what each VNF decided."""
    if probe.dpid not in rules:
        raise LookupError(f"no rules for switch {context.switch_name(probe.dpid)}")
    notes: list[dict[str, Any]] = []
    models = models_for(policy, list(context.vnfs), context.mac_of, notes)
    network = Network(snapshot, rules, vnfs=models, every_bucket=True)
    result = network.send(probe.dpid, probe.in_port, probe.packet())
    return {"visits": _visits(result, context, rule_text), "vnfs": notes,
            "outcome": _outcome(result, context)}


def _visits(result: Trace, context: Context, rule_text) -> list[dict[str, Any]]:
    visits = []
    for index, (dpid, port, parent) in enumerate(result.arrivals):
        visits.append({
            "visit": index, "from": parent, "switch": context.switch_name(dpid),
            "in_port": context.port_name(dpid, port), "in_port_no": port,
            "packet": _fields(result.arrival_packets[index]),
            "rules": [{**rule_text(rule), "object": context.object_of(rule.cookie)}
                      for visit, rule in result.matched if visit == index],
            "groups": [{"group_id": group, "buckets": list(buckets)}
                       for visit, group, buckets in result.buckets if visit == index],
            "out": [_exit(dpid, port_out, kind, context)
                    for visit, port_out, kind in result.exits if visit == index],
            "to_controller": any(action[0] == "controller" for visit, rule in result.matched
                                 if visit == index for action in rule.actions),
        })
    return visits


def _fields(pkt: dict[str, Any]) -> dict[str, Any]:
    """The packet as it entered a switch: its header fields, a VLAN id only when tagged."""
    fields = {k: v for k, v in pkt.items() if k != "vlan_vid"}
    if pkt.get("vlan_vid", 0) & VLAN_PRESENT:
        fields["vlan_vid"] = pkt["vlan_vid"] & ~VLAN_PRESENT
    return fields


def _exit(dpid: int, port: int, kind: str, context: Context) -> dict[str, Any]:
    where = {"link": "", "down": "link down",
             "vnf": " ".join(context.vnf_arms.get((dpid, port), ("?", "?"))),
             "delivered": context.hosts_at.get((dpid, port), "an edge port")}[kind]
    return {"port": context.port_name(dpid, port), "port_no": port, "kind": kind, "to": where}


def _outcome(result: Trace, context: Context) -> dict[str, Any]:
    delivered = sorted({context.hosts_at.get(at, context.port_name(*at))
                        for at in result.delivered})
    arms = context.vnf_arms
    vnfs = sorted({arms[at][0] for at in result.visits if at in arms})
    return {"delivered": delivered, "through_vnfs": vnfs, "looped": result.looped,
            "to_controller": sorted({context.switch_name(d) for d in result.to_controller}),
            "dropped": not (delivered or result.to_controller or result.looped)}
