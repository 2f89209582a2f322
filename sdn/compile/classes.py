"""Traffic classes (policy `classes`) -> table-1 rules and meters on every switch. Pure.

A class is classified once, at the ingress edge: its rule marks the class's DSCP (which the
egress HTB queues of `sdn.compile.queues` sort by), meters it when it has a `max_rate`, and goes on
to chain steering (TABLE_CHAIN), then forwarding. Packets that arrived over an inter-switch
link or from a VNF carry `METADATA_FROM_LINK` in their metadata (written by table 0, see
`sdn.compile.routes.base_pipeline`) and skip the class rules, so a packet is never re-marked or
metered twice. IPv4 traffic from a host that no class
selects is marked best effort (DSCP 0): hosts cannot pick a queue by marking themselves.

List order is precedence: the first class gets the highest OpenFlow priority. Every rule
of a class carries the class's object id as its cookie, and its meter id is derived from
that id, so editing one class touches that class's rules and meter only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from itertools import product
from typing import Any

from sdn.model.cookies import COOKIE_CLASS, cookie
from sdn.model.pipeline import METADATA_FROM_LINK, TABLE_CHAIN, TABLE_POLICY
from sdn.model.rules import FlowRule, MatchItems, Meter, SwitchRules, match
from sdn.model.topology import Snapshot
from sdn.policy.schema import Policy, TrafficClass

ETH_TYPE_IPV4 = 0x0800
PRIO_CLASS_TOP = 40000  # first class; table 1's miss rule is at 0
SHAPES = 4  # priorities per class, see _shape
MAX_CLASSES = 9000  # keeps every class above the miss rule and below the top
PRIO_UNCLASSIFIED = 1  # below every class, above table 1's miss rule
DSCP_BEST_EFFORT = 0
PORT_BITS = 16
# ids 1..65533: within what Open vSwitch's meter tables accept; 65534 and 65535 are the
# packet-in meters (sdn.compile.pipeline)
METER_ID_SPACE = 0xFFFD
MIN_BURST_SECONDS = 0.5  # TCP through a policer reaches the cap only with a deep bucket
MIN_BURST_KBITS = 100  # ~8 full-size frames, for very low caps


def port_masks(low: int, high: int, bits: int = PORT_BITS) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs whose union is exactly the ports low..high."""
    if not 0 <= low <= high < 1 << bits:
        raise ValueError(f"bad port range {low}-{high}")
    full = (1 << bits) - 1
    out = []
    while low <= high:
        size = low & -low if low else 1 << bits
        while low + size - 1 > high:
            size >>= 1
        out.append((low, full & ~(size - 1)))
        low += size
    return out


def _port_field(name: str, value: int, mask: int) -> dict[str, Any]:
    """A masked port as OpenFlow (and Open vSwitch, reading it back) spells it."""
    if mask == 0:
        return {}
    return {name: value if mask == (1 << PORT_BITS) - 1 else (value, mask)}


def _address_field(name: str, network: ipaddress.IPv4Network) -> dict[str, Any]:
    if network.prefixlen == 0:
        return {}
    if network.prefixlen == 32:
        return {name: str(network.network_address)}
    return {name: (str(network.network_address), str(network.netmask))}


def _endpoint(policy: Policy, value: str | None, ip_field: str, eth_field: str
              ) -> dict[str, Any]:
    """A match's src/dst: a network, or a host name (its IP, else its MAC)."""
    if value is None:
        return {}
    network = policy.resolve_address(value)
    if network is not None:
        return _address_field(ip_field, network)
    return {eth_field: policy.hosts[value].mac}


def _shape(src_mask: int, dst_mask: int) -> int:
    """Which of a sub-rule's ports are masked, 0-3. The sub-rules of one class are
    disjoint, so they may sit at different priorities; keeping exact and masked ports
    apart keeps every two rules with the same table and priority comparable field by
    field (rule sets get sorted, and `80 < (1000, 0xfc00)` is a TypeError)."""
    full = (1 << PORT_BITS) - 1
    return (src_mask not in (0, full)) + 2 * (dst_mask not in (0, full))


def class_matches(policy: Policy, tc: TrafficClass) -> list[tuple[int, dict[str, Any]]]:
    """The OpenFlow matches (as field dicts, each with its `_shape`) that together select
    exactly the class's IPv4 traffic entering from a host; port ranges become several
    value/mask matches."""
    m = tc.match
    base: dict[str, Any] = {"eth_type": ETH_TYPE_IPV4, "metadata": (0, METADATA_FROM_LINK)}
    if m.ip_proto is not None:
        base["ip_proto"] = m.ip_proto
    if m.dscp is not None:
        base["ip_dscp"] = m.dscp
    base |= _endpoint(policy, m.src, "ipv4_src", "eth_src")
    base |= _endpoint(policy, m.dst, "ipv4_dst", "eth_dst")
    l4 = m.proto if m.proto in ("tcp", "udp") else None
    srcs = port_masks(*m.src_port) if l4 and m.src_port else [(0, 0)]
    dsts = port_masks(*m.dst_port) if l4 and m.dst_port else [(0, 0)]
    return [
        (_shape(s[1], d[1]), base | _port_field(f"{l4}_src", *s) | _port_field(f"{l4}_dst", *d))
        for s, d in product(srcs, dsts)
    ]


