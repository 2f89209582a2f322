"""The desired state and its history: every applied policy is a numbered revision.

SQLite (one file, ``state.db``, WAL journal) because it is atomic, survives crashes and
may be opened by several processes at once: revision numbers are allocated inside an
``IMMEDIATE`` transaction, so two writers can never get the same number. Each operation
opens its own short-lived connection, so a store is safe to share between threads too.

An apply is two-phase: its revision is recorded *pending* before anything is sent to a
switch and *confirmed* once every switch has; history shows confirmed revisions only. A
pending revision found at start belongs to an apply that never finished.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdn.policy.canonical import canonical_json, policy_objects
from sdn.policy.load import load_policy
from sdn.policy.schema import Policy

DB_NAME = "state.db"
_KIND_ORDER = ("routing", "topology", "host", "class", "vnf", "chain")
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    rev        INTEGER PRIMARY KEY,
    created    TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    summary    TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    canonical  TEXT    NOT NULL,
    restored_from INTEGER REFERENCES revisions(rev),
    state      TEXT    NOT NULL DEFAULT 'applied'
)
"""
PENDING, APPLIED = "pending", "applied"


class StoreError(RuntimeError):
    """The revision store cannot be read or written (disk full, file removed)."""


class RevisionNotFound(LookupError):
    """Asked for a revision number the store does not hold."""


@dataclass(frozen=True)
class Revision:
    """One stored policy version, as applied."""

    rev: int
    created: str  # UTC, ISO 8601
    author: str
    summary: str
    source: str  # the policy text as the operator wrote it
    canonical: dict[str, Any]
    restored_from: int | None = None  # set on revisions made by a rollback

    def policy(self) -> Policy:
        """Parse the stored source again (without live-network checks)."""
        return load_policy(self.source, f"rev{self.rev}")

    def to_json(self) -> dict[str, Any]:
        """Metadata for listings (REST, ``sdnctl policy history``), without the bodies."""
        return {
            "rev": self.rev,
            "created": self.created,
            "author": self.author,
            "summary": self.summary,
            "restored_from": self.restored_from,
        }


def _use_wal(db: sqlite3.Connection, attempts: int = 200) -> None:
    """Switch to WAL. SQLite answers "locked" at once, without its busy timeout, while
    another process is creating or switching the same file: retry for up to ~10 s."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class RevisionStore(ABC):
    """What every revision store does, on top of six storage operations (`_insert`,
    `confirm`, `abandon`, `pending`, `get`, `history`): SQLite here, etcd in a cluster."""

    @abstractmethod
    def _insert(self, source: str, canonical: Mapping[str, Any], author: str, summary: str,
                restored_from: int | None = None, state: str = APPLIED) -> Revision:
        """Store a revision under the next number."""

    @abstractmethod
    def confirm(self, rev: int) -> None:
        """Every switch holds pending revision ``rev``: it becomes current."""

    @abstractmethod
    def abandon(self, rev: int) -> None:
        """Pending revision ``rev`` was not applied: forget it."""

    @abstractmethod
    def pending(self) -> list[int]:
        """Revisions whose apply never finished (the controller stopped in between)."""

    @abstractmethod
    def get(self, rev: int) -> Revision:
        """Applied revision ``rev`` (RevisionNotFound if there is none)."""

    @abstractmethod
    def history(self, limit: int = 50) -> list[Revision]:
        """The latest ``limit`` applied revisions, newest first."""

    def commit(self, text: str, policy: Policy, author: str, summary: str) -> Revision:
        """Store an applied policy as the next revision and return it."""
        return self._insert(text, policy.canonical(), author, summary)

    def begin(self, text: str, policy: Policy, author: str, summary: str) -> Revision:
        """Record a policy about to be applied, as the next revision, pending."""
        return self._insert(text, policy.canonical(), author, summary, state=PENDING)

    def begin_rollback(self, rev: int, author: str) -> Revision:
        """Record a rollback to ``rev`` about to be applied, pending."""
        target = self.get(rev)
        current = self.current()
        change = summarize_canonical(current.canonical if current else None, target.canonical)
        return self._insert(target.source, target.canonical, author,
                            f"rollback to r{rev}: {change}", rev, state=PENDING)

    def current(self) -> Revision | None:
        """The latest revision, or None before the first commit."""
        revisions = self.history(limit=1)
        return revisions[0] if revisions else None

    def rollback(self, rev: int, author: str) -> Revision:
        """Make ``rev``'s content current again, as a new revision (history only grows)."""
        pending = self.begin_rollback(rev, author)
        self.confirm(pending.rev)
        return pending


