"""`make bench`: run every benchmark, print figures, write results/bench.json."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    chain,
    chains_scale,
    convergence,
    failover,
    failover_coverage,
    first_packet,
    lb_analyzer,
    policy_apply,
    routing_scale,
    takeover,
    update_loss,
    vnf_peers,
    vnf_pps,
    vnf_runtime,
)
from bench.plots import plot_all


def _root_only(run: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Namespaces and raw sockets need root: without it say so instead of failing `make bench`."""

    def guarded() -> dict[str, Any]:
        if os.geteuid() != 0:
            print("skipped: needs root")
            return {"skipped": "needs root"}
        return run()

    return guarded


def _echo(run: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Print the figures of a benchmark whose run() only returns them."""

    def echoed() -> dict[str, Any]:
        figures = run()
        for name, value in figures.items():
            print(f"{name:32s} {value}")
        return figures

    return echoed


BENCHMARKS = {
    "routing_scale": routing_scale.run,
    "failover_coverage": failover_coverage.run,
    "chains_scale": chains_scale.run,
    "lb_analyzer": lb_analyzer.run,
    "vnf_pps": _root_only(vnf_pps.run),
    "vnf_peers": _root_only(vnf_peers.run),
    "vnf_runtime": _root_only(_echo(vnf_runtime.run)),
    "failover": _root_only(failover.run),
    "first_packet": _root_only(first_packet.run),
    "policy_apply": _root_only(policy_apply.run),
    "update_loss": _root_only(update_loss.run),
    "chain": _root_only(chain.run),
    "convergence": _root_only(convergence.run),
    "takeover": _root_only(takeover.run),
}


RESULTS = Path("results/bench.json")


def main(names: list[str]) -> int:
    """Run all benchmarks, or the named ones; their figures replace earlier ones in the
    results file, the others' stay."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
        return 2
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": platform.node(), "python": platform.python_version()})
    for name, run in BENCHMARKS.items():
        if names and name not in names:
            continue
        print(f"== {name}")
        results[name] = run()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {RESULTS}")
    for path in plot_all(results, RESULTS.parent):
        print(f"plot written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
