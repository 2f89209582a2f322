"""Route groups: what a route's select (ECMP) and fast-failover groups hold, with ids
derived from their content, shared and reference-counted per switch."""

from __future__ import annotations

import functools

from sdn.model.pipeline import (
    IN_PORT,
)
from sdn.model.rules import (
    Bucket,
    Group,
    group_id,
)

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
