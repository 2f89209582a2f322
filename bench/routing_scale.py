"""Time to compile every switch's rules for large fat trees, and to recompute after a link
failure and its recovery (pure: no switches involved).

`python -m bench routing_scale` prints the figures; `run()` returns them as a dict.
A recompute is `NetworkCompiler.update` on the snapshot without (or with again) one
link, after a compile of the snapshot before: new routes, and the complete new rule set
of every switch whose rules changed (what the controller must diff and send). For
comparison `full_recompute_*` is `compile`, which also copies out the rules of every
unchanged switch, as `compile_network` does. Both kinds of fat-tree link are cut
(core-aggregation and aggregation-edge), several of each; figures are median and worst.

`isp_link_loss` is the whole of what the controller does after a link loss on the
200-switch ISP-like graph of `bench.convergence` (one host per switch): compile with its
incremental cache, then `push` to fake datapaths (plan the ordered rounds against what the
switches hold, encode every message); the links cut are the most used ones (highest edge
betweenness); `push_diffing_changed_switches_in_full_ms` is that push again without
the compiler's deltas (`RulesDelta`), and `any_link_loss_*` is compile + push over every
link of the graph, one at a time. `unchanged_sync_ms` is the same for a sync that changes
nothing (a VNF's or an offload's change elsewhere costs about this at the switches it does
not touch), and `unchanged_sync_diffing_all_ms` that sync with every switch diffed, as
before switches kept track of what they were last brought to
(`SwitchConnection.in_step_with`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import networkx as nx

from common.collector import collector_paused
from sdn.compile.desired import DesiredCache, desired_rules
from sdn.compile.routes import NetworkCompiler
from sdn.model.topology import Link, Snapshot
from sdn.southbound.connection import push
from testing.fakes import connected_state
from testing.flowsim import fat_tree, snapshot_from_graph

CUTS_PER_KIND = 4


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)

T = TypeVar("T")


def _cuts(snapshot: Snapshot, k: int) -> list[Link]:
    """Links to cut: the first few with a core switch at one end, then the first few
    between aggregation and edge switches (cores are numbered first)."""
    cores = (k // 2) ** 2
    upper = [lk for lk in snapshot.links if lk.a <= cores][:CUTS_PER_KIND]
    lower = [lk for lk in snapshot.links if lk.a > cores][:CUTS_PER_KIND]
    return upper + lower


def _timed(times: list[float], work: Callable[[], T]) -> T:
    """Run `work` as the controller does (collector paused) and append its seconds."""
    with collector_paused():
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return result


def measure(k: int) -> dict:
    snapshot = snapshot_from_graph(fat_tree(k), hosts_per_switch=k // 2)
    compiler = NetworkCompiler()
    first: list[float] = []
    rules = _timed(first, lambda: compiler.compile(snapshot))
    full = first[0]
    losses, recoveries, touched, full_losses = [], [], [], []
    for link in _cuts(snapshot, k):
        failed = dataclasses.replace(snapshot, links=tuple(lk for lk in snapshot.links
                                                           if lk != link))
        _timed(losses, lambda failed=failed: compiler.update(failed))
        touched.append(len(compiler.changed))
        _timed(recoveries, lambda: compiler.update(snapshot))
        _timed(full_losses, lambda failed=failed: compiler.compile(failed))
        _timed([], lambda: compiler.compile(snapshot))
    per_switch = [len(r.flows) for r in rules.values()]
    groups = [len(r.groups) for r in rules.values()]
    return {
        "switches": len(snapshot.switches), "links": len(snapshot.links),
        "hosts": len(snapshot.hosts), "compile_ms": _ms(full),
        "recompute_after_link_loss_ms": _ms(statistics.median(losses)),
        "recompute_after_link_loss_max_ms": _ms(max(losses)),
        "recompute_after_recovery_ms": _ms(statistics.median(recoveries)),
        "recompute_after_recovery_max_ms": _ms(max(recoveries)),
        "full_recompute_after_link_loss_ms": _ms(statistics.median(full_losses)),
        "switches_changed_by_link_loss_max": max(touched),
        "rules_per_switch_max": max(per_switch),
        "rules_per_switch_mean": round(statistics.mean(per_switch), 1),
        "groups_per_switch_max": max(groups),
        "rebuilds": compiler.rebuilds,
    }


def isp_link_loss(n: int = 200, cuts: int = 4) -> dict:
    from bench.convergence import SEED, graph_of

    graph = graph_of(n, SEED)
    snapshot = snapshot_from_graph(graph, hosts_per_switch=1)
    cache = DesiredCache()
    conns = connected_state(tuple(sorted(snapshot.switches))).switches  # fake datapaths

    def sync(snap: Snapshot, keyed: bool = True) -> int:
        want = desired_rules(None, snap, (), (), cache)
        return push(conns, want, snap.links, wait=False,
                    deltas=cache.deltas if keyed else None).flow_mods

    def without(links: set[Link]) -> Snapshot:
        return dataclasses.replace(snapshot, links=tuple(
            lk for lk in snapshot.links if lk not in links))

    sync(snapshot)
    used = nx.edge_betweenness_centrality(graph)
    stages: dict[str, list[float]] = {"compile": [], "push": []}
    flow_mods, full_diff, idle, idle_all = [], [], [], []
    for a, b in sorted(used, key=used.get, reverse=True)[:cuts]:
        failed = without({lk for lk in snapshot.links if {lk.a, lk.b} == {a, b}})
        want = _timed(stages["compile"], lambda failed=failed: desired_rules(
            None, failed, (), (), cache))
        flow_mods.append(_timed(stages["push"], lambda failed=failed, want=want: push(
            conns, want, failed.links, wait=False, deltas=cache.deltas).flow_mods))
        sync(snapshot)  # the link is back
        want = desired_rules(None, failed, (), (), cache)  # the same loss, every changed
        _timed(full_diff, lambda failed=failed, want=want: push(  # switch diffed in full
            conns, want, failed.links, wait=False))
        sync(snapshot)
        _timed(idle, lambda: sync(snapshot))  # a sync that changes nothing
        for conn in conns.values():  # the same, diffing every switch as before in_step_with
            conn.in_step_with = None
        _timed(idle_all, lambda: sync(snapshot))
    every_link: list[float] = []
    for link in snapshot.links:
        _timed(every_link, lambda link=link: sync(without({link})))
        sync(snapshot)
    every_link.sort()
    totals = [c + p for c, p in zip(stages["compile"], stages["push"], strict=True)]
    return {
        "switches": n, "links": graph.number_of_edges(),
        "link_loss_ms": _ms(statistics.median(totals)),
        "link_loss_max_ms": _ms(max(totals)),
        **{f"{stage}_ms": _ms(statistics.median(times)) for stage, times in stages.items()},
        "push_diffing_changed_switches_in_full_ms": _ms(statistics.median(full_diff)),
        "flow_mods": int(statistics.median(flow_mods)),
        "any_link_loss_median_ms": _ms(statistics.median(every_link)),
        "any_link_loss_p90_ms": _ms(every_link[int(0.9 * len(every_link))]),
        "any_link_loss_max_ms": _ms(every_link[-1]),
        "links_within_100ms": round(sum(t <= 0.1 for t in every_link) / len(every_link), 3),
        "unchanged_sync_ms": _ms(statistics.median(idle)),
        "unchanged_sync_diffing_all_ms": _ms(statistics.median(idle_all)),
    }


def run(ks: tuple[int, ...] = (4, 8, 16)) -> dict:
    figures = {}
    f = figures["isp200_link_loss"] = isp_link_loss()
    print(f"ISP-like graph, {f['switches']} switches, {f['links']} links, a host each: after "
          f"a link loss compile + push median {f['link_loss_ms']:.0f} ms (max "
          f"{f['link_loss_max_ms']:.0f}): compile {f['compile_ms']:.0f}, push (plan, encode, "
          f"hand to the datapath) {f['push_ms']:.0f} ms; {f['flow_mods']} FlowMods; a sync "
          f"that changes nothing {f['unchanged_sync_ms']:.1f} ms (diffing every switch: "
          f"{f['unchanged_sync_diffing_all_ms']:.1f} ms); the push diffing changed switches "
          f"in full {f['push_diffing_changed_switches_in_full_ms']:.0f} ms; any one link "
          f"lost: median {f['any_link_loss_median_ms']:.0f} ms, p90 "
          f"{f['any_link_loss_p90_ms']:.0f}, max {f['any_link_loss_max_ms']:.0f}, "
          f"{100 * f['links_within_100ms']:.0f}% of links within 100 ms")
    for k in ks:
        f = figures[f"fattree_k{k}"] = measure(k)
        print(f"fat-tree k={k}: {f['switches']} switches, {f['links']} links, "
              f"{f['hosts']} hosts; compile {f['compile_ms']:.0f} ms; recompute after a "
              f"link loss median {f['recompute_after_link_loss_ms']:.1f} ms, max "
              f"{f['recompute_after_link_loss_max_ms']:.1f} ms; after recovery median "
              f"{f['recompute_after_recovery_ms']:.1f} ms, max "
              f"{f['recompute_after_recovery_max_ms']:.1f} ms (every switch's rules: "
              f"{f['full_recompute_after_link_loss_ms']:.1f} ms); rules/switch max "
              f"{f['rules_per_switch_max']} mean {f['rules_per_switch_mean']:.0f}; "
              f"groups/switch max {f['groups_per_switch_max']}; switches changed by a "
              f"loss <= {f['switches_changed_by_link_loss_max']}")
    return figures
