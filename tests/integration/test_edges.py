"""Trust at the edges: switches that are not who they claim, and stops that must leave
the network as it is."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from testing.harness import Controller, datapath, dump_flows, network, ping_all, wait_until
from topologies.sdn_topos import LinearTopo

REFUSED = "sdn_switch_connections_refused_total"


@contextlib.contextmanager
def impostor(dpid: str, ofp_port: int, name: str = "imp9") -> Iterator[str]:
    """An Open vSwitch bridge that claims datapath id `dpid`, pointed at the controller."""
    kind = "system" if datapath() == "kernel" else "netdev"
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", name, "--", "set", "bridge", name,
                    f"datapath_type={kind}", f"other-config:datapath-id={dpid}",
                    "fail-mode=secure", "protocols=OpenFlow13", "--", "set-controller", name,
                    f"tcp:127.0.0.1:{ofp_port}"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", name], check=True)


def flows_of(bridge: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", bridge],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "priority" in line]


def test_a_second_switch_claiming_a_connected_id_is_refused(controller):
    with network(LinearTopo(n=2), controller) as net:
        s1 = net.get("s1")
        assert ping_all(net) == []
        before = dump_flows(s1)
        with impostor(s1.dpid, controller.ofp_port) as bridge:
            wait_until(lambda: controller.metric(f'{REFUSED}{{reason="connected"}}') >= 1, 20,
                       what="the impostor refused")
            assert flows_of(bridge) == []  # it was sent nothing
            assert dump_flows(s1) == before
            assert ping_all(net) == []
        topo = controller.get("/v1/topology")
        assert all(s["connected"] for s in topo["switches"]) and len(topo["switches"]) == 2
        assert dump_flows(s1) == before and ping_all(net) == []
    assert any("refused a connection" in line and s1.dpid in line
               for line in controller.log_file.read_text().splitlines())


def test_only_allowed_switches_are_taken_in(tmp_path):
    ctl = Controller(tmp_path / "ctl", extra_args=("--allow-dpid", "1")).start()
    try:
        with network(LinearTopo(n=2), ctl, wait=False) as net:
            wait_until(lambda: ctl.metric(f'{REFUSED}{{reason="not allowed"}}') >= 1, 20,
                       what="s2 refused")
            topo = ctl.wait_topology(1, 0)
            assert [s["dpid"] for s in topo["switches"]] == [net.get("s1").dpid]
            assert dump_flows(net.get("s2")) == []
    finally:
        ctl.stop()
    assert ctl.errors() == []