def _host_location(policy: Policy, name: str, snapshot: Snapshot) -> tuple[int, int] | None:
    """Where a policy host is attached, if the network has seen it (by MAC, else by IP)."""
    host = policy.hosts.get(name)
    if host is None:
        return None
    for seen in snapshot.hosts:
        if (host.mac and seen.mac == host.mac) or (host.ip and host.ip in seen.ips):
            return seen.dpid, seen.port
    return None


def meter_ids(policy: Policy) -> dict[str, int]:
    """Meter id of every class with a `max_rate`: derived from the class's object id,
    so it stays put while the class does; a collision moves the later class on."""
    ids = policy.object_ids()
    taken: dict[str, int] = {}
    used: set[int] = set()
    for tc in policy.classes:
        if tc.max_rate is None:
            continue
        mid = ids[f"class:{tc.name}"] % METER_ID_SPACE + 1
        while mid in used:
            mid = mid % METER_ID_SPACE + 1
        taken[tc.name] = mid
        used.add(mid)
    return taken


def burst_kbits(rate_bps: int) -> int:
    return max(MIN_BURST_KBITS, round(rate_bps * MIN_BURST_SECONDS / 1000))


def class_meter(dpid: int, meter_id: int, tc: TrafficClass) -> Meter:
    rate = tc.max_rate or 0
    return Meter(dpid, meter_id, max(1, round(rate / 1000)), burst_kbits(rate))


def class_rules(policy: Policy, snapshot: Snapshot) -> dict[int, SwitchRules]:
    """Every switch's class rules and meters (with classes, every switch has some)."""
    if len(policy.classes) > MAX_CLASSES:
        raise ValueError(f"{len(policy.classes)} classes: at most {MAX_CLASSES} supported")
    ids = policy.object_ids()
    meters = meter_ids(policy)
    out: dict[int, SwitchRules] = {}
    for index, tc in enumerate(policy.classes):
        switches: Iterable[int] = snapshot.switches
        extra: dict[str, Any] = {}
        if tc.match.in_host is not None:
            where = _host_location(policy, tc.match.in_host, snapshot)
            if where is None:
                continue  # not attached yet: nothing can enter from it
            switches, extra = (where[0],), {"in_port": where[1]}
        matches = [(PRIO_CLASS_TOP - SHAPES * index - shape, match(**(fields | extra)))
                   for shape, fields in class_matches(policy, tc)]
        _add_class(out, switches, matches, tc, cookie(COOKIE_CLASS, ids[f"class:{tc.name}"]),
                   meters.get(tc.name))
    for dpid in snapshot.switches:
        rule = unclassified_rule(dpid)
        out.setdefault(dpid, SwitchRules()).flows[rule.key] = rule
    return out


def unclassified_rule(dpid: int) -> FlowRule:
    return FlowRule(dpid, TABLE_POLICY, PRIO_UNCLASSIFIED,
                    match(eth_type=ETH_TYPE_IPV4, metadata=(0, METADATA_FROM_LINK)),
                    (("set_field", "ip_dscp", DSCP_BEST_EFFORT),), goto=TABLE_CHAIN,
                    cookie=cookie(COOKIE_CLASS, "unclassified"))


def _add_class(out: dict[int, SwitchRules], switches: Iterable[int],
               matches: list[tuple[int, MatchItems]], tc: TrafficClass, cookie_: int,
               meter_id: int | None) -> None:
    actions = (("set_field", "ip_dscp", tc.dscp_mark),)
    for dpid in switches:
        rules = out.setdefault(dpid, SwitchRules())
        if meter_id is not None:
            rules.meters[meter_id] = class_meter(dpid, meter_id, tc)
        for priority, items in matches:
            rule = FlowRule(dpid, TABLE_POLICY, priority, items, actions, goto=TABLE_CHAIN,
                            cookie=cookie_, meter=meter_id)
            rules.flows[rule.key] = rule


def add_class_rules(desired: Mapping[int, SwitchRules], policy: Policy | None,
                    snapshot: Snapshot) -> None:
    """Merge the policy's class rules and meters into the switches' desired rules."""
    if policy is None or not policy.classes:
        return
    for dpid, rules in class_rules(policy, snapshot).items():
        target = desired.get(dpid)
        if target is not None:
            target.flows.update(rules.flows)
            target.meters.update(rules.meters)
