"""Time to compile service-chain steering (sdn.compile.chains) on fat trees, and the rule counts:
what a VNF failure (recompile with the instance dead) costs the controller before it can
send the change. Pure: no switches involved.

`python -m bench.chains_scale` prints the figures; `run()` returns them as a dict.
Each fat tree gets `CHAINS` chains of three hops over VNFs with two replicas spread over
the edge switches; one chain matches a port range (several value/mask rules).
"""

from __future__ import annotations

import statistics
import time

from sdn.compile.chain_model import VnfInstance
from sdn.compile.chains import compile_chains
from sdn.policy.load import load_policy
from testing.flowsim import fat_tree, snapshot_from_graph

CHAINS = 8
VNFS = 6
REPLICAS = 2
REPEAT = 5
FIRST_VNF_PORT = 100


def _policy_text() -> str:
    vnfs = "\n".join(f"  v{i}: {{type: analyzer, switch: s1, failure_mode: open}}"
                     for i in range(VNFS))
    chains = "\n".join(
        f"  - {{name: c{c}, match: {{proto: tcp, dst: 10.{c}.0.0/16, dst_port: "
        f"{'1000-2000' if c == 0 else 80}}}, through: "
        f"[v{c % VNFS}, v{(c + 1) % VNFS}, v{(c + 2) % VNFS}]}}"
        for c in range(CHAINS))
    return f"version: 1\nvnfs:\n{vnfs}\nchains:\n{chains}\n"


def measure(k: int) -> dict:
    graph = fat_tree(k)
    snapshot = snapshot_from_graph(graph)
    edges = graph.graph["edge"]
    instances = []
    for i in range(VNFS):
        for r in range(REPLICAS):
            dpid = edges[(i * REPLICAS + r) % len(edges)]
            port = FIRST_VNF_PORT + 2 * (i * REPLICAS + r)
            instances.append(VnfInstance(f"v{i}", f"v{i}-{r}", dpid, port, port + 1))
    switches = dict(snapshot.switches)
    for inst in instances:
        switches[inst.dpid] = switches[inst.dpid] | {inst.ingress_port, inst.egress_port}
    snapshot = snapshot.__class__(switches, snapshot.links, snapshot.hosts)
    policy = load_policy(_policy_text())
    times, failed_times = [], []
    for _ in range(REPEAT):
        started = time.perf_counter()
        rules = compile_chains(policy, snapshot, instances)
        times.append(time.perf_counter() - started)
        dead = [VnfInstance(**{**vars(instances[0]), "alive": False}), *instances[1:]]
        started = time.perf_counter()
        after = compile_chains(policy, snapshot, dead)
        failed_times.append(time.perf_counter() - started)
    changed = sum(len(set(rules[d]) ^ set(after[d])) for d in rules)
    return {
        "switches": len(snapshot.switches),
        "chains": CHAINS,
        "instances": len(instances),
        "rules": sum(len(r) for r in rules.values()),
        "compile_ms": round(statistics.median(times) * 1000, 2),
        "compile_after_failure_ms": round(statistics.median(failed_times) * 1000, 2),
        "rules_changed_by_failure": changed,
    }


def run() -> dict:
    results = {}
    for k in (4, 8):
        results[f"fattree{k}"] = figures = measure(k)
        print(f"fat tree k={k}: {figures}")
    return results


if __name__ == "__main__":
    run()
