"""Flow rules, groups and meters as plain values.

The compiler produces these, the OpenFlow edge (sdn.southbound.codec) turns them into messages and
back, so "what the switch holds" and "what we want" compare with `==`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Action = tuple[Any, ...]
"""('output', port) | ('controller', max_len) | ('group', gid) | ('set_field', name, value)
| ('push_vlan', ethertype) | ('pop_vlan',) | ('set_queue', qid)
| ('move', src field, dst field, bits): copy a field's low bits (Nicira reg_move, OVS)
| ('resubmit', table): run the packet as it is through `table` now, then go on (Nicira)"""

MatchItems = tuple[tuple[str, Any], ...]


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
    """An OpenFlow 1.3 meter with one band: packets beyond `rate` kbit/s (1 kbit = 1000
    bit) are dropped, after a burst of `burst` kbit; with `pktps`, packets/s and packets."""

    dpid: int
    meter_id: int
    rate: int
    burst: int
    band: str = "drop"  # what a switch holds that we would not install reads back otherwise
    pktps: bool = False


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


@dataclass(frozen=True, eq=False)
class RulesDelta:
    """Two desired states of one switch that differ at most in these flows' keys (groups
    and meters anywhere): a switch known to hold `since` needs only those keys compared to
    be brought to `now`."""

    since: SwitchRules
    now: SwitchRules
    flow_keys: frozenset[tuple[int, int, MatchItems]]


def group_id(type_: str, buckets: tuple[Bucket, ...]) -> int:
    """A group id derived from the group's content, so equal groups are shared within a
    switch and ids survive a controller restart (collisions: the caller probes upward)."""
    return (zlib.crc32(repr((type_, buckets)).encode()) & 0x7FFFFFF0) | 1


RuleKey = tuple[int, int, MatchItems]
