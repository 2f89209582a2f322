"""How long the VNF runtime takes to place, restart and remove a VNF (root, Open vSwitch).

`python -m bench.vnf_runtime [ROUNDS]` prints the figures; `run()` returns them as a dict
(milliseconds, median and max over the rounds). Uses a bridge of its own, `vnfbench0`,
with the datapath `detect_datapath()` picks, and removes it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nfv.host.ovsdb import Ovsdb, detect_datapath
from nfv.host.runtime import Runtime
from nfv.host.spec import VnfSpec
from nfv.host.supervisor import Backoff, State

BRIDGE = "vnfbench0"


def _bridge(add: bool) -> None:
    with Ovsdb() as db:
        if add:
            db.add_bridge(BRIDGE, detect_datapath())
        else:
            db.del_bridge(BRIDGE)


def run(rounds: int = 5) -> dict[str, float]:
    """Median/max milliseconds for place (start() returns), running, restart, stop."""
    samples: dict[str, list[float]] = {"place": [], "running": [], "restart": [], "stop": []}
    _bridge(add=True)
    try:
        with tempfile.TemporaryDirectory(prefix="vnfbench") as tmp, Runtime(
            run_dir=Path(tmp), netns_prefix="vnfbench-", port_prefix="vb",
            backoff=Backoff(initial=0.1), poll_interval=0.05,
        ) as rt:
            for i in range(rounds):
                spec = VnfSpec(name=f"b{i}", kind="forward", switch=BRIDGE, cpu=0.5,
                               memory=2**27)
                t0 = time.perf_counter()
                rt.start(spec)
                samples["place"].append(time.perf_counter() - t0)
                pid = rt.wait_for(spec.instance, [State.RUNNING], 15).pid
                samples["running"].append(time.perf_counter() - t0)
                assert pid is not None
                t1 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 15
                while rt.status(spec.instance).restarts < 1 or rt.status(
                        spec.instance).state != State.RUNNING.value:
                    if time.monotonic() > deadline:
                        raise TimeoutError("VNF did not come back")
                    time.sleep(0.01)
                samples["restart"].append(time.perf_counter() - t1)
                t2 = time.perf_counter()
                rt.stop(spec.instance)
                samples["stop"].append(time.perf_counter() - t2)
    finally:
        _bridge(add=False)
    result: dict[str, float] = {"rounds": rounds}
    for key, values in samples.items():
        result[f"{key}_ms_median"] = round(statistics.median(values) * 1000, 1)
        result[f"{key}_ms_max"] = round(max(values) * 1000, 1)
    return result


if __name__ == "__main__":
    figures = run(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(json.dumps(figures, indent=2))
