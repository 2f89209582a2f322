"""Policy revisions in a real etcd (one member on loopback, no root needed): the same
history from every instance, and writes only under the current leader's generation."""

from __future__ import annotations

import pytest

from common.etcd import Etcd, EtcdTls, StoreUnavailable, delete, parse_endpoints
from sdn.controller.cluster import EtcdElection
from sdn.policy.etcd_store import LEADER_KEY, EtcdPolicyStore
from sdn.policy.load import load_policy
from sdn.policy.store import RevisionNotFound, StoreError
from testing.etcd import EtcdCluster

TEXT = "version: 1\nrouting: {metric: hops, ecmp: false, protection: none}\n"
OTHER = "version: 1\nrouting: {metric: hops, ecmp: true, protection: none}\n"


def elect(client: Etcd, node: str = "a") -> int:
    election = EtcdElection(client)
    lease, _ttl = election.grant(10)
    generation = election.try_lead(lease, node, {"api": ""})
    assert generation
    return generation


def test_revisions_are_shared_and_fenced(etcd):
    generation = elect(etcd)
    leader = EtcdPolicyStore(etcd, lambda: generation)
    reader = EtcdPolicyStore(Etcd.from_url(_url(etcd)), lambda: 0)

    first = leader.begin(TEXT, load_policy(TEXT, "p.yaml"), "alice", "+routing")
    assert leader.pending() == [first.rev] and reader.history() == []
    leader.confirm(first.rev)
    second = leader.commit(OTHER, load_policy(OTHER, "p.yaml"), "bob", "~routing")
    assert [r.rev for r in reader.history()] == [second.rev, first.rev]
    assert reader.get(first.rev).source == TEXT
    assert reader.current().author == "bob"

    back = leader.rollback(first.rev, "carol")
    assert back.restored_from == first.rev and reader.current().source == TEXT
    assert [r.to_json() for r in reader.history()] == [r.to_json() for r in leader.history()]

    with pytest.raises(StoreError, match="not the cluster's leader"):
        reader.begin(TEXT, load_policy(TEXT, "p.yaml"), "mallory", "x")
    with pytest.raises(RevisionNotFound):
        reader.get(99)


def test_a_deposed_leader_cannot_write(etcd):
    old = elect(etcd, "a")
    etcd.txn([], [delete(LEADER_KEY)])  # a's lease ran out
    elect(etcd, "b")
    deposed = EtcdPolicyStore(etcd, lambda: old)
    with pytest.raises(StoreError, match="lost the leadership"):
        deposed.begin(TEXT, load_policy(TEXT, "p.yaml"), "a", "x")
    assert deposed.pending() == [] and deposed.history() == []


def test_pending_is_abandoned_not_listed(etcd):
    generation = elect(etcd)
    store = EtcdPolicyStore(etcd, lambda: generation)
    pending = store.begin(TEXT, load_policy(TEXT, "p.yaml"), "a", "x")
    store.abandon(pending.rev)
    assert store.pending() == [] and store.history() == []
    with pytest.raises(StoreError, match="not pending"):
        store.confirm(pending.rev)


def test_unreachable_store_is_a_clear_error():
    nowhere = Etcd([("127.0.0.1", 9)], timeout=0.5)
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:9\b"):
        nowhere.get("/sdn/leader")
    with pytest.raises(StoreError, match="etcd did not answer"):
        EtcdPolicyStore(nowhere, lambda: 0).history()


@pytest.mark.parametrize("url", ["http://h:1", "etcd://", "etcd://host", "etcd://h:x"])
def test_bad_store_urls_are_refused(url):
    with pytest.raises(ValueError):
        parse_endpoints(url)


def _url(client: Etcd) -> str:
    return "etcd://" + ",".join(f"{h}:{p}" for h, p in client.endpoints)


def test_tls_to_etcd_with_client_certificates():
    with EtcdCluster(1, tls=True) as cluster:
        member = cluster.members[0]
        trusted = Etcd([("127.0.0.1", member.client_port)], tls=cluster.tls)
        trusted.put("/sdn/probe", {"ok": True})
        assert trusted.get("/sdn/probe").json() == {"ok": True}
        anonymous = Etcd([("127.0.0.1", member.client_port)], timeout=2,
                         tls=EtcdTls(cluster.tls.ca))
        with pytest.raises(StoreUnavailable):
            anonymous.get("/sdn/probe")
        plain = Etcd([("127.0.0.1", member.client_port)], timeout=2)
        with pytest.raises(StoreUnavailable):
            plain.get("/sdn/probe")
