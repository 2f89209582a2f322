"""`make bench`: run every benchmark, print figures, write results/bench.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from bench import routing_scale

BENCHMARKS = {"routing_scale": routing_scale.run}


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
