"""`sdnctl verify`: a rule deleted and one added by hand are reported by policy object,
then repaired; the switch ends as it was. What the CLI shows reads like Open vSwitch."""

from __future__ import annotations

from sdn.model.cookies import COOKIE_ROUTE, cookie
from testing.harness import dump_flows, network, ping_all
from topologies.sdn_topos import LinearTopo


def test_drift_made_by_hand_is_reported_then_repaired(controller):
    with network(LinearTopo(n=3), controller) as net:
        assert ping_all(net) == []
        s2, h1 = net.get("s2"), net.get("h1")
        clean = controller.sdnctl("verify")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "3 switches checked, 0 rules drifted: in sync" in clean.stdout
        before = dump_flows(s2)

        route = cookie(COOKIE_ROUTE, h1.MAC())
        s2.cmd(f"ovs-ofctl -O OpenFlow13 del-flows s2 cookie={route:#x}/-1")
        s2.cmd("ovs-ofctl -O OpenFlow13 add-flow s2 table=0,priority=4242,ip,actions=drop")
        removed = len(before) - (len(dump_flows(s2)) - 1)
        assert removed >= 1

        drifted = controller.sdnctl("verify")
        assert drifted.returncode == 1, drifted.stdout + drifted.stderr
        lines = drifted.stdout.splitlines()
        assert sum(1 for line in lines if line.startswith("s2: missing")
                   and f"[route to {h1.MAC()} ({h1.IP()})]" in line) == removed
        assert any(line.startswith("s2: extra") and "priority=4242" in line for line in lines)
        assert not any(line.startswith(("s1:", "s3:")) for line in lines)
        assert controller.metric("sdn_drifted_rules") == removed + 1

        repaired = controller.sdnctl("verify", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert f"{removed + 1} rules repaired" in repaired.stdout
        assert dump_flows(s2) == before
        assert controller.sdnctl("verify").returncode == 0
        assert controller.metric("sdn_drifted_rules") == 0
        assert ping_all(net) == []


def test_the_cli_names_ports_and_prints_rules_as_ovs_does(controller):
    with network(LinearTopo(n=2), controller) as net:
        assert ping_all(net) == []
        h1 = net.get("h1")
        flows = controller.sdnctl("flows", "s2")
        assert flows.returncode == 0, flows.stderr
        lines = flows.stdout.splitlines()
        assert lines[0].startswith("s2 (0000000000000002): ")
        assert any("dl_type=0x88cc actions=CONTROLLER:65535  # pipeline" in line
                   for line in lines)
        assert any(f"dl_dst={h1.MAC()}" in line and line.endswith(
            f"# route to {h1.MAC()} ({h1.IP()})") for line in lines)
        topo = controller.sdnctl("topo", "show").stdout
        assert "s1-eth1 <-> s2-eth1" in topo or "s2-eth1 <-> s1-eth1" in topo
        assert f"{h1.MAC()}  {h1.IP()}  at s1-eth2" in topo
        vnfs = controller.sdnctl("vnf", "list")
        assert vnfs.returncode == 0 and vnfs.stdout.strip() == "no VNFs running", vnfs.stderr
