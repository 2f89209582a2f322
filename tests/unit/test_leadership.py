"""The election and its fencing (sdn.controller.leadership) against a fake store with a
fake clock: delays, partitions, pauses; and a standby following the leader's network."""

from __future__ import annotations

import random

import pytest

from common.etcd import StoreUnavailable
from sdn.controller.cluster import follow_network, network_record
from sdn.controller.leadership import SAFETY_MARGIN, LeaderRecord, Leadership
from sdn.model.topology import Topology

TTL = 2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """etcd's semantics as far as the election uses them: leases end `ttl` seconds after
    the store last saw them renewed; the leader record goes with its lease; every
    creation takes a new, larger revision. `delay` seconds pass before each request
    reaches the store; nodes in `cut` cannot reach it at all."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.leases: dict[int, float] = {}  # id -> ends at
        self.owner: dict[int, str] = {}
        self.record: tuple[str, int, int] | None = None  # node, lease, create revision
        self.revision = 1
        self.delay = 0.0
        self.cut: set[str] = set()
        self.caller = ""

    def _arrive(self) -> None:
        if self.caller in self.cut:
            raise StoreUnavailable(f"{self.caller} is cut off")
        self.clock.now += self.delay
        self.expire()

    def expire(self) -> None:
        for lease, ends in list(self.leases.items()):
            if ends <= self.clock.now:
                del self.leases[lease]
                if self.record and self.record[1] == lease:
                    self.record = None

    def grant(self, ttl: int) -> tuple[int, int]:
        self._arrive()
        self.revision += 1
        lease = self.revision
        self.leases[lease] = self.clock.now + ttl
        self.owner[lease] = self.caller
        return lease, ttl

    def keepalive(self, lease: int) -> int:
        self._arrive()
        if lease not in self.leases:
            return -1
        self.leases[lease] = self.clock.now + TTL
        return TTL

    def leader(self) -> LeaderRecord | None:
        self._arrive()
        if self.record is None:
            return None
        node, lease, revision = self.record
        return LeaderRecord(node, "", revision, lease)

    def try_lead(self, lease: int, node: str, info: dict) -> int | None:
        self._arrive()
        if self.record is not None or lease not in self.leases:
            return None
        self.revision += 1
        self.record = (node, lease, self.revision)
        return self.revision

    def resign(self, lease: int, generation: int) -> None:
        self._arrive()
        if self.record and self.record[2] == generation:
            self.record = None


class Node:
    """One controller's Leadership, talking to the shared store as itself."""

    def __init__(self, name: str, store: FakeStore, clock: Clock) -> None:
        self.name = name
        self.store = store
        self.changes: list[int] = []
        self.leadership = Leadership(_As(store, name), name, {"api": name}, TTL,
                                     self.changes.append, clock)

    def tick(self) -> None:
        try:
            self.leadership.tick()
        except StoreUnavailable as exc:
            self.leadership.lost_store(str(exc))

    def leading(self) -> bool:
        return self.leadership.leading()


class _As:
    """The store as seen by one node (so partitions can cut that node off)."""

    def __init__(self, store: FakeStore, name: str) -> None:
        self.store = store
        self.name = name

    def __getattr__(self, attr: str):
        method = getattr(self.store, attr)

        def call(*args):
            self.store.caller = self.name
            return method(*args)
        return call


@pytest.fixture
def world():
    clock = Clock()
    store = FakeStore(clock)
    nodes = [Node(n, store, clock) for n in ("a", "b", "c")]
    return clock, store, nodes


def test_first_tick_elects_and_others_follow(world):
    _clock, _store, (a, b, c) = world
    a.tick()
    b.tick()
    c.tick()
    assert a.leading() and not b.leading() and not c.leading()
    assert a.changes == [a.leadership.generation] and a.leadership.generation > 0
    assert b.leadership.known_leader.node == "a"
    assert b.changes == [] and c.changes == []


def test_dead_leader_is_replaced_with_a_larger_generation_only_after_its_lease(world):
    clock, _store, (a, b, _c) = world
    a.tick()
    first = a.leadership.generation
    b.tick()
    clock.now += TTL - 0.1  # a is dead: it renews no more
    b.tick()
    assert not b.leading(), "elected while the dead leader's lease still ran"
    clock.now += 0.2
    b.tick()
    assert b.leading() and b.leadership.generation > first


def test_paused_leader_stops_before_its_lease_ends_and_writes_nothing_after(world):
    clock, store, (a, b, _c) = world
    a.tick()
    clock.now += TTL - SAFETY_MARGIN  # SIGSTOP: no tick ran
    assert not a.leading()  # the first check after waking: no write goes out
    assert a.changes[-1] == 0
    store.expire()
    assert store.record is not None, "it stepped down before the store's lease ended"
    clock.now += SAFETY_MARGIN
    b.tick()
    assert b.leading()
    a.tick()  # SIGCONT: its lease has ended; it takes a new one and follows b
    assert not a.leading() and a.leadership.known_leader.node == "b"


def test_leader_cut_off_from_the_store_steps_down_and_keeps_out(world):
    clock, store, (a, b, _c) = world
    a.tick()
    b.tick()
    store.cut.add("a")
    for _ in range(int(TTL / a.leadership.interval) + 2):
        clock.now += a.leadership.interval
        a.tick()
        b.tick()
        assert not (a.leading() and b.leading())
    assert not a.leading() and b.leading()


