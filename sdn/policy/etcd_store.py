"""Policy revisions in etcd, for a cluster of controllers: the same history from every
instance, and writes only from the leader.

Key layout (also used by the election, `sdn.controller.cluster`):

    /sdn/leader               the leader's record, bound to its lease
    /sdn/members/<node>       each controller's record, bound to its lease
    /sdn/network              the links and hosts the leader knows (standbys follow it)
    /sdn/revision-counter     the last revision number handed out
    /sdn/revisions/<rev>      one revision (zero-padded, so keys sort by number)

Every write is one transaction that also compares the leader record's create revision
with the writer's generation id: a controller deposed while it was applying cannot add,
confirm or drop a revision. Reads are linearizable (etcd's default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from common.etcd import (
    Entry,
    Etcd,
    StoreUnavailable,
    created_at,
    delete,
    modified_at,
    put,
)
from sdn.policy.store import (
    APPLIED,
    PENDING,
    Revision,
    RevisionNotFound,
    RevisionStore,
    StoreError,
)

LEADER_KEY = "/sdn/leader"
MEMBERS_PREFIX = "/sdn/members/"
NETWORK_KEY = "/sdn/network"
COUNTER_KEY = "/sdn/revision-counter"
REVISIONS_PREFIX = "/sdn/revisions/"
INSERT_ATTEMPTS = 20


def revision_key(rev: int) -> str:
    return f"{REVISIONS_PREFIX}{rev:012d}"


class EtcdPolicyStore(RevisionStore):
    """Revisions under /sdn/revisions/; `generation()` is the caller's current generation
    id as leader (0 when it is not leading: it may then only read)."""

    def __init__(self, etcd: Etcd, generation: Callable[[], int]) -> None:
        self.etcd = etcd
        self.generation = generation

    def _fence(self) -> dict[str, Any]:
        generation = self.generation()
        if not generation:
            raise StoreError("this controller is not the cluster's leader; send the request "
                             "to the leader (sdnctl cluster status names it)")
        return created_at(LEADER_KEY, generation)

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        fence = self._fence()
        try:
            if self.etcd.txn([fence, *compare], success):
                return True
            leader = self.etcd.get(LEADER_KEY)
        except StoreUnavailable as exc:
            raise StoreError(str(exc)) from exc
        if leader is None or leader.create_revision != fence["create_revision"]:
            raise StoreError("this controller lost the leadership while writing; "
                             "nothing was changed")
        return False

    def _read(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except StoreUnavailable as exc:
            raise StoreError(str(exc)) from exc

    def _insert(self, source: str, canonical: Mapping[str, Any], author: str, summary: str,
                restored_from: int | None = None, state: str = APPLIED) -> Revision:
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for _attempt in range(INSERT_ATTEMPTS):
            counter = self._read(lambda: self.etcd.get(COUNTER_KEY))
            rev = (int(counter.value) if counter else 0) + 1
            record = {"rev": rev, "created": created, "author": author, "summary": summary,
                      "source": source, "canonical": dict(canonical),
                      "restored_from": restored_from, "state": state}
            if self._txn([modified_at(COUNTER_KEY, counter.mod_revision if counter else 0)],
                         [put(COUNTER_KEY, str(rev).encode()), put(revision_key(rev), record)]):
                return Revision(rev, created, author, summary, source, dict(canonical),
                                restored_from)
        raise StoreError(f"no revision number could be allocated in {INSERT_ATTEMPTS} tries")

    def _entry(self, rev: int) -> Entry | None:
        return self._read(lambda: self.etcd.get(revision_key(rev)))

    def confirm(self, rev: int) -> None:
        entry = self._entry(rev)
        record = entry.json() if entry else None
        if record is None or record["state"] != PENDING:
            raise StoreError(f"revision {rev} is not pending")
        record["state"] = APPLIED
        if not self._txn([modified_at(entry.key, entry.mod_revision)],
                         [put(entry.key, record)]):
            raise StoreError(f"revision {rev} changed while it was confirmed")

    def abandon(self, rev: int) -> None:
        entry = self._entry(rev)
        if entry is not None and entry.json()["state"] == PENDING:
            self._txn([modified_at(entry.key, entry.mod_revision)], [delete(entry.key)])

    def _records(self) -> list[dict[str, Any]]:
        entries = self._read(lambda: self.etcd.get_prefix(REVISIONS_PREFIX))
        return [entry.json() for entry in entries]

    def pending(self) -> list[int]:
        return sorted(r["rev"] for r in self._records() if r["state"] == PENDING)

    def get(self, rev: int) -> Revision:
        entry = self._entry(rev)
        record = entry.json() if entry else None
        if record is None or record["state"] != APPLIED:
            raise RevisionNotFound(f"no revision {rev}")
        return _revision(record)

    def history(self, limit: int = 50) -> list[Revision]:
        applied = [r for r in self._records() if r["state"] == APPLIED]
        applied.sort(key=lambda r: r["rev"], reverse=True)
        return [_revision(r) for r in applied[:limit]]


def _revision(record: dict[str, Any]) -> Revision:
    return Revision(rev=record["rev"], created=record["created"], author=record["author"],
                    summary=record["summary"], source=record["source"],
                    canonical=record["canonical"], restored_from=record["restored_from"])

