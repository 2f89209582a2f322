"""Drift between what a switch holds and what the controller wants, by policy object."""

from __future__ import annotations

import copy

from sdn.compile.desired import desired_rules
from sdn.model.cookies import COOKIE_ROUTE, cookie
from sdn.model.pipeline import TABLE_NEXT_HOP
from sdn.model.rules import FlowRule
from sdn.policy.load import load_policy
from sdn.reconcile.drift import cookie_names, describe, drift
from testing.flowsim import snapshot_from_graph

POLICY = """version: 1
classes:
  - {name: voice, match: {proto: udp, dst_port: 5060}, priority: high}
"""


def wanted():
    import networkx as nx

    snapshot = snapshot_from_graph(nx.path_graph([1, 2, 3]))
    policy = load_policy(POLICY)
    names = cookie_names(((h.mac, h.ips) for h in snapshot.hosts),
                         [ip for h in snapshot.hosts for ip in h.ips], policy.object_ids(), ())
    return desired_rules(policy, snapshot), snapshot, names


def test_in_sync_is_no_drift():
    rules, _, names = wanted()
    assert len(drift(rules[2], copy.deepcopy(rules[2]), names)) == 0


def test_missing_extra_and_changed_rules_name_their_objects():
    rules, snapshot, names = wanted()
    installed = copy.deepcopy(rules[2])
    host = snapshot.hosts[0]
    route = next(r for r in installed.flows.values() if r.cookie == cookie(COOKIE_ROUTE, host.mac))
    del installed.flows[route.key]
    voice = next(r for r in installed.flows.values() if describe(r.cookie, names) == "class voice")
    installed.flows[voice.key] = FlowRule(**{**voice.__dict__, "actions": ()})
    stranger = FlowRule(2, 0, 4242, (("eth_type", 0x0800),), (("output", 1),), cookie=0xabc)
    installed.add_flow(stranger)
    group = next(iter(installed.groups))
    del installed.groups[group]

    found = drift(rules[2], installed, names)
    assert found.missing[0] == (f"flow table={route.table} priority={route.priority} "
                                + ",".join(f"{k}={v}" for k, v in route.match),
                                f"route to {host.mac} ({host.ips[0]})")
    assert found.changed == [(found.changed[0][0], "class voice")]
    assert found.extra == [("flow table=0 priority=4242 eth_type=2048",
                            "unknown object 0x0000000000000abc")]
    assert (f"group {group}", "routing groups") in found.missing
    assert len(found) == 4
    json = found.to_json()
    assert json["extra"][0]["object"].startswith("unknown object")


def test_kinds_are_named_when_the_object_is_not_known():
    assert describe(cookie(COOKIE_ROUTE, "02:00:00:00:00:99"), {}).startswith("route 0x03")


def test_a_missing_next_hop_is_named_as_one():
    rules, _, names = wanted()
    installed = copy.deepcopy(rules[2])
    exit_rule = next(r for r in installed.flows.values() if r.table == TABLE_NEXT_HOP)
    del installed.flows[exit_rule.key]
    found = drift(rules[2], installed, names)
    assert [obj for _, obj in found.missing] == ["route next hops (exits and U-turns)"]
