"""Traffic priorities under congestion on a dumbbell: a saturating low class, a guaranteed
high class and a capped class share the bottleneck link s1 -> s2, whose capacity the
policy names and the egress HTB queues enforce. Also: DSCP marks on the wire, meter drops,
edge-only classification, and a re-apply that changes nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from sdn.compile.pipeline import METER_ARP_IN, METER_LEARN_IN
from sdn.compile.queues import QueuePlan, plan_queues
from sdn.controller.queues import apply_queues
from sdn.policy.load import load_policy
from testing.harness import Capture, network, ping_all, wait_until
from tests.integration.test_policy_apply import write_policy
from topologies.sdn_topos import DumbbellTopo

CAPACITY = 40_000_000
GUARANTEE = 15_000_000
CAP = 8_000_000
HOST_PORT_CAPACITY = 1_000_000_000
DURATION = 8  # seconds of measured traffic per flow, after 1 s omitted (TCP slow start)

POLICY = f"""\
version: 1
topology:
  links:
    - {{between: [s1, s2], capacity: {CAPACITY}}}
classes:
  - {{name: voice, match: {{proto: udp, dst_port: 5004}}, priority: high,
      min_rate: {GUARANTEE}}}
  - {{name: capped, match: {{proto: tcp, dst_port: 5202}}, priority: medium, max_rate: {CAP}}}
  - {{name: bulk, match: {{proto: tcp}}, priority: low}}
"""


def iperf_server(host, port: int) -> subprocess.Popen:
    proc = host.popen(["iperf3", "-s", "-1", "-J", "-p", str(port)], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, text=True)
    wait_until(lambda: f":{port}" in host.cmd("ss -ltn"), 5, what=f"iperf3 on {port}")
    return proc


def iperf_client(host, server, port: int, seconds: int, *extra: str) -> subprocess.Popen:
    return host.popen(["iperf3", "-c", server.IP(), "-p", str(port), "-t", str(seconds),
                       "-O", "1", "-J", *extra], stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, text=True)


def received_bps(server: subprocess.Popen, timeout: float) -> float:
    """What the receiving iperf3 measured (its own JSON report)."""
    out, _ = server.communicate(timeout=timeout)
    end = json.loads(out)["end"]
    return (end.get("sum_received") or end["sum"])["bits_per_second"]


PACKET_IN_METERS = {METER_ARP_IN, METER_LEARN_IN}  # on every switch, besides class meters


def meter_drops(switch) -> dict[int, int]:
    """Packets each meter's band dropped, from `ovs-ofctl meter-stats`."""
    out = switch.cmd("ovs-ofctl -O OpenFlow13 meter-stats", switch.name)
    return {int(m.group(1)): int(m.group(2))
            for m in re.finditer(r"meter:(\d+) .*?0: packet_count:(\d+)", out, re.S)}


def class_rule_packets(switch, dscp: int) -> int:
    out = switch.cmd("ovs-ofctl -O OpenFlow13 dump-flows", switch.name, "table=1")
    return sum(int(m.group(1)) for line in out.splitlines()
               if f"set_field:{dscp}->ip_dscp" in line or f"mod_nw_tos:{dscp << 2}" in line
               for m in [re.search(r"n_packets=(\d+)", line)] if m)


