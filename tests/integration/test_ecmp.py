"""ECMP on a fat tree: parallel TCP flows between pods spread over the core switches, as
the core switches' own port counters show; with ECMP off they all take one core."""

from __future__ import annotations

import json
import re

import requests

from testing.harness import network, ping, wait_until
from topologies.sdn_topos import FatTreeTopo

K = 4
CORES = [f"s{i}" for i in range(1, (K // 2) ** 2 + 1)]
FLOWS = 16
BUSY_PACKETS = 1000  # a core that carried test traffic; LLDP adds a few per second


def port_packets(switch) -> int:
    """Packets received on all of a switch's numbered ports, from OpenFlow port stats."""
    out = switch.cmd("ovs-ofctl -O OpenFlow13 --no-names dump-ports", switch.name)
    return sum(int(n) for n in re.findall(r"port\s+\d+: rx pkts=(\d+)", out))


def core_packets(net) -> dict[str, int]:
    return {name: port_packets(net.get(name)) for name in CORES}


def apply_policy(controller, text: str) -> None:
    resp = requests.post(f"http://{controller.api}/v1/policy",
                         json={"text": text, "filename": "test_ecmp.yaml"}, timeout=30)
    assert resp.ok, resp.text


def parallel_tcp(client, server, flows: int, seconds: float = 2) -> int:
    """`flows` TCP connections (distinct source ports) client -> server; bytes received."""
    srv = server.popen(["iperf3", "-s", "-1", "-p", "5202"])
    try:
        wait_until(lambda: ":5202" in server.cmd("ss -ltn"), 5, what="iperf3 server")
        out = client.cmd(f"iperf3 -c {server.IP()} -p 5202 -P {flows} -t {seconds} -J")
        report = json.loads(out)
        assert len(report["start"]["connected"]) == flows
        assert len({c["local_port"] for c in report["start"]["connected"]}) == flows
        return report["end"]["sum_received"]["bytes"]
    finally:
        srv.terminate()
        srv.wait(5)


def busy_cores(net, client, server) -> list[str]:
    before = core_packets(net)
    assert parallel_tcp(client, server, FLOWS) > 0
    after = core_packets(net)
    return sorted(c for c in CORES if after[c] - before[c] >= BUSY_PACKETS)


def test_parallel_flows_between_pods_use_several_core_switches(controller):
    with network(FatTreeTopo(k=K), controller) as net:
        client, server = net.get("h1"), net.get("h16")
        assert ping(client, server.IP(), count=2).received == 2
        used = busy_cores(net, client, server)
        assert len(used) > 1, f"{FLOWS} flows all crossed {used}"


def test_without_ecmp_the_same_flows_take_one_core(controller):
    """The check above can fail: with ECMP off every flow follows the one shortest path."""
    with network(FatTreeTopo(k=K), controller) as net:
        apply_policy(controller, "version: 1\nrouting: {metric: hops, ecmp: false}\n")
        wait_until(lambda: "type=select" not in net.get("s7").cmd(
            "ovs-ofctl -O OpenFlow13 dump-groups s7"), 10, what="select groups to go")
        client, server = net.get("h1"), net.get("h16")
        assert ping(client, server.IP(), count=2).received == 2
        used = busy_cores(net, client, server)
        assert len(used) == 1, used
