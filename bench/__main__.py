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
    failover,
    first_packet,
    lb_analyzer,
    policy_apply,
    routing_scale,
    vnf_pps,
    vnf_runtime,
)


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
    "lb_analyzer": lb_analyzer.run,
    "vnf_pps": _root_only(vnf_pps.run),
    "vnf_runtime": _root_only(_echo(vnf_runtime.run)),
    "failover": _root_only(failover.run),
    "first_packet": _root_only(first_packet.run),
    "policy_apply": _root_only(policy_apply.run),
}


def main(names: list[str]) -> int:
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": platform.node(), "python": platform.python_version()}
    for name, run in BENCHMARKS.items():
        if names and name not in names:
            continue
        print(f"== {name}")
        results[name] = run()
    out = Path("results/bench.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
