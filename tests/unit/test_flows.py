"""Rule values, content-addressed groups, and the minimal diff between two states."""

from __future__ import annotations

from sdn.model.cookies import COOKIE_ROUTE, cookie, cookie_kind
from sdn.model.rules import Bucket, FlowRule, Group, SwitchRules, group_id, match
from sdn.reconcile.diff import diff


def rule(port: int, mac: str = "00:00:00:00:00:01", ck: int = 7) -> FlowRule:
    return FlowRule(1, 2, 200, match(eth_dst=mac), (("output", port),), cookie=ck)


def state(*rules: FlowRule) -> SwitchRules:
    s = SwitchRules()
    s.add_flows(rules)
    return s


def test_identical_states_give_no_change():
    a = state(rule(1), rule(2, "00:00:00:00:00:02"))
    b = state(rule(1), rule(2, "00:00:00:00:00:02"))
    changes = diff(a, b)
    assert not changes and len(changes) == 0


def test_changed_actions_or_cookie_replace_only_that_rule():
    current = state(rule(1), rule(2, "00:00:00:00:00:02"))
    desired = state(rule(3), rule(2, "00:00:00:00:00:02", ck=8))
    changes = diff(current, desired)
    assert [r.actions for r in changes.flow_adds] == [(("output", 3),), (("output", 2),)]
    assert changes.flow_deletes == []


def test_removed_rules_are_deleted_after_adds():
    changes = diff(state(rule(1), rule(2, "00:00:00:00:00:02")), state(rule(1)))
    assert changes.flow_adds == [] and [r.match for r in changes.flow_deletes] == [
        match(eth_dst="00:00:00:00:00:02")]


def test_group_ids_follow_content():
    buckets = (Bucket((("output", 1),), watch_port=1), Bucket((("output", 2),), watch_port=2))
    g1 = group_id("ff", buckets)
    assert group_id("ff", tuple(list(buckets))) == g1  # same content, same id, every run
    assert group_id("ff", buckets[::-1]) != g1
    assert group_id("select", buckets) != g1
    assert g1 & 0xF == 1 and g1 < 0x80000000  # room to probe upward on a collision


def test_group_changes_are_ordered_around_flows():
    buckets = (Bucket((("output", 1),), weight=1),)
    gid = group_id("select", buckets)
    current = SwitchRules(groups={gid: Group(1, gid, "select", buckets)})
    changes = diff(current, SwitchRules())
    assert [g.group_id for g in changes.group_deletes] == [gid]
    changes = diff(SwitchRules(), current)
    assert [g.group_id for g in changes.group_adds] == [gid]


def test_cookie_names_kind_and_object():
    value = cookie(COOKIE_ROUTE, "00:00:00:00:00:01")
    assert cookie_kind(value) == COOKIE_ROUTE
    assert value == cookie(COOKIE_ROUTE, "00:00:00:00:00:01")
    assert value != cookie(COOKIE_ROUTE, "00:00:00:00:00:02")


def test_adds_fill_later_tables_first_and_deletes_empty_earlier_tables_first():
    """A packet must never be sent on to a table whose rule for it is not there yet."""
    def two_stage(mac: str) -> list[FlowRule]:
        return [FlowRule(1, 2, 200, match(eth_dst=mac), goto=3, cookie=1),
                FlowRule(1, 3, 200, match(metadata=7), (("output", 1),), cookie=1)]

    changes = diff(SwitchRules(), state(*two_stage("00:00:00:00:00:05")))
    assert [r.table for r in changes.flow_adds] == [3, 2]
    changes = diff(state(*two_stage("00:00:00:00:00:05")), SwitchRules())
    assert [r.table for r in changes.flow_deletes] == [2, 3]