def test_priorities_under_congestion(controller, tmp_path):
    policy_file = write_policy(tmp_path, POLICY)
    policy = load_policy(POLICY)
    with network(DumbbellTopo(n=2), controller) as net:
        h1, h2, h3, h4 = (net.get(f"h{i}") for i in range(1, 5))
        s1, s2 = net.get("s1"), net.get("s2")
        assert ping_all(net) == []
        applied = controller.sdnctl("policy", "apply", "-f", str(policy_file), "-o", "json")
        assert applied.returncode == 0, applied.stderr
        bottleneck = {s1.connectionsTo(s2)[0][0].name, s2.connectionsTo(s1)[0][0].name}
        ports = {intf.name: CAPACITY if intf.name in bottleneck else HOST_PORT_CAPACITY
                 for sw in (s1, s2) for intf in sw.intfList() if intf.name != "lo"}
        report = apply_queues(plan_queues(policy, ports))
        assert sorted(report["changed"] + report["unchanged"]) == sorted(ports), report
        assert apply_queues(plan_queues(policy, ports))["changed"] == []  # idempotent

        servers = {"bulk": iperf_server(h3, 5201), "voice": iperf_server(h4, 5004),
                   "capped": iperf_server(h4, 5202)}
        voice_dscp = Capture(h4, "udp dst port 5004", tmp_path / "voice.pcap", count=20)
        bulk_dscp = Capture(h3, "tcp dst port 5201", tmp_path / "bulk.pcap", count=20)
        clients = [iperf_client(h1, h3, 5201, DURATION + 4)]  # saturates the link first
        time.sleep(2)
        clients += [iperf_client(h1, h4, 5004, DURATION, "-u", "-b", str(GUARANTEE),
                                 "-l", "1400"),
                    iperf_client(h2, h4, 5202, DURATION)]
        try:
            got = {name: received_bps(srv, DURATION + 20) for name, srv in servers.items()}
        finally:
            for proc in clients + list(servers.values()):
                if proc.poll() is None:
                    proc.kill()
                proc.wait(5)
        print(f"received (Mbit/s): { {k: round(v / 1e6, 2) for k, v in got.items()} }")
        assert got["voice"] >= 0.9 * GUARANTEE, got
        assert got["capped"] <= 1.1 * CAP, got  # the cap holds...
        assert got["capped"] >= 0.8 * CAP, got  # ...and TCP through the policer still gets near it
        assert got["bulk"] > 0.1 * CAPACITY, got  # low still gets what is left
        assert sum(got.values()) <= 1.1 * CAPACITY, got  # the bottleneck is real

        assert {p.tos >> 2 for p in voice_dscp.packets()} == {46}
        assert {p.tos >> 2 for p in bulk_dscp.packets()} == {10}
        [capped_meter] = meter_drops(s1).keys() - PACKET_IN_METERS
        assert meter_drops(s1)[capped_meter] > 0
        # voice (one-way UDP h1 -> h4) is classified where it enters, not after the link
        assert class_rule_packets(s1, 46) > 0
        assert class_rule_packets(s2, 46) == 0

        mods = controller.metric("sdn_flow_mods_total")
        meter_mods = controller.metric("sdn_meter_mods_total")
        again = controller.sdnctl("policy", "apply", "-f", str(policy_file), "-o", "json")
        assert again.returncode == 0 and '"flow_mods": 0' in again.stdout, again.stdout
        assert controller.metric("sdn_flow_mods_total") == mods
        assert controller.metric("sdn_meter_mods_total") == meter_mods

        controller.stop(signal.SIGKILL)  # a restarted controller finds the meters in place
        controller.start()
        controller.wait_topology(2, 1)
        time.sleep(3.5)  # past the reconcile grace period
        assert controller.metric("sdn_flow_mods_total") == 0
        assert controller.metric("sdn_meter_mods_total") == 0
        assert meter_drops(s1).keys() == {capped_meter, *PACKET_IN_METERS}


NETNS = "qos-tc"


@pytest.fixture
def veth():
    """A veth pair in a namespace of our own: (netns name, interface name)."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        run = ["ip", "netns", "exec", NETNS]
        subprocess.run([*run, "ip", "link", "add", "qos-a", "type", "veth", "peer", "name",
                        "qos-b"], check=True)
        subprocess.run([*run, "ip", "link", "set", "qos-a", "up"], check=True)
        yield run, "qos-a"
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def tc_helper(run: list[str], plan: QueuePlan) -> dict:
    done = subprocess.run([*run, sys.executable, "-m", "sdn.controller.tc_helper", "apply",
                           json.dumps(plan.to_json())], capture_output=True, text=True,
                          timeout=30, check=True)
    return json.loads(done.stdout)


def test_tc_helper_is_idempotent_and_removes_only_its_own(veth):
    run, intf = veth
    plan = plan_queues(load_policy(POLICY), {intf: CAPACITY})
    assert tc_helper(run, plan)["changed"] == [intf]
    classes = subprocess.run([*run, "tc", "class", "show", "dev", intf], capture_output=True,
                             text=True, check=True).stdout
    assert "5d:10 parent 5d:1 prio 0 rate 15Mbit ceil 40Mbit" in classes, classes
    assert tc_helper(run, plan)["unchanged"] == [intf]
    removal = QueuePlan({}, (intf, "qos-none"))
    assert tc_helper(run, removal) == {"changed": [], "unchanged": [], "removed": [intf],
                                       "missing": ["qos-none"]}
    subprocess.run([*run, "tc", "qdisc", "add", "dev", intf, "root", "handle", "5:", "htb"],
                   check=True)
    assert tc_helper(run, removal)["removed"] == []  # not ours: left alone
    assert tc_helper(run, plan)["changed"] == [intf]  # but a plan takes the port over
