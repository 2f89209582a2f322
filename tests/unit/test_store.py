"""The revision store: numbering, history, rollback, summaries, two processes at once."""

import multiprocessing
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from sdn.policy.load import load_policy
from sdn.policy.store import (
    DB_NAME,
    PolicyStore,
    RevisionNotFound,
    StoreError,
    summarize,
    summarize_canonical,
)

V1 = """\
version: 1
classes:
  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}
vnfs:
  fw: {type: firewall, switch: s1}
chains:
  - {name: web, match: {proto: tcp, dst_port: 80}, through: [fw]}
"""
V2 = """\
version: 1
classes:
  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}
  - {name: bulk, match: {proto: tcp, dst_port: 5201}, priority: low}
vnfs:
  fw: {type: firewall, switch: s1, default: allow}
"""


def commit(store: PolicyStore, text: str, author: str = "alice"):
    policy = load_policy(text)
    current = store.current()
    return store.commit(
        text, policy, author, summarize(current.policy() if current else None, policy)
    )


def test_empty_store(tmp_path):
    store = PolicyStore(tmp_path / "state")
    assert store.current() is None
    assert store.history() == []
    assert (tmp_path / "state" / DB_NAME).exists()
    with pytest.raises(RevisionNotFound):
        store.get(1)


def test_commits_are_numbered_and_stored(tmp_path):
    store = PolicyStore(tmp_path)
    r1 = commit(store, V1)
    r2 = commit(store, V2, author="bob")
    assert (r1.rev, r2.rev) == (1, 2)
    assert store.current() == r2
    assert store.get(1) == r1
    got = store.get(2)
    assert (got.author, got.source, got.restored_from) == ("bob", V2, None)
    assert got.canonical == load_policy(V2).canonical()
    assert got.summary == "+class bulk, ~vnf fw, -chain web"
    assert r1.summary.startswith("+routing, +topology, +class voice")


def test_created_is_utc_iso(tmp_path):
    r = commit(PolicyStore(tmp_path), V1)
    created = datetime.fromisoformat(r.created)
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)


def test_history_newest_first_with_limit(tmp_path):
    store = PolicyStore(tmp_path)
    for text in (V1, V2, V1, V2):
        commit(store, text)
    assert [r.rev for r in store.history()] == [4, 3, 2, 1]
    assert [r.rev for r in store.history(limit=2)] == [4, 3]
    assert store.history()[0].to_json().keys() == {
        "rev",
        "created",
        "author",
        "summary",
        "restored_from",
    }


def test_rollback_makes_a_new_revision_with_old_content(tmp_path):
    store = PolicyStore(tmp_path)
    commit(store, V1)
    commit(store, V2)
    r3 = store.rollback(1, author="carol")
    assert r3.rev == 3
    assert store.current() == r3
    assert (r3.source, r3.canonical) == (V1, store.get(1).canonical)
    assert (r3.author, r3.restored_from) == ("carol", 1)
    assert r3.summary == "rollback to r1: -class bulk, ~vnf fw, +chain web"
    assert r3.policy() == load_policy(V1)
    assert [r.rev for r in store.history()] == [3, 2, 1]


def test_rollback_to_missing_revision(tmp_path):
    store = PolicyStore(tmp_path)
    commit(store, V1)
    with pytest.raises(RevisionNotFound, match="no revision 7"):
        store.rollback(7, author="carol")
    assert [r.rev for r in store.history()] == [1]


def test_reopening_keeps_everything(tmp_path):
    commit(PolicyStore(tmp_path), V1)
    again = PolicyStore(tmp_path)
    assert again.current().rev == 1
    assert commit(again, V2).rev == 2


def test_wal_journal(tmp_path):
    PolicyStore(tmp_path)
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_two_instances_see_each_other(tmp_path):
    a, b = PolicyStore(tmp_path), PolicyStore(tmp_path)
    commit(a, V1)
    assert b.current().rev == 1
    assert commit(b, V2).rev == 2
    assert a.current().rev == 2


def _writer(state_dir: str, text: str, n: int) -> None:
    store = PolicyStore(state_dir)
    policy = load_policy(text)
    for _ in range(n):
        store.commit(text, policy, "proc", "concurrent")


def test_two_processes_never_share_a_revision_number(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), t, 20)) for t in (V1, V2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    revs = [r.rev for r in PolicyStore(tmp_path).history(limit=100)]
    assert revs == list(range(40, 0, -1))


def test_summarize():
    v1, v2 = load_policy(V1), load_policy(V2)
    assert summarize(v1, v1) == "no change"
    assert summarize(v1, v2) == "+class bulk, ~vnf fw, -chain web"
    assert summarize(v2, v1) == "-class bulk, ~vnf fw, +chain web"
    first = summarize(None, v1)
    assert first == "+routing, +topology, +class voice, +vnf fw, +chain web"


def test_summarize_reports_precedence_changes():
    a = load_policy(V2)
    swapped = V2.replace(
        "  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}\n", ""
    ).replace(
        "priority: low}\n",
        "priority: low}\n  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}\n",
    )
    b = load_policy(swapped)
    assert [c.name for c in b.classes] == ["bulk", "voice"]
    assert summarize(a, b) == "~class order"


def test_summarize_canonical_matches_summarize():
    v1, v2 = load_policy(V1), load_policy(V2)
    assert summarize_canonical(v1.canonical(), v2.canonical()) == summarize(v1, v2)


def test_pending_revisions_stay_out_of_history_until_confirmed(tmp_path):
    store = PolicyStore(tmp_path)
    pending = store.begin("version: 1\n", load_policy("version: 1\n"), "alice", "first")
    assert store.current() is None and store.history() == [] and store.pending() == [1]
    with pytest.raises(RevisionNotFound):
        store.get(pending.rev)
    store.confirm(pending.rev)
    assert store.current().rev == 1 and store.pending() == []
    with pytest.raises(StoreError):
        store.confirm(pending.rev)  # confirmed once


def test_a_version_1_store_is_read_as_all_applied(tmp_path):
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("CREATE TABLE revisions (rev INTEGER PRIMARY KEY, created TEXT NOT NULL, "
                   "author TEXT NOT NULL, summary TEXT NOT NULL, source TEXT NOT NULL, "
                   "canonical TEXT NOT NULL, restored_from INTEGER)")
        db.execute("INSERT INTO revisions VALUES (1, '2026-01-01T00:00:00', 'a', 's', "
                   "'version: 1\n', '{}', NULL)")
    store = PolicyStore(tmp_path)
    assert [r.rev for r in store.history()] == [1]
    assert store.commit("version: 1\n", load_policy("version: 1\n"), "b", "x").rev == 2


def test_a_removed_store_file_is_a_clear_error(tmp_path):
    store = PolicyStore(tmp_path)
    store.path.unlink()
    with pytest.raises(StoreError, match="disappeared"):
        store.history()