def test_a_leader_whose_lease_outlived_a_store_outage_leads_on_with_the_same_id(world):
    """etcd electing a new raft leader stalls requests for a second or two; the lease
    survives it, so the record stays ours and nobody else can have been elected."""
    clock, store, (a, b, _c) = world
    a.tick()
    generation = a.leadership.generation
    store.cut.add("a")
    clock.now += TTL - SAFETY_MARGIN / 2
    a.tick()
    assert not a.leading()
    store.cut.clear()
    b.tick()
    assert not b.leading()
    a.tick()
    assert a.leading() and a.leadership.generation == generation
    assert a.changes == [generation, 0, generation]


def test_a_member_not_ready_to_lead_leaves_it_to_one_that_is(world):
    _clock, store, (a, b, _c) = world
    a.leadership.may_lead = lambda: False
    a.tick()
    assert not a.leading() and store.record is None
    b.tick()
    assert b.leading()


def test_a_slow_renewal_counts_from_when_it_was_sent(world):
    _clock, store, (a, _b, _c) = world
    a.tick()
    store.delay = TTL  # the renewal reaches the store only as the lease would end
    a.tick()
    assert not a.leading()


def test_a_switch_refusal_deposes_the_leader_and_frees_the_record(world):
    _clock, store, (a, b, _c) = world
    a.tick()
    a.leadership.fenced("stale generation id")
    assert not a.leading() and a.changes[-1] == 0
    assert store.record is None
    b.tick()
    assert b.leading()


def test_a_record_taken_over_in_the_store_deposes_on_the_next_tick(world):
    _clock, store, (a, _b, _c) = world
    a.tick()
    _node, lease, revision = store.record
    store.record = ("x", lease, revision + 5)
    a.tick()
    assert not a.leading()


@pytest.mark.parametrize("seed", range(20))
def test_never_two_leaders_and_never_past_the_lease(seed):
    """Random delays, partitions and pauses: whenever a node believes it leads, its
    lease is alive in the store and it holds the record."""
    rng = random.Random(seed)
    clock = Clock()
    store = FakeStore(clock)
    nodes = [Node(n, store, clock) for n in ("a", "b", "c")]
    elections = 0
    for _step in range(400):
        node = rng.choice(nodes)
        store.delay = rng.choice([0.0, 0.0, 0.05, 0.4, 1.0])
        if rng.random() < 0.05:
            store.cut ^= {node.name}
        clock.now += rng.choice([0.1, 0.3, 0.5, 1.5, 2.5])
        if rng.random() < 0.9:
            node.tick()
        store.expire()
        leaders = [n for n in nodes if n.leading()]
        assert len(leaders) <= 1
        for leader in leaders:
            assert store.record is not None and store.record[0] == leader.name
            assert store.record[2] == leader.leadership.generation
        elections = sum(1 for n in nodes for g in n.changes if g)
    assert elections >= 1


def test_a_standby_follows_the_leaders_network_where_it_sees_the_ports_up():
    leader, standby = Topology(), Topology()
    for topology in (leader, standby):
        for dpid in (1, 2, 3):
            topology.add_switch(dpid, [1, 2, 3])
    leader.add_link(1, 1, 2, 1)
    leader.add_link(2, 2, 3, 1)
    leader.learn_host("00:00:00:00:00:01", 1, 3, "10.0.0.1", trusted=True)
    standby.port_down(3, 1)  # a port status the standby saw after the record was written
    assert follow_network(standby, network_record(leader))
    assert {(lk.a, lk.b) for lk in standby.links} == {(1, 2)}
    assert standby.hosts["00:00:00:00:00:01"].ips == ("10.0.0.1",)
    assert not follow_network(standby, network_record(leader))  # nothing new

    leader.remove_link(next(iter(lk for lk in leader.links if lk.a == 1)))
    assert follow_network(standby, network_record(leader))
    assert standby.links == set()


def test_a_standby_takes_the_leaders_edge_ports_on_trust():
    """A standby reads no packet-ins, so no LLDP of its own shows which of its ports face no
    switch: elected, it would flood nowhere and learn no host until its first probing
    round. It takes the leader's word, for ports it sees up and not facing a switch."""
    clock = Clock()
    leader, standby = Topology(clock=clock), Topology(clock=clock)
    for topology in (leader, standby):
        for dpid in (1, 2):
            topology.add_switch(dpid, [1, 2, 3])
    clock.now += 1
    leader.add_link(1, 1, 2, 1)
    leader.round = 1
    for dpid in (1, 2):
        leader.hear(dpid, 1)
    assert network_record(leader)["edges"] == [[1, 2], [1, 3], [2, 2], [2, 3]]
    assert not standby.edge_ports(1)
    standby.port_down(2, 3)
    assert follow_network(standby, network_record(leader))
    assert (standby.edge_ports(1), standby.edge_ports(2)) == ([2, 3], [2])
    assert standby.learn_host("00:00:00:00:00:07", 1, 3)
    standby.port_down(1, 2)
    standby.port_up(1, 2)  # a new cable: the leader's word was about the old one
    clock.now += 1
    assert standby.edge_ports(1) == [3]
