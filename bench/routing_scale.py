"""Time to compile every switch's rules for large fat trees, and to recompute after a link
failure (pure: no switches involved)."""

from __future__ import annotations

import statistics
import time

from sdn.compiler import compile_network
from tests.unit.flowsim import fat_tree, snapshot_from_graph


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(ks: tuple[int, ...] = (4, 8, 16)) -> dict:
    figures = {}
    for k in ks:
        snapshot = snapshot_from_graph(fat_tree(k), hosts_per_switch=k // 2)
        repeat = 3 if k <= 8 else 1
        full, rules = _timed(lambda s=snapshot: compile_network(s), repeat)
        failed = type(snapshot)(snapshot.switches, snapshot.links[1:], snapshot.hosts,
                                snapshot.weights)
        recompute, _ = _timed(lambda s=failed: compile_network(s), repeat)
        per_switch = [len(r.flows) for r in rules.values()]
        groups = [len(r.groups) for r in rules.values()]
        figures[f"fattree_k{k}"] = {
            "switches": len(snapshot.switches), "hosts": len(snapshot.hosts),
            "compile_ms": round(full * 1000, 1), "recompute_after_link_loss_ms":
            round(recompute * 1000, 1), "rules_per_switch_max": max(per_switch),
            "rules_per_switch_mean": round(statistics.mean(per_switch), 1),
            "groups_per_switch_max": max(groups),
        }
        print(f"fat-tree k={k}: {len(snapshot.switches)} switches, {len(snapshot.hosts)} hosts;"
              f" compile {full * 1000:.0f} ms, recompute after a link loss "
              f"{recompute * 1000:.0f} ms; rules/switch max {max(per_switch)} "
              f"mean {statistics.mean(per_switch):.0f}; groups/switch max {max(groups)}")
    return figures
