"""Flow rules and groups as plain values, and the diff between two sets of them.

The compiler produces these, the OpenFlow edge (sdn.southbound.codec) turns them into messages and
back, so "what the switch holds" and "what we want" compare with `==`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The pipeline. Table 0 traps control traffic and learns hosts, table 1 applies policy
# (traffic classes), table 2 steers service chains (sdn.compile.chains), table 3 forwards: floods,
# delivers to local hosts, and maps every other destination host to its switch (written to
# metadata); table 4 routes to that switch. Rules thus scale with hosts + switches, not
# hosts x paths. Table-1 rules go on to TABLE_CHAIN, never straight to TABLE_FORWARD:
# that would let classified traffic skip its service chain.
TABLE_INGRESS = 0
TABLE_POLICY = 1
TABLE_CHAIN = 2
TABLE_FORWARD = 3
TABLE_ROUTE = 4

# Between tables 3 and 4 the metadata carries the destination switch's dpid.
METADATA_DPID_MASK = (1 << 64) - 1
# In tables 0-2 this bit says the packet did not come from a host: it entered over an
# inter-switch link or from a VNF's port. Edge-only policy (traffic classes, chain
# classifiers) matches it clear.
METADATA_FROM_LINK = 1 << 63
# In tables 0-2, set (with METADATA_FROM_LINK) on packets from a VNF's port (sdn.compile.chains).
METADATA_FROM_VNF = 1 << 62

# Top byte of a cookie says which kind of object a rule came from; the rest names it.
COOKIE_CONTROL = 0x01
COOKIE_FLOOD = 0x02
COOKIE_ROUTE = 0x03
COOKIE_LEARN = 0x04
COOKIE_CLASS = 0x05
COOKIE_CHAIN = 0x06
COOKIE_ARP = 0x07
_COOKIE_BODY = (1 << 56) - 1
# Below COOKIE_CHAIN's kind byte, a second byte says what a chain rule does.
CHAIN_TAG = 0x01  # carries a steering tag to a VNF arm (shared by all chains)
CHAIN_PORT = 0x02  # table 0 at a VNF's arm
CHAIN_STEER = 0x03  # classifies or re-classifies one chain's traffic
CHAIN_BYPASS = 0x04  # an offloaded (settled) flow skipping VNFs; its stats are the flow's
CHAIN_HEALTH = 0x05  # a load balancer's health-check answers, back to the replica that asked
_CHAIN_SUB_SHIFT = 48

# OpenFlow drops a packet output to the port it came in on unless that port is named
# this way; fast-failover U-turns need it.
IN_PORT = 0xFFFFFFF8

Action = tuple[Any, ...]
"""('output', port) | ('controller', max_len) | ('group', gid) | ('set_field', name, value)
| ('push_vlan', ethertype) | ('pop_vlan',) | ('set_queue', qid)
| ('move', src field, dst field, bits): copy a field's low bits (Nicira reg_move, OVS)
| ('resubmit', table): run the packet as it is through `table` now, then go on (Nicira)"""

MatchItems = tuple[tuple[str, Any], ...]


def cookie(kind: int, name: str | int) -> int:
    """A stable cookie for an object: its kind in the top byte, a hash of its name below."""
    body = name if isinstance(name, int) else zlib.crc32(name.encode())
    return (kind << 56) | (body & _COOKIE_BODY)


def cookie_kind(value: int) -> int:
    return value >> 56


def chain_cookie(sub_kind: int, name: str) -> int:
    """A COOKIE_CHAIN cookie: the sub-kind in the second byte, a hash of the name below."""
    return cookie(COOKIE_CHAIN, sub_kind << _CHAIN_SUB_SHIFT | zlib.crc32(name.encode()))


def chain_sub_kind(value: int) -> int | None:
    """The CHAIN_* sub-kind of a chain rule's cookie; None for other rules."""
    if cookie_kind(value) != COOKIE_CHAIN:
        return None
    return value >> _CHAIN_SUB_SHIFT & 0xFF


def chain_cookie_mask(sub_kind: int) -> tuple[int, int]:
    """(cookie, mask) that select every chain rule of one CHAIN_* sub-kind, as a flow-stats
    request or a delete filters them."""
    value = cookie(COOKIE_CHAIN, sub_kind << _CHAIN_SUB_SHIFT)
    return value, (1 << 64) - (1 << _CHAIN_SUB_SHIFT)


def match(**fields: Any) -> MatchItems:
    """Canonical, hashable form of OpenFlow match fields (sorted by name)."""
    return tuple(sorted(fields.items()))


@dataclass(frozen=True, order=True)
class FlowRule:
    dpid: int
    table: int
    priority: int
    match: MatchItems
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = 0
    meter: int | None = None
    write_metadata: tuple[int, int] | None = None  # (value, mask)
    # Seconds without a matching packet before the switch removes the rule and says so
    # (OFPFF_SEND_FLOW_REM); 0: permanent. Offloaded flows' bypasses use it.
    idle_timeout: int = 0

    @property
    def key(self) -> tuple[int, int, MatchItems]:
        """What identifies a rule inside one switch (OpenFlow's strict match)."""
        return (self.table, self.priority, self.match)


