"""A policy's `vnfs` run in their own namespaces, plugged into the switches it names —
and untouched by traffic that no chain sends them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from testing.harness import dump_flows, network, ping_all, reap_vnfs, wait_until
from topologies.sdn_topos import LinearTopo

POLICY = """\
version: 1
vnfs:
  fw:  {type: firewall, switch: s1, default: allow, cpu: 0.5, memory: 128mb}
  mon: {type: analyzer, switch: s2, replicas: 2}
"""


def netns_list() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
               .stdout.split())


def vnfs(controller) -> dict[str, dict]:
    return {v["name"]: v for v in controller.get("/v1/vnfs")["vnfs"]}


def test_policy_places_supervises_and_removes_vnfs(controller, tmp_path):
    policy = tmp_path / "vnfs.yaml"
    policy.write_text(POLICY)
    with network(LinearTopo(n=2), controller) as net:
        controller.apply(policy)
        running = wait_until(
            lambda: (v := vnfs(controller)) and all(x["state"] == "running" for x in v.values())
            and v, 20, what="VNFs running")
        assert set(running) == {"fw", "mon-0", "mon-1"}
        assert {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} <= netns_list()
        s1_ports = net.get("s1").cmd("ovs-vsctl list-ports s1").split()
        s2_ports = net.get("s2").cmd("ovs-vsctl list-ports s2").split()
        assert {"vfw-i", "vfw-e"} <= set(s1_ports)
        assert {"vmon-0-i", "vmon-0-e", "vmon-1-i", "vmon-1-e"} <= set(s2_ports)
        assert running["fw"]["cpu"] == 0.5 and running["fw"]["memory"] == 128_000_000

        # The arms are neither hosts nor flood targets: plain traffic never reaches them.
        assert ping_all(net) == []
        net.get("h1").cmd("ping -b -c 2 -W 1 10.255.255.255")
        time.sleep(1.5)  # stats files are rewritten every second
        for status in vnfs(controller).values():
            stats = json.loads(Path(status["stats_file"]).read_text())
            received = sum(p["rx_packets"] for p in stats["ports"].values())
            assert received == 0, (status["name"], stats["ports"])
        hosts = controller.get("/v1/topology")["hosts"]
        assert len(hosts) == 2

        # A VNF that dies is restarted.
        pid = vnfs(controller)["fw"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: vnfs(controller)["fw"]["restarts"] >= 1
                   and vnfs(controller)["fw"]["state"] == "running", 15, what="fw restarted")
        fw = 'instance="fw",kind="firewall",vnf="fw"'
        wait_until(lambda: controller.metric(f"sdn_vnf_restarts_total{{{fw}}}") == 1
                   and controller.metric(f"sdn_vnf_healthy{{{fw}}}") == 1, 10,
                   what="the restart in /metrics")

        # Dropping them from the policy removes every trace.
        policy.write_text("version: 1\n")
        controller.apply(policy)
        assert vnfs(controller) == {}
        assert not {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} & netns_list()
        assert not {"vfw-i", "vfw-e"} & set(net.get("s1").cmd("ovs-vsctl list-ports s1").split())


def test_a_stopped_controllers_vnfs_keep_running_for_the_next_one(controller, tmp_path):
    """SIGTERM: the controller exits at once and sends nothing; its VNFs keep running and
    the next controller takes them over as they are. Reaping removes them afterwards."""
    policy = tmp_path / "vnfs.yaml"
    policy.write_text(POLICY)
    with network(LinearTopo(n=2), controller) as net:
        controller.apply(policy)
        wait_until(lambda: all(v["state"] == "running" for v in vnfs(controller).values()),
                   15, what="VNFs running")
        pids = {name: v["pid"] for name, v in vnfs(controller).items()}
        before = {s.name: dump_flows(s) for s in net.switches}
        assert controller.stop(signal.SIGTERM) == 0
        time.sleep(4)  # longer than a link's LLDP timeout: nothing may age out and go
        assert {s.name: dump_flows(s) for s in net.switches} == before
        assert {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} <= netns_list()
        controller.start()
        controller.wait_topology(2, 1)
        wait_until(lambda: {n: v["pid"] for n, v in vnfs(controller).items()} == pids
                   and all(v["state"] == "running" for v in vnfs(controller).values()),
                   15, what="VNFs taken over")
        time.sleep(3)  # past the reconcile grace period
        assert controller.metric("sdn_flow_mods_total") == 0
        assert {s.name: dump_flows(s) for s in net.switches} == before
        controller.stop()
    reap_vnfs()
    assert not {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} & netns_list()
