"""Flow offload bookkeeping: worker reports become settled flows once, bypasses are named by
their cookies, and their counters outlive them."""

from __future__ import annotations

from sdn.compile.chain_model import BYPASS_IDLE_TIMEOUT, SettledFlow, bypass_cookie
from sdn.compile.chains import bypasses, compile_chains
from sdn.controller.offload import OffloadTable, WorkerReport, settled_flow
from sdn.model.cookies import CHAIN_BYPASS, chain_cookie_mask, chain_sub_kind
from sdn.model.rules import match
from tests.unit.test_chains import VIP, make_policy, make_snapshot, standard_instances

FW = ("fw",)
A = [1, 6, "10.0.0.1", 40000, VIP, 80]
B = [2, 6, "10.0.0.2", 40001, VIP, 80]
FLOW_A = SettledFlow("fw", 6, "10.0.0.1", 40000, VIP, 80)
FLOW_B = SettledFlow("fw", 6, "10.0.0.2", 40001, VIP, 80)


def report(*entries, started=100.0, vnf="fw", instance="fw"):
    return WorkerReport(vnf, instance, started, tuple(entries))


def test_worker_entries_become_settled_flows_and_odd_ones_are_left_out():
    assert settled_flow("fw", A) == FLOW_A
    assert settled_flow("fw", [3, 17, "10.0.0.1", 5000, "10.0.0.5", 53]) == SettledFlow(
        "fw", 17, "10.0.0.1", 5000, "10.0.0.5", 53)
    for odd in ([3, 1, "10.0.0.1", 7, "10.0.0.5", 0],  # ICMP: no ports to match on
                [3, 6, "fe80::1", 1, "fe80::2", 80],  # IPv6: the bypass matches IPv4
                [3, 6, "10.0.0.1", 70000, VIP, 80],
                [3, 6, "10.0.0.1", "1", VIP, 80],
                [3, 6, "10.0.0.1", 1, VIP]):
        assert settled_flow("fw", odd) is None, odd


def test_each_entry_is_taken_once_by_its_seq():
    table = OffloadTable()
    assert table.update([report(A)], FW)
    assert table.flows == {FLOW_A}
    assert not table.update([report(A)], FW)  # the file is read again: nothing new
    assert table.update([report(A, B)], FW)
    assert table.flows == {FLOW_A, FLOW_B}
    assert not table.expire(bypass_cookie("web", FLOW_A.five))  # no bypass known yet


def test_an_expired_flow_is_not_replayed_but_settles_again_with_a_new_seq():
    policy, snapshot = make_policy(), make_snapshot("linear")
    table = OffloadTable()
    table.update([report(A, B)], FW)
    table.set_bypasses(bypasses(policy, snapshot, table.flows), now=1.0)
    cookie = bypass_cookie("web", FLOW_A.five)
    assert set(table.active) == {cookie, bypass_cookie("web", FLOW_B.five)}
    assert table.expire(cookie)
    assert table.flows == {FLOW_B}
    assert not table.update([report(A, B)], FW)
    again = [3, *A[1:]]  # the same 5-tuple settled again, by a new connection
    assert table.update([report(A, B, again)], FW)
    assert table.flows == {FLOW_A, FLOW_B}


def test_a_restarted_or_stopped_worker_takes_its_flows_along():
    table = OffloadTable()
    table.update([report(A, B)], FW)
    assert table.update([report(started=200.0)], FW)  # a new process: none of the old state
    assert table.flows == frozenset()
    assert table.update([report([1, *B[1:]], started=200.0)], FW)  # seq starts over
    assert table.flows == {FLOW_B}
    assert table.update([], FW)  # the worker is gone
    assert table.flows == frozenset()


def test_only_offloading_vnfs_count():
    table = OffloadTable()
    assert not table.update([report(A, vnf="mon", instance="mon")], FW)
    table.update([report(A)], FW)
    assert table.update([report(A)], ())  # the policy turned offload off
    assert table.flows == frozenset()


def test_bypasses_name_the_cookies_compile_chains_uses():
    policy, snapshot = make_policy(), make_snapshot("linear")
    settled = [FLOW_A, SettledFlow("mon", 6, "10.0.0.1", 40000, "10.0.0.3", 8080)]
    found = bypasses(policy, snapshot, settled)
    compiled = {r.cookie: r for rules in compile_chains(policy, snapshot, standard_instances(),
                                                        settled).values()
                for r in rules if chain_sub_kind(r.cookie) == CHAIN_BYPASS}
    assert [b.cookie for b in found] == list(compiled)
    assert len(found) == 1 and found[0].settled == frozenset(settled)
    assert found[0].flow == FLOW_A.five
    assert {r.idle_timeout for r in compiled.values()} == {BYPASS_IDLE_TIMEOUT}
    value, mask = chain_cookie_mask(CHAIN_BYPASS)
    assert all(c & mask == value for c in compiled)
    assert bypasses(None, snapshot, settled) == []


def test_counters_by_direction_survive_the_end_of_the_bypass():
    policy, snapshot = make_policy(), make_snapshot("linear")
    table = OffloadTable()
    table.update([report(A)], FW)
    table.set_bypasses(bypasses(policy, snapshot, table.flows), now=1.0)
    cookie = bypass_cookie("web", FLOW_A.five)
    fwd = match(eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.1", ipv4_dst=VIP,
                tcp_src=40000, tcp_dst=80, metadata=(0, 1 << 63))
    rev = match(eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.3", ipv4_dst="10.0.0.1",
                tcp_src=8080, tcp_dst=40000, in_port=24)
    table.record(cookie, 1, 2, 50000, fwd, 10, 700)
    table.record(cookie, 3, 2, 50000, rev, 20, 30000)
    table.record(cookie, 1, 2, 50000, fwd, 12, 800)  # later stats replace earlier ones
    table.record(12345, 1, 2, 50000, fwd, 1, 1)  # not a bypass we know
    (doc,) = table.to_json()
    assert doc["state"] == "active" and doc["settled_by"] == ["fw"]
    assert doc["forward"] == {"packets": 12, "bytes": 800}
    assert doc["reverse"] == {"packets": 20, "bytes": 30000}
    assert table.expire(cookie)
    table.set_bypasses(bypasses(policy, snapshot, table.flows), now=2.0)
    table.record(cookie, 3, 2, 50000, rev, 25, 36000)  # the final count, as flow-removed
    (doc,) = table.to_json()
    assert (doc["state"], doc["ended"]) == ("ended", 2.0)
    assert doc["reverse"] == {"packets": 25, "bytes": 36000}
