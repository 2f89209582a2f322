"""`sdnctl trace` checked against Open vSwitch itself: for random flows, at every switch
the trace visits, the ports `ovs-appctl ofproto/trace` sends the same packet out of are
among the ports our trace says (ECMP: the switch picks one of the paths we show); and
through a live chain of VNFs, both ways, hop by hop against Open vSwitch as well."""

from __future__ import annotations

import json
import random
import re

import pytest

from testing.harness import network, ping_all
from tests.integration.test_chains import BACKENDS, CLIENT, INTRUDER, VIP, chained_network
from tests.integration.test_chains import POLICY as CHAIN_POLICY
from topologies.sdn_topos import FatTreeTopo, RingTopo

pytestmark = pytest.mark.integration
FLOWS = 6
OUTPUT = re.compile(r"^\s*output:(\d+)\s*$", re.M)
RECIRC = re.compile(r"recirc\((0x[0-9a-f]+)\)")
DP_HASHES = (0, 1, 2, 3, 0x55, 0xAA)


def ovs_outputs(switch, in_port: int, pkt: dict) -> set[int]:
    """The OpenFlow ports Open vSwitch's own trace sends `pkt` out of. A select group on
    the userspace datapath hashes and recirculates: the trace is taken on from there for
    a few hash values (each picks a bucket, as flows with different 5-tuples would)."""
    proto = {6: "tcp", 17: "udp"}[pkt["ip_proto"]]
    vlan = f"dl_vlan={pkt['vlan_vid']}," if "vlan_vid" in pkt else ""
    fields = (f"in_port={in_port},{vlan}dl_src={pkt['eth_src']},dl_dst={pkt['eth_dst']},"
              f"nw_src={pkt['ipv4_src']},nw_dst={pkt['ipv4_dst']},"
              f"{proto}_src={pkt[proto + '_src']},{proto}_dst={pkt[proto + '_dst']}")
    out = _ofproto_trace(switch, f"{proto},{fields}")
    outputs = {int(port) for port in OUTPUT.findall(out)}
    recirc = RECIRC.search(out)
    if recirc:
        for dp_hash in DP_HASHES:
            again = _ofproto_trace(switch, f"{proto},recirc_id={recirc.group(1)},"
                                           f"dp_hash={dp_hash},{fields}")
            outputs |= {int(port) for port in OUTPUT.findall(again)}
    return outputs


def _ofproto_trace(switch, flow: str) -> str:
    out = switch.cmd("ovs-appctl", "ofproto/trace", switch.name, flow)
    assert "Datapath actions" in out, out
    return out


def agrees_with_ovs(net, traced: dict) -> int:
    """Every visit of `traced`: Open vSwitch, given the packet as it entered that switch,
    sends it out of some of the ports the trace says (and of none when it says none)."""
    for visit in traced["visits"]:
        ours = {o["port_no"] for o in visit["out"]}
        theirs = ovs_outputs(net.get(visit["switch"]), visit["in_port_no"], visit["packet"])
        assert theirs <= ours and bool(theirs) == bool(ours), (visit["switch"], theirs, ours)
    return len(traced["visits"])


def trace_json(controller, *args: str) -> dict:
    result = controller.sdnctl("trace", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_flows(net, controller, installed: bool = False) -> int:
    rng = random.Random(7)
    checked = 0
    for _ in range(FLOWS):
        src, dst = rng.sample(net.hosts, 2)
        proto = rng.choice(["tcp", "udp"])
        traced = trace_json(controller, src.IP(), dst.IP(), "--proto", proto, "--sport",
                            str(rng.randrange(1024, 65535)), "--dport",
                            str(rng.randrange(1, 65535)), *(["--installed"] if installed else []))
        # Hosts the policy does not name are known by their MAC.
        assert traced["outcome"]["delivered"] in ([dst.name], [dst.MAC()]), traced["outcome"]
        checked += agrees_with_ovs(net, traced)
    return checked


def test_trace_agrees_with_open_vswitch_on_a_ring(controller):
    with network(RingTopo(n=4), controller) as net:
        assert ping_all(net) == []
        assert check_flows(net, controller) >= FLOWS * 2
        assert check_flows(net, controller, installed=True) >= FLOWS * 2


def test_trace_agrees_with_open_vswitch_on_a_fat_tree(controller):
    with network(FatTreeTopo(k=4), controller) as net:
        assert ping_all(net) == []
        assert check_flows(net, controller) >= FLOWS * 2


def test_trace_through_the_web_chain_and_back(controller, tmp_path):
    """The chain fw -> lb -> mon on a live network: the request reaches both backends
    (one per Maglev choice) through the three VNFs, the answer comes back through them
    from the VIP, and a client the firewall does not allow is dropped there."""
    with chained_network(controller, tmp_path, CHAIN_POLICY) as net:
        def run(*args: str) -> dict:
            traced = trace_json(controller, *args)
            agrees_with_ovs(net, traced)  # hop by hop, VLAN tags and NAT included
            return traced

        request = run(CLIENT, VIP, "--proto", "tcp", "--sport", "40000", "--dport", "80")
        backends = {net.get(name).MAC() for name in ("h5", "h6")}
        assert set(request["outcome"]["delivered"]) == backends, request["outcome"]
        assert request["outcome"]["through_vnfs"] == ["fw", "lb", "mon"]
        verdicts = {(n["vnf"], n["verdict"]) for n in request["vnfs"]}
        assert ("fw", "allow by rule 1") in verdicts
        assert any(vnf == "lb" and "10.0.0.5, 10.0.0.6" in v for vnf, v in verdicts)

        answer = run(CLIENT, VIP, "--proto", "tcp", "--sport", "40000", "--dport", "80",
                     "--reply")
        assert answer["outcome"]["delivered"] == [net.get("h1").MAC()], answer["outcome"]
        assert answer["outcome"]["through_vnfs"] == ["fw", "lb", "mon"]
        assert answer["packet"]["ipv4_src"] in BACKENDS

        denied = run(INTRUDER, VIP, "--proto", "tcp", "--sport", "40000", "--dport", "80")
        assert denied["outcome"]["delivered"] == [] and denied["outcome"]["dropped"]
        assert [n["verdict"] for n in denied["vnfs"] if n["vnf"] == "fw"] == [
            "drop by default (no rule matches)"]
        rng = random.Random(11)
        for _ in range(FLOWS):  # traffic the chain does not select, among the VNFs' rules
            src, dst = rng.sample(net.hosts, 2)
            run(src.IP(), dst.IP(), "--proto", "tcp", "--sport", "40000", "--dport",
                str(rng.randrange(1, 65535)))


def test_policy_diff_says_which_traffic_changes(controller, tmp_path):
    with chained_network(controller, tmp_path, CHAIN_POLICY):
        shorter = tmp_path / "shorter.yaml"
        shorter.write_text(CHAIN_POLICY.replace("through: [fw, lb, mon]", "through: [fw, mon]"))
        result = controller.sdnctl("policy", "diff", "-f", str(shorter), "-o", "json")
        assert result.returncode == 0, result.stderr
        behaviour = json.loads(result.stdout)["behaviour"]
        web = [c for c in behaviour if c["traffic"].endswith(f"{VIP} tcp/80")]
        assert len(web) == 1, behaviour
        assert "via fw→lb→mon" in web[0]["before"], web[0]
        assert "via fw→mon" in web[0]["after"] and "lb" not in web[0]["after"], web[0]
        table = controller.sdnctl("policy", "diff", "-f", str(shorter))
        assert "traffic that changes (" in table.stdout and "becomes" in table.stdout
