"""How a route leaves a switch: its select (ECMP) and fast-failover groups, with ids
derived from their content, and its next hop in table 5, each shared and
reference-counted per switch."""

from __future__ import annotations

import functools

from sdn.model.cookies import COOKIE_ROUTE, cookie
from sdn.model.pipeline import IN_PORT, PRIO_ROUTE, TABLE_NEXT_HOP
from sdn.model.rules import (
    Bucket,
    FlowRule,
    Group,
    RuleKey,
    group_id,
    match,
)

PRIO_UTURN = 210
NEXT_HOP_COOKIE = cookie(COOKIE_ROUTE, "next hops")

GroupSpec = tuple
"""What a route group does, in plain values (cheap to hash and compare):
('select', ports) | ('ff', ports) | ('ff-group', select gid, backup port)
| ('ff-back', primary ports, backup port): the primaries, else back out the in_port."""


@functools.lru_cache(maxsize=1 << 16)
def _group_content(spec: GroupSpec) -> tuple[str, tuple[Bucket, ...], int]:
    """The group's type and buckets, and the id its content hashes to (cached: repairs
    keep re-creating the same few groups)."""
    type_, buckets = _group_buckets(spec)
    return type_, buckets, group_id(type_, buckets)


def _group_buckets(spec: GroupSpec) -> tuple[str, tuple[Bucket, ...]]:
    kind = spec[0]
    if kind == "select":
        return "select", tuple(Bucket((("output", p),), watch_port=p, weight=1)
                               for p in spec[1])
    if kind == "ff-group":
        _, select, backup = spec
        return "ff", (Bucket((("group", select),), watch_group=select),
                      Bucket((("output", backup),), watch_port=backup))
    outs = tuple(Bucket((("output", p),), watch_port=p) for p in spec[1])
    if kind == "ff-back":
        return "ff", (*outs, Bucket((("output", IN_PORT),), watch_port=spec[2]))
    return "ff", outs


class GroupPool:
    """One switch's route groups, shared and reference-counted, with ids derived from
    their content (`group_id`), so ids survive recompiles and restarts."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        self.groups: dict[int, Group] = {}
        self._ids: dict[GroupSpec, int] = {}
        self._specs: dict[int, GroupSpec] = {}
        self._refs: dict[int, int] = {}

    def acquire(self, spec: GroupSpec) -> int:
        gid = self._ids.get(spec)
        if gid is None:
            type_, buckets, gid = _group_content(spec)
            while gid in self.groups:
                gid += 1
            self._ids[spec], self._specs[gid], self._refs[gid] = gid, spec, 0
            self.groups[gid] = Group(self.dpid, gid, type_, buckets)
        self._refs[gid] += 1
        return gid

    def release(self, gid: int) -> None:
        self._refs[gid] -= 1
        if not self._refs[gid]:
            del self.groups[gid], self._refs[gid], self._ids[self._specs.pop(gid)]


class CellGroups:
    """Group allocation for one route cell, remembering what it took."""

    def __init__(self, pool: GroupPool) -> None:
        self.pool = pool
        self.taken: list[int] = []

    def get(self, spec: GroupSpec) -> int:
        gid = self.pool.acquire(spec)
        self.taken.append(gid)
        return gid


def forward_actions(groups: CellGroups, primary: tuple[int, ...], backup: int | None) -> tuple:
    """Actions toward a destination: one port, an ECMP select group, either guarded by a
    fast-failover group when there is a backup."""
    if len(primary) > 1:
        select = groups.get(("select", primary))
        if backup is None:
            return (("group", select),)
        return (("group", groups.get(("ff-group", select, backup))),)
    if backup is None:
        return (("output", primary[0]),)
    return (("group", groups.get(("ff", (primary[0], backup)))),)


NextHop = tuple[tuple[int, ...], int | None]
"""(primary ports, backup port)"""


class NextHops:
    """One switch's table 5: per next hop (primary ports and backup) its exit, and the
    U-turns for packets a neighbour hands back: one that came in on a primary port goes on
    by the other primaries and the backup; one that came in on the backup goes out of the
    primaries, else back where it came from. A packet only ever arrives on a next hop's
    primary port as a hand-back (a primary neighbour is nearer the destination and never
    routes through us), and on its backup port from a neighbour that routes through us or
    hands back, so the U-turns depend on nothing but the next hop, and every destination
    that shares one shares its rules. Its id, which table 4 writes to metadata, is the id
    of its forwarding group (unique per switch)."""

    def __init__(self, pool: GroupPool) -> None:
        self.pool = pool
        self._ids: dict[NextHop, int] = {}
        self._entries: dict[int, tuple[NextHop, tuple[RuleKey, ...], tuple[int, ...]]] = {}
        self._refs: dict[int, int] = {}

    def acquire(self, hop: NextHop) -> tuple[int, list[FlowRule]]:
        """The next hop's id, and the rules to add when it is new here."""
        hop_id = self._ids.get(hop)
        if hop_id is not None:
            self._refs[hop_id] += 1
            return hop_id, []
        groups = CellGroups(self.pool)
        ports, backup = hop
        exit_actions = forward_actions(groups, ports, backup)
        hop_id = exit_actions[0][1]
        dpid = self.pool.dpid
        rules = [FlowRule(dpid, TABLE_NEXT_HOP, PRIO_ROUTE, match(metadata=hop_id),
                          exit_actions, cookie=NEXT_HOP_COOKIE)]
        for port in ports:
            others = tuple(p for p in ports if p != port) + (() if backup is None else (backup,))
            if others:
                rules.append(self._uturn(hop_id, port, groups.get(("ff", others))))
        if backup is not None:
            rules.append(self._uturn(hop_id, backup, groups.get(("ff-back", ports, backup))))
        self._ids[hop] = hop_id
        self._entries[hop_id] = (hop, tuple(r.key for r in rules), tuple(groups.taken))
        self._refs[hop_id] = 1
        return hop_id, rules

    def release(self, hop_id: int) -> tuple[RuleKey, ...]:
        """The keys of the rules to delete when nothing uses the next hop any more."""
        self._refs[hop_id] -= 1
        if self._refs[hop_id]:
            return ()
        hop, keys, gids = self._entries.pop(hop_id)
        del self._refs[hop_id], self._ids[hop]
        for gid in gids:
            self.pool.release(gid)
        return keys

    def _uturn(self, hop_id: int, in_port: int, gid: int) -> FlowRule:
        return FlowRule(self.pool.dpid, TABLE_NEXT_HOP, PRIO_UTURN,
                        match(metadata=hop_id, in_port=in_port), (("group", gid),),
                        cookie=NEXT_HOP_COOKIE)
