"""A policy's `vnfs` run in their own namespaces, plugged into the switches it names —
and untouched by traffic that no chain sends them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from testing.harness import network, ping_all, wait_until
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

        # Dropping them from the policy removes every trace.
        policy.write_text("version: 1\n")
        controller.apply(policy)
        assert vnfs(controller) == {}
        assert not {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} & netns_list()
        assert not {"vfw-i", "vfw-e"} & set(net.get("s1").cmd("ovs-vsctl list-ports s1").split())


def test_controller_stop_removes_its_vnfs(controller, tmp_path):
    policy = tmp_path / "vnfs.yaml"
    policy.write_text(POLICY)
    with network(LinearTopo(n=2), controller):
        controller.apply(policy)
        assert "vnf-fw" in netns_list()
        controller.stop()
        assert not {"vnf-fw", "vnf-mon-0", "vnf-mon-1"} & netns_list()
