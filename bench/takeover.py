"""A cluster of three controllers on a one-member etcd, a Mininet fat tree (k=4, 20
switches) connected to all three: the leader killed (SIGKILL) under a 1000 pps UDP
stream, ROUNDS times (the killed one comes back as a standby each time).

Per round: seconds from the kill to a new controller confirmed master at every switch,
packets lost, FlowMods the new leader sent in the SETTLE seconds after (the target is
none: the network it finds is the one it wants). Then policy applies, alternating two
policies APPLIES times: on the leader, through a standby (forwarded), and on one
controller without a cluster (SQLite) on the same topology — median seconds and the
ratio to SQLite.

`python -m bench takeover` (root) prints the figures; `run()` returns them as a dict.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import requests

from testing.cluster import controllers, flow_mods, masters, status, udp_stream
from testing.etcd import EtcdCluster
from testing.harness import REPO, Controller, network, wait_until
from topologies.sdn_topos import FatTreeTopo

ROUNDS = 3
APPLIES = 10
SETTLE = 6.0  # seconds after a takeover: past the warm-restart grace and a sync
STREAM_SECONDS = 6.0
POLICIES = [(REPO / "examples/minimal.yaml").read_text(),
            (REPO / "examples/priorities.yaml").read_text()]


def _apply_seconds(ctl: Controller) -> list[float]:
    times = []
    for index in range(APPLIES):
        start = time.perf_counter()
        answer = requests.post(f"http://{ctl.api}/v1/policy", timeout=120, json={
            "text": POLICIES[index % 2], "filename": "bench.yaml", "author": "bench"})
        times.append(time.perf_counter() - start)
        answer.raise_for_status()
    return times


def _leader(members: list[Controller]) -> Controller:
    return next(c for c in members if c.proc.poll() is None and status(c)["leading"])


def _takeover(net, members: list[Controller], workdir: Path, round_no: int) -> dict:
    leader = _leader(members)
    standbys = [c for c in members if c is not leader]
    before = {c.state_dir.name: flow_mods(c) for c in standbys}
    finish = udp_stream(net, "h1", "h16", STREAM_SECONDS, workdir)
    time.sleep(1.5)
    leader.proc.kill()
    killed = time.monotonic()
    leader.proc.wait(5)
    witness = standbys[0]

    def new_master() -> str | None:
        for ctl in standbys:
            name = ctl.state_dir.name
            if masters(witness, name) == len(net.switches):
                return name
        return None
    name = wait_until(new_master, 20, interval=0.05, what="a new master everywhere")
    seconds = time.monotonic() - killed
    new = next(c for c in standbys if c.state_dir.name == name)
    sent, received = finish()
    time.sleep(max(0.0, SETTLE - (time.monotonic() - killed)))
    after = flow_mods(new)
    leader.start()  # back as a standby, same name and state dir
    figures = {"round": round_no, "to_new_master_s": round(seconds, 2), "sent": sent,
               "lost": sent - received, "flow_mods_after": after - before[name],
               "new_leader": name}
    print(f"  round {round_no}: new master everywhere after {seconds:.2f}s, "
          f"{sent - received}/{sent} lost, {after - before[name]:g} FlowMods after")
    return figures


def run() -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp:
        workdir = Path(tmp)
        with EtcdCluster(1) as etcd, controllers(workdir, etcd) as members, \
                network(FatTreeTopo(k=4), members[0], wait=False,
                        others=tuple(members[1:])) as net:
            members[0].wait_topology(len(net.switches), 32)
            net.pingAll(timeout=1)
            rounds = [_takeover(net, members, workdir, n) for n in range(ROUNDS)]
            leader = _leader(members)
            standby = next(c for c in members if c is not leader)
            on_leader = _apply_seconds(leader)
            through_standby = _apply_seconds(standby)
        with tempfile.TemporaryDirectory(prefix="bench-takeover-solo-") as solo_dir:
            solo = Controller(Path(solo_dir)).start()
            try:
                with network(FatTreeTopo(k=4), solo) as net:
                    net.pingAll(timeout=1)
                    sqlite = _apply_seconds(solo)
            finally:
                solo.stop()
    sqlite_median = statistics.median(sqlite)
    results = {
        "switches": 20, "lease_ttl_s": 2, "rounds": rounds,
        "to_new_master_s": [r["to_new_master_s"] for r in rounds],
        "lost": [r["lost"] for r in rounds],
        "flow_mods_after": [r["flow_mods_after"] for r in rounds],
        "apply_s": {
            "etcd_leader": round(statistics.median(on_leader), 3),
            "etcd_through_standby": round(statistics.median(through_standby), 3),
            "sqlite": round(sqlite_median, 3),
        },
    }
    results["apply_ratio_vs_sqlite"] = {
        key: round(value / sqlite_median, 2) for key, value in results["apply_s"].items()
        if key != "sqlite"}
    for key in ("to_new_master_s", "lost", "flow_mods_after", "apply_s",
                "apply_ratio_vs_sqlite"):
        print(f"{key:24s} {results[key]}")
    return results


if __name__ == "__main__":
    run()
