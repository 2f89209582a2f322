"""Applying a policy of 1,000 traffic classes to a Mininet fat tree (k=4, 20 switches):
how long the REST apply takes (it returns once every switch confirmed by barrier), and how
many FlowMods and MeterMods re-applying the same policy sends (the target is none).

`python -m bench policy_apply` (root: Mininet and Open vSwitch) prints the figures; `run()`
returns them as a dict. Every tenth class has a `max_rate`, so each switch gets 100
meters; the classes' matches are exact TCP ports, one rule per class and switch.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import requests

from sdn.policy.load import load_policy
from testing.harness import Controller, network
from topologies.sdn_topos import FatTreeTopo

CLASSES = 1000
METER_EVERY = 10
APPLY_TIMEOUT = 120


def policy_text(classes: int = CLASSES) -> str:
    lines = ["version: 1", "classes:"]
    for i in range(classes):
        level = ("high", "medium", "low")[i % 3]
        cap = ", max_rate: 10mbit" if i % METER_EVERY == 0 else ""
        lines.append(f"  - {{name: c{i}, match: {{proto: tcp, dst_port: {10000 + i}}}, "
                     f"priority: {level}{cap}}}")
    return "\n".join(lines) + "\n"


def _apply(ctl: Controller, text: str) -> tuple[float, dict]:
    start = time.perf_counter()
    resp = requests.post(f"http://{ctl.api}/v1/policy", timeout=APPLY_TIMEOUT,
                         json={"text": text, "filename": "bench.yaml", "author": "bench"})
    elapsed = time.perf_counter() - start
    resp.raise_for_status()
    return elapsed, resp.json()


def _mods(ctl: Controller) -> tuple[float, float]:
    return ctl.metric("sdn_flow_mods_total"), ctl.metric("sdn_meter_mods_total")


def _table1_rules(switch) -> int:
    out = switch.cmd("ovs-ofctl -O OpenFlow13 --no-stats dump-flows", switch.name, "table=1")
    return sum(1 for line in out.splitlines() if "priority=" in line)


def measure(k: int = 4, classes: int = CLASSES) -> dict:
    text = policy_text(classes)
    start = time.perf_counter()
    load_policy(text)
    validate = time.perf_counter() - start
    start = time.perf_counter()
    load_policy(policy_text(4 * classes))
    validate_4x = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as state:
        ctl = Controller(Path(state)).start()
        try:
            with network(FatTreeTopo(k=k), ctl) as net:
                first_host = net.hosts[0]
                for host in net.hosts[1:]:
                    host.cmd("ping -n -c 1 -W 1", first_host.IP())
                before = _mods(ctl)
                apply_s, first = _apply(ctl, text)
                after = _mods(ctl)
                reapply_s, again = _apply(ctl, text)
                final = _mods(ctl)
                rules = _table1_rules(net.switches[0])
        finally:
            ctl.stop()
    return {
        "switches": len(net.switches), "classes": classes,
        "table1_rules_per_switch": rules,
        "apply_s": round(apply_s, 3), "validate_in_process_s": round(validate, 3),
        "validate_4x_classes_s": round(validate_4x, 3),
        "flow_mods": int(after[0] - before[0]), "meter_mods": int(after[1] - before[1]),
        "reported_flow_mods": first["flow_mods"],
        "reapply_s": round(reapply_s, 3),
        "reapply_flow_mods": int(final[0] - after[0]),
        "reapply_meter_mods": int(final[1] - after[1]),
        "reapply_changed": again["changed"],
    }


def run() -> dict:
    f = measure()
    print(f"policy of {f['classes']} classes on a fat tree ({f['switches']} switches, "
          f"{f['table1_rules_per_switch']} table-1 rules each): apply {f['apply_s']:.2f} s "
          f"barrier-confirmed ({f['flow_mods']} FlowMods, {f['meter_mods']} MeterMods; "
          f"validating the file alone {f['validate_in_process_s']:.2f} s, "
          f"{4 * f['classes']} classes {f['validate_4x_classes_s']:.2f} s); re-apply "
          f"{f['reapply_s']:.2f} s, {f['reapply_flow_mods']} FlowMods, "
          f"{f['reapply_meter_mods']} MeterMods")
    return {"fattree_k4": f}


if __name__ == "__main__":
    run()
