"""Which traffic a policy change changes (`sdnctl policy diff`): representative packets —
one for every chain and class of either policy, and a sample of host pairs — traced
through the rules before and after, and compared by what happens to them: where they are
delivered, which VNFs they cross in which order, which class they get."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sdn.explain.trace import Probe
from sdn.model.pipeline import TABLE_POLICY
from sdn.model.topology import Host
from sdn.policy.schema import FiveTuple, Policy

HOST_PAIRS = 12  # sampled host pairs, besides one packet per chain and class


@dataclass(frozen=True)
class Case:
    label: str
    probe: Probe


def cases(policies: Iterable[Policy | None], hosts: list[Host],
          pairs: int = HOST_PAIRS) -> list[Case]:
    """The packets to compare, deterministic for the same policies and hosts."""
    hosts = sorted((h for h in hosts if h.ips), key=lambda h: h.ips[0])
    if len(hosts) < 2:
        return []
    vips: dict[str, str] = {}
    matches: list[tuple[str, FiveTuple]] = []
    for policy in policies:
        if policy is None:
            continue
        vips.update(policy.virtual_ips())
        matches += [(f"chain {c.name}", c.match) for c in policy.chains]
        matches += [(f"class {c.name}", c.match) for c in policy.classes]
    found: dict[tuple, Case] = {}
    for _what, match in matches:
        case = _case_for(match, hosts, vips)
        if case is not None:
            found.setdefault(_key(case.probe), case)
    for index in range(min(pairs, len(hosts))):
        src, dst = hosts[index], hosts[(index + 1) % len(hosts)]
        case = _make(src, dst.ips[0], dst.mac, "tcp", 40000, 80)
        found.setdefault(_key(case.probe), case)
    return list(found.values())


def _key(probe: Probe) -> tuple:
    return (probe.src_mac, probe.dst_ip, probe.proto, probe.sport, probe.dport)


def _in(address: str, network: str | None) -> bool:
    return network is None or ipaddress.IPv4Address(address) in ipaddress.IPv4Network(network)


def _case_for(match: FiveTuple, hosts: list[Host], vips: dict[str, str]) -> Case | None:
    """A packet `match` selects, between known hosts (or to a virtual IP)."""
    src = next((h for h in hosts if _in(h.ips[0], match.src)), None)
    if src is None:
        return None
    dst_vip = next((ip for ip in vips if _in(ip, match.dst)), None) if match.dst else None
    if dst_vip is not None:
        dst_ip, dst_mac = dst_vip, vips[dst_vip]
    else:
        dst = next((h for h in hosts if h is not src and _in(h.ips[0], match.dst)), None)
        if dst is None:
            return None
        dst_ip, dst_mac = dst.ips[0], dst.mac
    proto = match.proto if match.proto in ("tcp", "udp", "icmp") else "tcp"
    sport = match.src_port[0] if match.src_port else 40000
    dport = match.dst_port[0] if match.dst_port else 80
    return _make(src, dst_ip, dst_mac, proto, sport, dport)


def _make(src: Host, dst_ip: str, dst_mac: str, proto: str, sport: int, dport: int) -> Case:
    ports = f"/{dport}" if proto != "icmp" else ""
    label = f"{src.name or src.ips[0]} -> {dst_ip} {proto}{ports}"
    return Case(label, Probe(src.mac, src.ips[0], src.dpid, src.port, dst_mac, dst_ip, proto,
                             sport if proto != "icmp" else None,
                             dport if proto != "icmp" else None))


def what_happens(result: dict[str, Any]) -> str:
    """One line: delivered where, through which VNFs in order, in which class."""
    order: list[str] = []
    for note in result["vnfs"]:
        if note["side"] == "ingress" and note["vnf"] not in order:
            order.append(note["vnf"])
    classes = sorted({rule["object"] for visit in result["visits"] for rule in visit["rules"]
                      if rule["table"] == TABLE_POLICY and rule["object"].startswith("class")})
    outcome = result["outcome"]
    text = ("delivered to " + ", ".join(outcome["delivered"]) if outcome["delivered"]
            else "dropped")
    if order:
        text += " via " + "→".join(order)
    if classes:
        text += ", " + ", ".join(classes)
    return text


def changes(cases_: list[Case], run: Callable[[Probe, bool], dict[str, Any]]
            ) -> list[dict[str, str]]:
    """`run(probe, after)` traces before (False) or after (True) the change."""
    found = []
    for case in cases_:
        before, after = what_happens(run(case.probe, False)), what_happens(run(case.probe, True))
        if before != after:
            found.append({"traffic": case.label, "before": before, "after": after})
    return found
