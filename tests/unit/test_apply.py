"""Apply and rollback against the controller state, with switches that answer barriers
(testing.fakes), a real revision store, and no Open vSwitch."""

from __future__ import annotations

import pytest

from sdn.controller.apply import ApplyFailed, PolicyEngine
from sdn.model.cookies import COOKIE_CLASS, cookie_kind
from sdn.policy.load import load_policy
from sdn.policy.problems import PolicyError
from sdn.policy.store import PolicyStore, StoreError
from testing.fakes import connected_state

PLAIN = "version: 1\n"
VOICE = """version: 1
classes:
  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}
"""
BULK = """version: 1
classes:
  - {name: bulk, match: {proto: tcp, dst_port: 5001}, priority: low, max_rate: 50mbit}
"""


def class_rules(state) -> dict[int, int]:
    return {dpid: sum(cookie_kind(r.cookie) == COOKIE_CLASS for r in conn.held.flows.values())
            for dpid, conn in state.switches.items()}


@pytest.fixture
def engine(tmp_path):
    state = connected_state()
    engine = PolicyEngine(state, PolicyStore(tmp_path))
    engine.apply(PLAIN, "plain.yaml", "test")
    return engine


def test_apply_installs_records_and_reapply_sends_nothing(engine):
    plan, revision = engine.apply(VOICE, "voice.yaml", "alice")
    assert revision.rev == 2 and plan.flow_mods > 0
    counts = class_rules(engine.ctl)
    assert counts[1] == counts[2] > 0
    assert engine.ctl.policy.digest() == revision.policy().digest()
    plan, again = engine.apply(VOICE, "voice.yaml", "alice")
    assert again is None and plan.flow_mods == 0
    assert [r.rev for r in engine.store.history()] == [2, 1]


def test_a_dry_run_changes_nothing(engine):
    before = {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()}
    plan, revision = engine.apply(VOICE, "voice.yaml", "alice", dry_run=True)
    assert revision is None and plan.flow_mods > 0
    assert {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()} == before
    assert engine.store.current().rev == 1


def test_an_invalid_policy_is_rejected_whole_with_its_location(engine):
    before = {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()}
    bad = VOICE.replace("5004", "70000")
    with pytest.raises(PolicyError) as err:
        engine.apply(bad, "bad.yaml", "alice")
    assert "bad.yaml:3:" in str(err.value) and "dst_port" in str(err.value)
    assert {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()} == before
    assert engine.store.current().rev == 1


def test_a_switch_that_refuses_puts_every_switch_back(engine):
    engine.apply(VOICE, "voice.yaml", "alice")
    before = {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()}
    engine.ctl.switches[2].datapath.failing = True
    with pytest.raises(ApplyFailed) as err:
        engine.apply(BULK, "bulk.yaml", "bob")
    assert "switch 0000000000000002" in err.value.failures
    assert engine.ctl.policy.digest() == engine.store.current().policy().digest()
    engine.ctl.switches[2].datapath.failing = False
    assert {d: dict(c.held.flows) for d, c in engine.ctl.switches.items()}[1] == before[1]
    assert engine.store.current().rev == 2


def test_rollback_restores_an_old_revision_as_a_new_one(engine):
    engine.apply(VOICE, "voice.yaml", "alice")
    plan, revision = engine.rollback(1, "carol")
    assert revision.rev == 3 and plan.flow_mods > 0
    assert class_rules(engine.ctl) == {1: 0, 2: 0}
    assert engine.store.current().source == PLAIN


def held(state) -> dict:
    return {d: dict(c.held.flows) for d, c in state.switches.items()}


def test_an_exception_while_sending_restores_everything(engine, monkeypatch):
    """A rule that passes validation but cannot be encoded (an error inside the push)."""
    engine.apply(VOICE, "voice.yaml", "alice")
    before, policy = held(engine.ctl), engine.ctl.policy
    conn = engine.ctl.switches[2]
    original = conn.apply_changes
    calls = []

    def explode_once(changes):
        calls.append(changes)
        if len(calls) == 1:
            raise OverflowError("meter rate out of range")
        original(changes)

    monkeypatch.setattr(conn, "apply_changes", explode_once)
    with pytest.raises(ApplyFailed) as err:
        engine.apply(BULK, "bulk.yaml", "bob")
    assert "meter rate out of range" in str(err.value)
    assert engine.ctl.policy is policy and held(engine.ctl) == before
    assert engine.store.current().rev == 2 and engine.store.pending() == []
    assert engine.ctl.sync() == 0  # and the controller still follows the network


def test_a_store_that_cannot_write_stops_the_apply_before_anything_is_sent(engine):
    messages = {d: c.datapath.messages for d, c in engine.ctl.switches.items()}
    engine.store.path.unlink()
    with pytest.raises(ApplyFailed) as err:
        engine.apply(VOICE, "voice.yaml", "alice")
    assert "revision store" in err.value.failures
    assert {d: c.datapath.messages for d, c in engine.ctl.switches.items()} == messages
    assert class_rules(engine.ctl) == {1: 0, 2: 0}


def test_a_revision_that_cannot_be_confirmed_is_undone_on_every_switch(engine, monkeypatch):
    before, policy = held(engine.ctl), engine.ctl.policy

    def broken(rev):
        raise StoreError("disk full")

    monkeypatch.setattr(engine.store, "confirm", broken)
    with pytest.raises(ApplyFailed) as err:
        engine.apply(VOICE, "voice.yaml", "alice")
    assert err.value.failures == {"revision store": "disk full"}
    assert engine.ctl.policy is policy and held(engine.ctl) == before
    assert engine.store.pending() == [] and engine.store.current().rev == 1


def test_a_revision_left_pending_by_a_stopped_controller_is_rolled_back_at_start(tmp_path):
    store = PolicyStore(tmp_path)
    applied = store.commit(PLAIN, load_policy(PLAIN), "alice", "first")
    store.begin(VOICE, load_policy(VOICE), "bob", "interrupted")
    engine = PolicyEngine(connected_state(), PolicyStore(tmp_path))
    engine.recover()
    assert engine.store.pending() == [] and engine.store.current() == applied
    assert [r.rev for r in engine.store.history()] == [1]
