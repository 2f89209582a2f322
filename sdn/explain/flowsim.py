"""An OpenFlow 1.3 pipeline simulator for rule sets (pure): `sdnctl trace` and the tests.

It follows a packet through tables, goto, groups (ff/select/all) and links, so the tests
can say where a packet ends up, and whether it loops, without a switch. Actions that change
the packet (set_field, push_vlan, pop_vlan) travel with it to the next switch; a packet
without a VLAN tag has vlan_vid 0 (OFPVID_NONE). Two-arm VNFs (`VnfModel`) send what they
get on one arm back out of the other, optionally rewritten (NAT).
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sdn.model.pipeline import IN_PORT
from sdn.model.rules import FlowRule, Group, SwitchRules
from sdn.model.topology import Link, Snapshot

MAX_HOPS = 64
VLAN_PRESENT = 0x1000
PER_SWITCH = ("in_port", "metadata")  # pipeline state that does not leave a switch

Rewrite = Callable[[dict, str], "dict | list[dict] | None"]
"""(packet, arm it arrived on: 'ingress'|'egress') -> packet leaving the other arm (or
several, each followed), or None to drop it."""


@dataclass(frozen=True)
class VnfModel:
    """A two-arm VNF plugged into `dpid`: ingress faces the chain's source."""

    dpid: int
    ingress: int
    egress: int
    rewrite: Rewrite | None = None


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _int(value: int | str) -> int:
    """A match value as a number: ints as they are, MACs and IPv4 addresses parsed."""
    if isinstance(value, int):
        return value
    if ":" in value:
        return _mac_int(value)
    return int(ipaddress.IPv4Address(value))


def _matches(rule: FlowRule, pkt: dict) -> bool:
    for name, want in rule.match:
        have = pkt.get(name)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = (_int(want[0]), _int(want[1]))
            if _int(have) & mask != value & mask:
                return False
        elif have != want:
            return False
    return True


@dataclass
class Trace:
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (dpid, port) off-network
    to_controller: list[int] = field(default_factory=list)
    hops: int = 0
    looped: bool = False
    path: list[int] = field(default_factory=list)
    set_fields: list[tuple[int, str, object]] = field(default_factory=list)  # (dpid, f, v)
    meters: list[tuple[int, int]] = field(default_factory=list)  # (dpid, meter id)
    packets: list[dict] = field(default_factory=list)  # as delivered, in `delivered` order
    visits: list[tuple[int, int]] = field(default_factory=list)  # VNF arms, in order
    visit_packets: list[dict] = field(default_factory=list)  # as each VNF arm got them
    # Per switch visit, for explaining: where the packet came in (and from which visit),
    # the rules it matched, the group buckets it took, where it went out.
    arrivals: list[tuple[int, int, int | None]] = field(default_factory=list)
    arrival_packets: list[dict] = field(default_factory=list)  # as each visit got it
    matched: list[tuple[int, FlowRule]] = field(default_factory=list)  # (visit, rule)
    buckets: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    exits: list[tuple[int, int, str]] = field(default_factory=list)  # (visit, port, kind)


