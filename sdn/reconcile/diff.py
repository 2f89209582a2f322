"""The minimal difference between what a switch holds and what it should hold. Pure."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sdn.model.rules import FlowRule, Group, Meter, RuleKey, SwitchRules


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


def _rule_order(rule: FlowRule) -> tuple[int, int]:
    """Later tables first: a rule that sends packets on to a table is only installed after
    the rules waiting for them there (and removed before them, see `diff`). Rules of one
    table and priority keep the order of their dict (the sort is stable), which is
    deterministic and cheap; ordering them by match would need their repr (one field may
    be exact in one match and masked in another, which Python cannot compare)."""
    return -rule.table, rule.priority


def diff(current: SwitchRules, desired: SwitchRules,
         flow_keys: Collection[RuleKey] | None = None) -> Changes:
    """Minimal change from `current` to `desired`; an identical pair gives no change.
    Only what differs is sorted: a switch of 1,000 rules gaining one costs a pass over
    its rules, not a sort of them; an unchanged switch costs a dict comparison in C (the
    compiler hands back the very rule objects a switch already holds). Given `flow_keys`,
    the flows are known to differ nowhere else (`RulesDelta`) and only those are compared."""
    changes = Changes()
    if flow_keys is not None:
        _diff_tables(current, desired, changes)
        _diff_flows_at(current.flows, desired.flows, flow_keys, changes)
        return changes
    if (current.flows == desired.flows and current.groups == desired.groups
            and current.meters == desired.meters):
        return changes
    _diff_tables(current, desired, changes)
    held_flows, wanted_flows = current.flows, desired.flows
    adds = [rule for key, rule in wanted_flows.items()
            if (held := held_flows.get(key)) is not rule and held != rule]
    deletes = [rule for key, rule in held_flows.items() if key not in wanted_flows]
    changes.flow_adds = sorted(adds, key=_rule_order)
    changes.flow_deletes = sorted(deletes, key=_rule_order, reverse=True)
    return changes


def _diff_flows_at(held_flows: dict[RuleKey, FlowRule], wanted_flows: dict[RuleKey, FlowRule],
                   keys: Collection[RuleKey], changes: Changes) -> None:
    adds, deletes = [], []
    for key in keys:
        held, wanted = held_flows.get(key), wanted_flows.get(key)
        if wanted is None:
            if held is not None:
                deletes.append(held)
        elif held is not wanted and held != wanted:
            adds.append(wanted)
    changes.flow_adds = sorted(adds, key=_rule_order)
    changes.flow_deletes = sorted(deletes, key=_rule_order, reverse=True)


def _diff_tables(current: SwitchRules, desired: SwitchRules, changes: Changes) -> None:
    """Meters and groups."""
    for mid, meter in sorted(desired.meters.items()):
        held_meter = current.meters.get(mid)
        if held_meter is None:
            changes.meter_adds.append(meter)
        elif held_meter != meter:
            changes.meter_mods.append(meter)
    for gid, group in sorted((gid, g) for gid, g in desired.groups.items()
                             if current.groups.get(gid) != g):
        if gid in current.groups:
            changes.group_mods.append(group)
        else:
            changes.group_adds.append(group)
    changes.group_deletes = [
        g for gid, g in sorted(current.groups.items()) if gid not in desired.groups
    ]
    changes.meter_deletes = [
        m for mid, m in sorted(current.meters.items()) if mid not in desired.meters
    ]
