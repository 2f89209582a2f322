"""Split a network-wide rule change into rounds that never drop or loop a packet. Pure.

A policy apply sends one round to every switch it touches, waits for all their barrier
replies, then sends the next (`switches.push`; topology syncs send the rounds back to
back, see `SdnController.sync`). Whatever subset of a round's switches has taken it, each
packet meets either old or new rules that still take it to its destination once.

Rules that forward toward one target make a *family*: a destination switch (its table-4
routes and the table-3 rules mapping its hosts to it) or a chain's steering tag (its tag
rules, `sdn.compile.chains`). A switch's rules of one family change together. A route
names its next hop in table 5, whose exit and U-turns depend on nothing else and never
change: a new next hop's rules go in early, an old one's go in the delete phase, so a
route switches to its new exit and U-turns in one FlowMod. Per family, the new
rules form a DAG toward the target; a switch changes in round

    f(n) = max(f(m) for m in its new next hops, default -1) + (1 if n changes else 0)

so when it starts using its new next hops, every changed switch below it on the new paths
already has. Until a packet meets such an up-to-date switch it follows the old rules, whose
old distance only shrinks; afterwards the new ones, whose new distance only shrinks: no
loop, no black hole, for routes, ECMP sets and tags alike. That is the consistent-update
order of the per-destination next-hop DAG (ordered FIB updates, as in Francois and
Bonaventure's loop-free convergence), without per-packet version tags.

The whole change, as phases (empty rounds are dropped):

  early      meters and groups added (unused until a flow names them); rules outside any
             family: classes, pipeline, VNF arm rules, next hops; flooding narrowed to the ports
             both the old and the new spanning tree flood on (a tree that changes half-way
             would otherwise storm: two half-trees can close a loop)
  1 + f      family changes by f; flooding widened to the new tree (round 1)
  steer      chain classifiers and bypasses, once every tag they use leads to its arm
  unsteer    chain classifiers and bypasses that go
  delete     everything else that goes: routes and tags of switches no longer on any
             path, pipeline rules, classes, flooding of ports gone; then (in the same
             message order, so in the same round) groups and meters nothing names any more

Not covered: a group whose id now names other buckets (ids are derived from content, so
only after an id collision) changes every family using it at once; it goes with the
first change at that switch that uses it. A chain's classifier and return rules change
in one round, so a packet classified by the old chain may return by the new one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from sdn.model.cookies import (
    CHAIN_BYPASS,
    CHAIN_HEALTH,
    CHAIN_STEER,
    CHAIN_TAG,
    COOKIE_FLOOD,
    COOKIE_ROUTE,
    chain_sub_kind,
    cookie_kind,
)
from sdn.model.pipeline import PRIO_ROUTE, TABLE_FORWARD, TABLE_NEXT_HOP, TABLE_ROUTE
from sdn.model.rules import Action, FlowRule, Group, RuleKey, SwitchRules, match
from sdn.model.topology import Link
from sdn.reconcile.diff import Changes, diff

Family = tuple
"""('route', destination dpid) | ('tag', the tag rule's key)"""

Peers = Mapping[tuple[int, int], int]
"""(dpid, port) -> the switch at the other end of that port's link"""

Rounds = list[dict[int, Changes]]

# Chain rules that send traffic toward VNF arms: added once the tags they use are in place.
STEERING = (CHAIN_STEER, CHAIN_BYPASS, CHAIN_HEALTH)

EARLY, FLOOD_WIDE, FIRST_FAMILY = 0, 1, 1


def plan_rounds(held: Mapping[int, SwitchRules], desired: Mapping[int, SwitchRules],
                links: Iterable[Link], ordered: bool = True,
                in_step: frozenset[int] = frozenset(),
                flow_keys: Mapping[int, Collection[RuleKey]] | None = None) -> Rounds:
    """The changes taking every switch in `desired` from `held` to `desired`, in rounds.
    `links` are the links of the new topology (where the new rules send packets). Switches
    `in_step` are known to hold their desired rules already: they get nothing and are not
    diffed, but where their rules lead still orders the others'. A switch in `flow_keys`
    is known to differ from its desired rules at most in those flows (`RulesDelta`). Not
    `ordered`, every switch gets its whole difference in one round, as before ordering
    existed (bench.update_loss measures what ordering saves)."""
    empty, keyed = SwitchRules(), flow_keys or {}
    changes = {dpid: diff(held.get(dpid, empty), rules, keyed.get(dpid))
               for dpid, rules in desired.items() if dpid not in in_step}
    if not ordered:
        return [{dpid: c for dpid, c in changes.items() if c}] if any(changes.values()) else []
    return _plan(held, desired, changes, links)


def _plan(held: Mapping[int, SwitchRules], desired: Mapping[int, SwitchRules],
          changes: Mapping[int, Changes], links: Iterable[Link]) -> Rounds:
    peers: dict[tuple[int, int], int] = {}
    for lk in links:
        peers[(lk.a, lk.a_port)] = lk.b
        peers[(lk.b, lk.b_port)] = lk.a
    empty = SwitchRules()
    plans = {dpid: _SwitchPlan(dpid, held.get(dpid, empty), desired[dpid], change)
             for dpid, change in changes.items()}
    levels = _family_levels(plans, desired, peers)
    last_family = max((f for per in levels.values() for f in per.values()), default=-1)
    phases = _Phases(last_family)
    for dpid, plan in plans.items():
        plan.place(levels.get(dpid, {}), phases)
    return _assemble(plans, phases.count)


def all_at_once(held: Mapping[int, SwitchRules], desired: Mapping[int, SwitchRules]) -> Rounds:
    """One round with each switch's whole difference: what sending without order does."""
    return plan_rounds(held, desired, (), ordered=False)


def apply_changes(rules: SwitchRules, changes: Changes) -> None:
    """`rules` (a switch's state) as it is once the switch has taken `changes`."""
    for meter in (*changes.meter_adds, *changes.meter_mods):
        rules.meters[meter.meter_id] = meter
    for group in (*changes.group_adds, *changes.group_mods):
        rules.groups[group.group_id] = group
    for rule in changes.flow_adds:
        rules.flows[rule.key] = rule
    for rule in changes.flow_deletes:
        rules.flows.pop(rule.key, None)
    for group in changes.group_deletes:
        rules.groups.pop(group.group_id, None)
    for meter in changes.meter_deletes:
        rules.meters.pop(meter.meter_id, None)


def family_of(rule: FlowRule) -> Family | None:
    """The target a rule forwards toward, for rules that take part in multi-hop forwarding."""
    sub = chain_sub_kind(rule.cookie)
    if sub == CHAIN_TAG:
        vid = dict(rule.match).get("vlan_vid")
        return ("tag", rule.key) if isinstance(vid, int) else None  # not the foreign drop
    if cookie_kind(rule.cookie) != COOKIE_ROUTE:
        return None
    if rule.table == TABLE_ROUTE:
        return ("route", dict(rule.match)["metadata"])
    if rule.table == TABLE_FORWARD:
        if rule.goto == TABLE_ROUTE and rule.write_metadata is not None:
            return ("route", rule.write_metadata[0])
        return ("route", rule.dpid)  # a host on this switch
    return None


def _main_key(family: Family) -> RuleKey:
    """The rule that says where a switch sends the family's packets (the same everywhere)."""
    if family[0] == "route":
        return (TABLE_ROUTE, PRIO_ROUTE, match(metadata=family[1]))
    return family[1]


def _exit_actions(rule: FlowRule, rules: SwitchRules) -> tuple[Action, ...]:
    """A rule's actions, or, for a route that goes on to its next hop, that next hop's."""
    if rule.goto != TABLE_NEXT_HOP or rule.write_metadata is None:
        return rule.actions
    hop_id = rule.write_metadata[0]
    exit_rule = rules.flows.get((TABLE_NEXT_HOP, PRIO_ROUTE, match(metadata=hop_id)))
    return () if exit_rule is None else exit_rule.actions


def _out_ports(actions: Iterable[Action], groups: Mapping[int, Group]) -> Iterator[int]:
    """Ports a packet leaves by when nothing has failed: fast-failover groups by their first
    bucket, select and all groups by every bucket."""
    for action in actions:
        if action[0] == "output":
            yield action[1]
        elif action[0] == "group" and action[1] in groups:
            group = groups[action[1]]
            buckets = group.buckets[:1] if group.type == "ff" else group.buckets
            for bucket in buckets:
                yield from _out_ports(bucket.actions, groups)


def _groups_named(actions: Iterable[Action], groups: Mapping[int, Group]) -> Iterator[int]:
    for action in actions:
        if action[0] == "group":
            yield action[1]
            if action[1] in groups:
                for bucket in groups[action[1]].buckets:
                    if bucket.watch_group is not None:
                        yield bucket.watch_group
                    yield from _groups_named(bucket.actions, groups)


class _Phases:
    """Round numbers of the phases that follow the families' (see the module docstring)."""

    def __init__(self, last_family: int) -> None:
        self.steer = FIRST_FAMILY + last_family + 1
        self.unsteer = self.steer + 1
        self.delete = self.steer + 2
        self.last = self.delete  # a switch deletes flows before the groups they name
        self.count = self.last + 1


@dataclass
class _SwitchPlan:
    """One switch's difference, each message tagged with the round it goes in."""

    dpid: int
    held: SwitchRules
    desired: SwitchRules
    changes: Changes
    placed: list[tuple[int, str, object]] = field(default_factory=list)
    add_families: list[Family | None] = field(init=False)  # per flow add
    delete_families: list[Family | None] = field(init=False)  # per flow delete

    def __post_init__(self) -> None:
        self.add_families = [family_of(r) for r in self.changes.flow_adds]
        self.delete_families = [family_of(r) for r in self.changes.flow_deletes]

    def changed_families(self) -> dict[Family, bool]:
        """Families this switch changes -> whether it only stops forwarding them."""
        adds = dict.fromkeys(self.delete_families, False)
        adds.update(dict.fromkeys(self.add_families, True))
        adds.pop(None, None)
        return {family: not added and _main_key(family) not in self.desired.flows
                and family != ("route", self.dpid)
                for family, added in adds.items()}

    def place(self, levels: Mapping[Family, int], phases: _Phases) -> None:
        changes, put = self.changes, self.placed.append
        if not changes:
            return
        for meter in changes.meter_adds:
            put((EARLY, "meter_adds", meter))
        for meter in changes.meter_mods:
            put((EARLY, "meter_mods", meter))
        for group in changes.group_adds:
            put((EARLY, "group_adds", group))
        flooding_placed = self._place_flooding()
        first_use: dict[int, int] = {}
        for rule, family in zip(changes.flow_adds, self.add_families, strict=True):
            sub = chain_sub_kind(rule.cookie)
            if family is not None:
                when = FIRST_FAMILY + levels[family]
            elif sub in STEERING:
                when = phases.steer
            elif flooding_placed and cookie_kind(rule.cookie) == COOKIE_FLOOD:
                continue
            else:
                when = EARLY
            put((when, "flow_adds", rule))
            if changes.group_mods:
                for gid in _groups_named(rule.actions, self.desired.groups):
                    first_use[gid] = min(first_use.get(gid, when), when)
        for group in changes.group_mods:
            put((first_use.get(group.group_id, EARLY), "group_mods", group))
        for rule, family in zip(changes.flow_deletes, self.delete_families, strict=True):
            if family is not None and family in levels:
                when = FIRST_FAMILY + levels[family]
            elif chain_sub_kind(rule.cookie) in STEERING:
                when = phases.unsteer
            else:
                when = phases.delete
            put((when, "flow_deletes", rule))
        for group in changes.group_deletes:
            put((phases.last, "group_deletes", group))
        for meter in changes.meter_deletes:
            put((phases.last, "meter_deletes", meter))

    def _place_flooding(self) -> bool:
        """When the flood ports change, first cut the flood rules down to the ports that
        flood both before and after, then widen them to the new ones: any mix of old and
        narrowed (or narrowed and new) switches floods along one tree only. Says whether
        it placed the flood rules (otherwise they go as any other rule)."""
        changed = (*self.changes.flow_adds, *self.changes.flow_deletes)
        if not any(cookie_kind(rule.cookie) == COOKIE_FLOOD for rule in changed):
            return False
        old = {k: r for k, r in self.held.flows.items() if cookie_kind(r.cookie) == COOKIE_FLOOD}
        new = {k: r for k, r in self.desired.flows.items()
               if cookie_kind(r.cookie) == COOKIE_FLOOD}
        if not old or _flood_ports(new.values()) == _flood_ports(old.values()):
            return False
        both = _flood_ports(old.values()) & _flood_ports(new.values())
        for key, rule in new.items():
            port = dict(rule.match).get("in_port")
            outs = tuple(("output", p) for p in sorted(both - {port})) if port in both else ()
            narrowed = replace(rule, actions=outs)
            if old.get(key) != narrowed:
                self.placed.append((EARLY, "flow_adds", narrowed))
            if narrowed != rule:
                self.placed.append((FLOOD_WIDE, "flow_adds", rule))
        return True


def _flood_ports(rules: Iterable[FlowRule]) -> set[int]:
    """Ports a switch floods on: those whose broadcasts go somewhere, and where they go."""
    ports: set[int] = set()
    for rule in rules:
        outs = {a[1] for a in rule.actions if a[0] == "output"}
        if outs:
            ports |= outs | {dict(rule.match)["in_port"]}
    return ports


def _family_levels(plans: Mapping[int, _SwitchPlan], desired: Mapping[int, SwitchRules],
                   peers: Peers) -> dict[int, dict[Family, int]]:
    """dpid -> family -> round of that switch's change (see the module docstring); switches
    that only stop forwarding a family are left out (they go in the delete phase)."""
    changed: dict[Family, set[int]] = {}
    for dpid, plan in plans.items():
        for family, stops in plan.changed_families().items():
            if not stops:
                changed.setdefault(family, set()).add(dpid)
    exits = _Exits(desired, peers)
    levels: dict[int, dict[Family, int]] = {}
    for family, nodes in changed.items():
        level = _levels(family, nodes, exits)
        for dpid in nodes:
            levels.setdefault(dpid, {})[family] = level[dpid]
    return levels


class _Exits:
    """The switches a switch's rule sends packets to next, shared by every family of a
    plan: a switch's thousand routes leave by a handful of next hops."""

    def __init__(self, desired: Mapping[int, SwitchRules], peers: Peers) -> None:
        self._desired, self._peers = desired, peers
        self._known: dict[tuple[int, object], list[int]] = {}

    def next_switches(self, dpid: int, key: RuleKey) -> list[int]:
        rules = self._desired.get(dpid)
        rule = rules.flows.get(key) if rules is not None else None
        if rule is None:
            return []
        way = rule.write_metadata[0] if rule.goto == TABLE_NEXT_HOP and rule.write_metadata \
            else rule.actions
        hops = self._known.get((dpid, way))
        if hops is None:
            peers = self._peers
            hops = self._known[(dpid, way)] = list(
                {peers[(dpid, p)] for p in _out_ports(_exit_actions(rule, rules), rules.groups)
                 if (dpid, p) in peers})
        return hops


def _levels(family: Family, changed: set[int], exits: _Exits) -> dict[int, int]:
    """f(n) for the changed switches of one family, by a depth-first walk down the new
    next-hop DAG (a cycle, which the compiler never makes, is cut where it closes)."""
    key = _main_key(family)
    level: dict[int, int] = {}
    for start in changed:
        if start in level:
            continue
        # node, its next hops left to look at, the highest level below it so far
        stack = [[start, iter(exits.next_switches(start, key)), -1]]
        on_stack = {start}
        while stack:
            frame = stack[-1]
            for nxt in frame[1]:
                below = level.get(nxt)
                if below is None:
                    if nxt not in on_stack:
                        on_stack.add(nxt)
                        stack.append([nxt, iter(exits.next_switches(nxt, key)), -1])
                        break
                elif below > frame[2]:
                    frame[2] = below
            else:
                stack.pop()
                node = frame[0]
                on_stack.discard(node)
                done = level[node] = frame[2] + (1 if node in changed else 0)
                if stack and done > stack[-1][2]:
                    stack[-1][2] = done
    return level


def _assemble(plans: Mapping[int, _SwitchPlan], count: int) -> Rounds:
    rounds: list[dict[int, Changes]] = [{} for _ in range(count)]
    for dpid, plan in plans.items():
        for when, kind, item in plan.placed:
            changes = rounds[when].setdefault(dpid, Changes())
            getattr(changes, kind).append(item)
    for per_switch in rounds:
        for changes in per_switch.values():
            changes.group_adds = _referenced_first(changes.group_adds)
            changes.group_deletes = _referenced_first(changes.group_deletes)[::-1]
    return [per_switch for per_switch in rounds if per_switch]


def _referenced_first(groups: list[Group]) -> list[Group]:
    """Groups that other groups of the list name come before those (a switch refuses a
    group naming one it does not have)."""
    by_id = {g.group_id: g for g in groups}
    done: set[int] = set()
    ordered: list[Group] = []

    def visit(group: Group) -> None:
        if group.group_id in done:
            return
        done.add(group.group_id)
        for gid in _groups_named((a for b in group.buckets for a in b.actions), {}):
            if gid in by_id:
                visit(by_id[gid])
        for bucket in group.buckets:
            if bucket.watch_group in by_id:
                visit(by_id[bucket.watch_group])
        ordered.append(group)

    for group in groups:
        visit(group)
    return ordered