class Network:
    """`every_bucket`: a select group sends the packet down every live bucket (every path
    ECMP may choose) instead of the one a hash picks."""

    def __init__(self, snapshot: Snapshot, rules: dict[int, SwitchRules],
                 dead_links: frozenset[Link] = frozenset(),
                 vnfs: Iterable[VnfModel] = (), every_bucket: bool = False) -> None:
        self.rules = rules
        self.every_bucket = every_bucket
        self._visit = 0
        self.arms: dict[tuple[int, int], tuple[VnfModel, str]] = {}
        for vnf in vnfs:
            self.arms[(vnf.dpid, vnf.ingress)] = (vnf, "ingress")
            self.arms[(vnf.dpid, vnf.egress)] = (vnf, "egress")
        self.peer: dict[tuple[int, int], tuple[int, int]] = {}
        self.dead: set[tuple[int, int]] = set()
        for lk in snapshot.links:
            self.peer[(lk.a, lk.a_port)] = (lk.b, lk.b_port)
            self.peer[(lk.b, lk.b_port)] = (lk.a, lk.a_port)
            if lk in dead_links:
                self.dead |= {(lk.a, lk.a_port), (lk.b, lk.b_port)}

    def live(self, dpid: int, port: int) -> bool:
        return (dpid, port) not in self.dead

    def send(self, dpid: int, in_port: int, pkt: dict) -> Trace:
        trace = Trace()
        queue: list[tuple[int, int, dict, int | None]] = [
            (dpid, in_port, {"vlan_vid": 0, **pkt}, None)]
        while queue:
            here, port, pkt, parent = queue.pop()
            trace.hops += 1
            trace.path.append(here)
            if trace.hops > MAX_HOPS:
                trace.looped = True
                return trace
            self._visit = len(trace.arrivals)
            trace.arrivals.append((here, port, parent))
            trace.arrival_packets.append(dict(pkt))
            visit = self._visit
            for out, sent in self._pipeline(here, {**pkt, "in_port": port}, trace):
                if out == IN_PORT:
                    out = port
                elif out == port:
                    continue  # OpenFlow never sends a packet back out of its in_port
                if not self.live(here, out):
                    trace.exits.append((visit, out, "down"))
                    continue
                if (here, out) in self.peer:
                    trace.exits.append((visit, out, "link"))
                    queue.append((*self.peer[(here, out)], sent, visit))
                elif (here, out) in self.arms:
                    trace.exits.append((visit, out, "vnf"))
                    queue += [(*q, visit) for q in self._through_vnf(here, out, sent, trace)]
                else:
                    trace.exits.append((visit, out, "delivered"))
                    trace.delivered.append((here, out))
                    trace.packets.append(sent)
        return trace

    def _through_vnf(self, dpid: int, port: int, pkt: dict, trace: Trace) -> list[tuple]:
        trace.visits.append((dpid, port))
        trace.visit_packets.append(pkt)
        vnf, side = self.arms[(dpid, port)]
        out = vnf.rewrite(dict(pkt), side) if vnf.rewrite else pkt
        if out is None:
            return []
        other = vnf.egress if side == "ingress" else vnf.ingress
        return [(dpid, other, sent) for sent in (out if isinstance(out, list) else [out])]

    def _pipeline(self, dpid: int, pkt: dict, trace: Trace) -> list[tuple[int, dict]]:
        """Tables in order; metadata starts at zero in every switch."""
        return self._tables(dpid, {**pkt, "metadata": 0}, trace, 0)

    def _tables(self, dpid: int, pkt: dict, trace: Trace, table: int | None
                ) -> list[tuple[int, dict]]:
        outs = []
        switch = self.rules[dpid]
        while table is not None:
            candidates = [r for r in switch.flows.values() if r.table == table and _matches(r, pkt)]
            if not candidates:
                return outs
            rule = max(candidates, key=lambda r: r.priority)
            trace.matched.append((self._visit, rule))
            if rule.meter is not None:
                trace.meters.append((dpid, rule.meter))
            outs += self._actions(switch, rule.actions, pkt, trace, dpid)
            if rule.write_metadata is not None:
                value, mask = rule.write_metadata
                pkt["metadata"] = (pkt["metadata"] & ~mask) | (value & mask)
            table = rule.goto
        return outs

    def _actions(self, switch: SwitchRules, actions, pkt, trace, dpid) -> list[tuple[int, dict]]:
        """Apply-actions in order; each output takes the packet as it is at that point."""
        outs = []
        for action in actions:
            if action[0] == "output":
                outs.append((action[1], {k: v for k, v in pkt.items() if k not in PER_SWITCH}))
            elif action[0] == "push_vlan":
                pkt["vlan_vid"] = pkt["vlan_vid"] or VLAN_PRESENT
            elif action[0] == "pop_vlan":
                pkt["vlan_vid"] = 0
            elif action[0] == "controller":
                trace.to_controller.append(dpid)
            elif action[0] == "set_field":
                pkt[action[1]] = action[2]
                trace.set_fields.append((dpid, action[1], action[2]))
            elif action[0] == "move":
                pkt[action[2]] = pkt[action[1]]
            elif action[0] == "resubmit":  # the nested tables change the packet in place
                outs += self._tables(dpid, pkt, trace, action[1])
            elif action[0] == "group":
                outs += self._group(switch, switch.groups[action[1]], pkt, trace, dpid)
        return outs

    def _bucket_live(self, switch: SwitchRules, bucket, dpid: int) -> bool:
        if bucket.watch_port is not None and not self.live(dpid, bucket.watch_port):
            return False
        if bucket.watch_group is not None:
            group = switch.groups[bucket.watch_group]
            return any(self._bucket_live(switch, b, dpid) for b in group.buckets)
        return True

    def _group(self, switch: SwitchRules, group: Group, pkt, trace, dpid
               ) -> list[tuple[int, dict]]:
        live = [b for b in group.buckets if self._bucket_live(switch, b, dpid)]
        if not live:
            return []
        if group.type == "ff":
            chosen = [live[0]]
        elif group.type == "select" and not self.every_bucket:
            key = zlib.crc32(f"{pkt.get('eth_src')}{pkt.get('flow', 0)}".encode())
            chosen = [live[key % len(live)]]
        else:
            chosen = live
        trace.buckets.append((self._visit, group.group_id,
                              tuple(group.buckets.index(b) for b in chosen)))
        outs = []
        for bucket in chosen:
            outs += self._actions(switch, bucket.actions, dict(pkt), trace, dpid)
        return outs