@dataclass(frozen=True, order=True)
class Bucket:
    actions: tuple[Action, ...]
    watch_port: int | None = None
    watch_group: int | None = None
    weight: int = 0


@dataclass(frozen=True, order=True)
class Group:
    dpid: int
    group_id: int
    type: str  # 'all' | 'select' | 'indirect' | 'ff'
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True, order=True)
class Meter:
    """An OpenFlow 1.3 meter with one band: packets beyond `rate_kbps` (1 kbit = 1000 bit)
    are dropped, after a burst of `burst_kbits`."""

    dpid: int
    meter_id: int
    rate_kbps: int
    burst_kbits: int
    band: str = "drop"  # what a switch holds that we would not install reads back otherwise


@dataclass
class SwitchRules:
    """Everything one switch should hold (or holds)."""

    flows: dict[tuple[int, int, MatchItems], FlowRule] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, Meter] = field(default_factory=dict)

    def add_flow(self, rule: FlowRule) -> None:
        self.flows[rule.key] = rule

    def add_flows(self, rules: Iterable[FlowRule]) -> None:
        for rule in rules:
            self.add_flow(rule)


class GroupTable:
    """Hands out group ids derived from a group's content, so equal groups are shared
    within a switch and ids survive a controller restart."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        self._ids: dict[tuple[str, tuple[Bucket, ...]], int] = {}
        self._used: set[int] = set()

    def get(self, type_: str, buckets: Iterable[Bucket]) -> int:
        content = (type_, tuple(buckets))
        gid = self._ids.get(content)
        if gid is not None:
            return gid
        gid = (zlib.crc32(repr(content).encode()) & 0x7FFFFFF0) | 1
        while gid in self._used:
            gid += 1
        self._ids[content] = gid
        self._used.add(gid)
        return gid

    def groups(self) -> dict[int, Group]:
        return {
            gid: Group(self.dpid, gid, type_, buckets)
            for (type_, buckets), gid in self._ids.items()
        }


@dataclass
class Changes:
    """The messages that turn one switch's state into another, in a safe order: meters
    and groups before the flows that use them, flows gone before the groups and meters
    they used (deleting a meter also deletes every flow still using it)."""

    meter_adds: list[Meter] = field(default_factory=list)
    meter_mods: list[Meter] = field(default_factory=list)
    group_adds: list[Group] = field(default_factory=list)
    group_mods: list[Group] = field(default_factory=list)
    flow_adds: list[FlowRule] = field(default_factory=list)
    flow_deletes: list[FlowRule] = field(default_factory=list)
    group_deletes: list[Group] = field(default_factory=list)
    meter_deletes: list[Meter] = field(default_factory=list)

    def __len__(self) -> int:
        return self.flow_mods + self.group_messages + self.meter_messages

    @property
    def flow_mods(self) -> int:
        return len(self.flow_adds) + len(self.flow_deletes)

    @property
    def group_messages(self) -> int:
        return len(self.group_adds) + len(self.group_mods) + len(self.group_deletes)

    @property
    def meter_messages(self) -> int:
        return len(self.meter_adds) + len(self.meter_mods) + len(self.meter_deletes)


def _rule_order(item: tuple[tuple[int, int, MatchItems], FlowRule]) -> tuple[int, int, str]:
    """Later tables first: a rule that sends packets on to a table is only installed after
    the rules waiting for them there (and removed before them, see `diff`). Also a total
    order: one field may be exact (int) in one match and masked (tuple) in another, which
    Python cannot compare."""
    table, priority, items = item[0]
    return -table, priority, repr(items)


def diff(current: SwitchRules, desired: SwitchRules) -> Changes:
    """Minimal change from `current` to `desired`; an identical pair gives no change."""
    changes = Changes()
    for mid, meter in sorted(desired.meters.items()):
        held_meter = current.meters.get(mid)
        if held_meter is None:
            changes.meter_adds.append(meter)
        elif held_meter != meter:
            changes.meter_mods.append(meter)
    for gid, group in sorted(desired.groups.items()):
        held = current.groups.get(gid)
        if held is None:
            changes.group_adds.append(group)
        elif held != group:
            changes.group_mods.append(group)
    for key, rule in sorted(desired.flows.items(), key=_rule_order):
        if current.flows.get(key) != rule:
            changes.flow_adds.append(rule)
    changes.flow_deletes = [r for k, r in sorted(current.flows.items(), key=_rule_order,
                                                 reverse=True) if k not in desired.flows]
    changes.group_deletes = [
        g for gid, g in sorted(current.groups.items()) if gid not in desired.groups
    ]
    changes.meter_deletes = [
        m for mid, m in sorted(current.meters.items()) if mid not in desired.meters
    ]
    return changes


def diff_all(
    current: Mapping[int, SwitchRules], desired: Mapping[int, SwitchRules]
) -> dict[int, Changes]:
    return {
        dpid: diff(current.get(dpid, SwitchRules()), rules)
        for dpid, rules in desired.items()
    }