class PolicyStore(RevisionStore):
    """Revisions of the desired policy in ``<state_dir>/state.db``."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / DB_NAME
        with self._connect(create=True) as db:
            _use_wal(db)
            db.execute(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(revisions)")}
            if "state" not in columns:  # a version-1 store: every revision was applied
                db.execute(f"ALTER TABLE revisions ADD COLUMN state TEXT NOT NULL "
                           f"DEFAULT '{APPLIED}'")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; SQLite's errors (disk full, I/O, a removed file) become
        StoreError, with the file named."""
        if not create and not self.path.exists():
            raise StoreError(f"{self.path} has disappeared; restart the controller to "
                             "start a new history")
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE to write).
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=10000")
            yield db
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        finally:
            db.close()

    def _insert(
        self,
        source: str,
        canonical: Mapping[str, Any],
        author: str,
        summary: str,
        restored_from: int | None = None,
        state: str = APPLIED,
    ) -> Revision:
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                (rev,) = db.execute("SELECT COALESCE(MAX(rev), 0) + 1 FROM revisions").fetchone()
                db.execute(
                    "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rev,
                        created,
                        author,
                        summary,
                        source,
                        canonical_json(canonical),
                        restored_from,
                        state,
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Revision(rev, created, author, summary, source, dict(canonical), restored_from)

    def confirm(self, rev: int) -> None:
        """Every switch holds pending revision ``rev``: it becomes current."""
        with self._connect() as db:
            done = db.execute("UPDATE revisions SET state = ? WHERE rev = ? AND state = ?",
                              (APPLIED, rev, PENDING)).rowcount
        if not done:
            raise StoreError(f"revision {rev} is not pending")

    def abandon(self, rev: int) -> None:
        """Pending revision ``rev`` was not applied: forget it."""
        with self._connect() as db:
            db.execute("DELETE FROM revisions WHERE rev = ? AND state = ?", (rev, PENDING))

    def pending(self) -> list[int]:
        """Revisions whose apply never finished (the controller stopped in between)."""
        with self._connect() as db:
            rows = db.execute("SELECT rev FROM revisions WHERE state = ? ORDER BY rev",
                              (PENDING,)).fetchall()
        return [row["rev"] for row in rows]

    def get(self, rev: int) -> Revision:
        with self._connect() as db:
            row = db.execute("SELECT * FROM revisions WHERE rev = ? AND state = ?",
                             (rev, APPLIED)).fetchone()
        if row is None:
            raise RevisionNotFound(f"no revision {rev}")
        return _revision(row)

    def history(self, limit: int = 50) -> list[Revision]:
        """The latest ``limit`` revisions, newest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM revisions WHERE state = ? ORDER BY rev DESC LIMIT ?",
                (APPLIED, limit),
            ).fetchall()
        return [_revision(row) for row in rows]


def _revision(row: sqlite3.Row) -> Revision:
    return Revision(
        rev=row["rev"],
        created=row["created"],
        author=row["author"],
        summary=row["summary"],
        source=row["source"],
        canonical=json.loads(row["canonical"]),
        restored_from=row["restored_from"],
    )


def summarize(old: Policy | None, new: Policy) -> str:
    """A one-line change summary such as ``+class voice, ~vnf fw, -chain web``."""
    return summarize_canonical(old.canonical() if old else None, new.canonical())


def summarize_canonical(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """:func:`summarize` on canonical dicts (what the store keeps)."""
    before = policy_objects(old) if old is not None else {}
    after = policy_objects(new)
    changes = []
    keys = [*after, *(k for k in before if k not in after)]
    for key in sorted(keys, key=lambda k: _KIND_ORDER.index(k.split(":")[0])):
        label = key.replace(":", " ", 1)
        if key not in before:
            changes.append(f"+{label}")
        elif key not in after:
            changes.append(f"-{label}")
        elif before[key] != after[key]:
            changes.append(f"~{label}")
    if old is not None:
        # List order is precedence, so reordering is a change even if no object changed.
        for section, kind in (("classes", "class"), ("chains", "chain")):
            kept = {c["name"] for c in old[section]} & {c["name"] for c in new[section]}
            if [c["name"] for c in old[section] if c["name"] in kept] != [
                c["name"] for c in new[section] if c["name"] in kept
            ]:
                changes.append(f"~{kind} order")
    return ", ".join(changes) or "no change"
