"""Service chains on real switches: client -> firewall -> load balancer -> analyzer ->
web backends, and the replies back through the same instances, asserted on captures taken
inside the VNFs' and hosts' namespaces."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import time
from pathlib import Path

import pytest

from testing.harness import Capture, VnfPort, http_get, network, ping, wait_until, web_servers
from topologies.sdn_topos import LinearTopo

VIP, CLIENT, INTRUDER, BACKENDS = "10.0.0.100", "10.0.0.1", "10.0.0.2", ("10.0.0.5", "10.0.0.6")
POLICY = f"""\
version: 1
vnfs:
  fw:  {{type: firewall, switch: s1, failure_mode: closed, default: drop,
        rules: [{{action: allow, proto: tcp, src: {CLIENT}, dst: {VIP}, dst_port: 80}}]}}
  lb:  {{type: loadbalancer, switch: s2, vip: {VIP}, port: 80,
        backends: [{BACKENDS[0]}, {BACKENDS[1]}]}}
  mon: {{type: analyzer, switch: s3, failure_mode: open}}
chains:
  - {{name: web, match: {{proto: tcp, dst: {VIP}, dst_port: 80}}, through: [fw, lb, mon]}}
"""


def vnf_stats(controller, name: str) -> dict:
    status = next(v for v in controller.get("/v1/vnfs")["vnfs"] if v["name"] == name)
    return json.loads(Path(status["stats_file"]).read_text())


def load_balancers(controller) -> list[str]:
    """The load balancer's instances: `lb`, or its replicas `lb-0`, `lb-1`..."""
    return sorted(v["name"] for v in controller.get("/v1/vnfs")["vnfs"]
                  if v["name"] == "lb" or v["name"].startswith("lb-"))


def backends_healthy(controller) -> bool:
    def healthy(name: str) -> bool:
        lb = vnf_stats(controller, name)["function"]
        return "backends" in lb and all(b.get("healthy") for b in lb["backends"].values())

    names = load_balancers(controller)
    return bool(names) and all(healthy(name) for name in names)


def backend_counts(controller, name: str, counter: str) -> dict[str, int]:
    backends = vnf_stats(controller, name)["function"]["backends"]
    return {key: b[counter] for key, b in backends.items()}


@contextlib.contextmanager
def chained_network(controller, tmp_path: Path, policy_text: str):
    """Linear s1-s2-s3, two hosts each; web servers on h5 and h6; the policy applied."""
    with (network(LinearTopo(n=3, hosts_per_switch=2), controller) as net,
          web_servers(net, ("h5", "h6"), tmp_path / "www")):
        policy = tmp_path / "chain.yaml"
        policy.write_text(policy_text)
        controller.apply(policy)
        wait_until(lambda: all(v["state"] == "running"
                               for v in controller.get("/v1/vnfs")["vnfs"]), 20,
                   what="VNFs running")
        for host in net.hosts:  # every host known to the controller
            ping(host, "10.0.0.3")
        wait_until(lambda: backends_healthy(controller), 20, what="backends healthy")
        yield net


@pytest.fixture
def web(controller, tmp_path):
    with chained_network(controller, tmp_path, POLICY) as net:
        yield net


def captures(tmp_path: Path, bpf: str) -> dict[str, Capture]:
    return {name: Capture(VnfPort(name), bpf, tmp_path / f"{name}.pcap")
            for name in ("fw", "lb", "mon")}


def test_chain_order_nat_and_spread(web, controller, tmp_path):
    client = web.get("h1")
    caps = captures(tmp_path, "tcp port 80")
    at_client = Capture(client, "tcp port 80", tmp_path / "client.pcap")
    bodies = [http_get(client, f"http://{VIP}/id") for _ in range(16)]
    assert None not in bodies, bodies
    assert set(bodies) == {"h5", "h6"}  # both backends serve

    packets = {name: cap.packets() for name, cap in caps.items()}
    first_syn = {}
    for name, pkts in packets.items():
        # the client's SYNs (the load balancer's health checks cross mon too)
        syns = [p for p in pkts if p["TCP"].flags == "S" and p["IP"].src == CLIENT]
        assert syns, f"no SYN seen in {name}"
        first_syn[name] = float(syns[0].time)
    assert first_syn["fw"] <= first_syn["lb"] <= first_syn["mon"], first_syn
    # Before the load balancer the destination is the VIP, after it a backend.
    assert {p["IP"].dst for p in packets["fw"] if p["TCP"].dport == 80} == {VIP}
    assert {p["IP"].dst for p in packets["mon"] if p["TCP"].dport == 80} <= set(BACKENDS)
    # Replies came back through the VNFs: the analyzer and the firewall saw them too.
    assert any(p["TCP"].sport == 80 for p in packets["mon"])
    assert any(p["TCP"].sport == 80 and p["IP"].src == VIP for p in packets["fw"])
    # The client only ever talks to the VIP.
    replies = [p for p in at_client.packets() if p["TCP"].sport == 80]
    assert replies and {p["IP"].src for p in replies} == {VIP}


def lost_in(controller, name: str) -> int:
    """Frames VNF `name` lost so far: ring overruns, send failures, truncated frames."""
    ports = vnf_stats(controller, name)["ports"].values()
    return sum(p["kernel_drops"] + p["tx_errors"] + p["truncated"] for p in ports)


def received_by(controller, name: str) -> int:
    return sum(p["rx_packets"] for p in vnf_stats(controller, name)["ports"].values())


def test_a_3_mb_download_through_the_chain_loses_nothing_in_a_vnf(web, controller, tmp_path):
    blob = os.urandom(3 << 20)
    for backend in ("h5", "h6"):
        (tmp_path / "www" / backend / "blob").write_bytes(blob)
    before = {name: lost_in(controller, name) for name in ("fw", "lb", "mon")}
    received = {name: received_by(controller, name) for name in before}
    code = ("import hashlib, urllib.request as u; "
            f"d = u.urlopen('http://{VIP}/blob', timeout=30).read(); "
            "print(len(d), hashlib.sha256(d).hexdigest())")
    got = web.get("h1").cmd(f"python3 -c {shlex.quote(code)}").split()
    assert got == [str(len(blob)), hashlib.sha256(blob).hexdigest()], got
    time.sleep(1.5)  # the workers report once a second
    assert {name: lost_in(controller, name) for name in before} == before
    # it went through them: at least one frame per 1,500 bytes in each
    assert all(received_by(controller, n) - received[n] >= len(blob) // 1500 for n in before)


def test_denied_and_unchained_traffic(web, controller, tmp_path):
    intruder, backend = web.get("h2"), web.get("h5")
    at_backend = Capture(backend, f"host {INTRUDER}", tmp_path / "backend.pcap")
    caps = captures(tmp_path, "icmp")
    assert http_get(intruder, f"http://{VIP}/id", timeout=2) is None
    assert ping(web.get("h1"), "10.0.0.5", count=3).received == 3  # no chain: plain route
    assert [p for p in at_backend.packets() if p.haslayer("TCP")] == []
    for name, cap in caps.items():
        assert cap.packets() == [], f"unchained ICMP reached {name}"
    assert vnf_stats(controller, "fw")["function"]["dropped"] >= 1


def test_health_checks_need_no_chain_to_cover_the_vip(controller, tmp_path):
    """A chain for one client only: its src leaves out the VIP the load balancer checks
    from, yet the backends' answers reach the load balancer, so they stay up and serve."""
    narrow = POLICY.replace("match: {proto: tcp, dst:", f"match: {{proto: tcp, src: {CLIENT}, dst:")
    assert narrow != POLICY
    with chained_network(controller, tmp_path, narrow) as net:
        before = backend_counts(controller, "lb", "probes_ok")
        time.sleep(1.5)  # several check intervals (200 ms), long enough to fall (2 misses)
        after = backend_counts(controller, "lb", "probes_ok")
        assert all(after[key] > before[key] for key in before), (before, after)
        assert backends_healthy(controller)
        bodies: set[str | None] = set()
        for _ in range(40):  # connections hash to a backend: 8 all land on one in 1 of 128
            bodies.add(http_get(net.get("h1"), f"http://{VIP}/id"))
            if bodies == {"h5", "h6"}:
                break
        assert bodies == {"h5", "h6"}, bodies


def test_load_balancer_replicas_serve_their_clients_and_check_on_their_own(controller,
                                                                          tmp_path):
    """Two replicas: clients are split by the low bit of their address (h1 -> lb-1,
    h2 -> lb-0), both directions of a connection cross one replica, and each replica's
    health checks are answered to that replica."""
    replicated = POLICY.replace("switch: s2, vip:", "switch: s2, replicas: 2, vip:").replace(
        "through: [fw, lb, mon]", "through: [lb]")
    assert replicated.count("replicas: 2") == 1 and "through: [lb]" in replicated
    with chained_network(controller, tmp_path, replicated) as net:
        assert load_balancers(controller) == ["lb-0", "lb-1"]
        before = {name: backend_counts(controller, name, "probes_ok") for name in ("lb-0", "lb-1")}
        time.sleep(1.5)
        for name in ("lb-0", "lb-1"):
            after = backend_counts(controller, name, "probes_ok")
            assert all(after[k] > before[name][k] for k in after), (name, before[name], after)
        def served() -> dict[str, int]:
            return {name: sum(backend_counts(controller, name, "connections").values())
                    for name in ("lb-0", "lb-1")}

        for client, replica in (("h1", "lb-1"), ("h2", "lb-0")):
            start = served()
            bodies = [http_get(net.get(client), f"http://{VIP}/id") for _ in range(6)]
            assert set(bodies) <= {"h5", "h6"} and None not in bodies, (client, bodies)
            want = {**start, replica: start[replica] + 6}
            wait_until(lambda want=want: served() == want, 5,  # stats files lag a little
                       what=f"{client}'s 6 connections on {replica} only")


def test_a_restarted_controller_takes_over_its_vnfs_state_and_all(web, controller):
    """kill -9 of the controller: the VNF workers keep running, and the restarted
    controller adopts them instead of starting new ones, so a firewall keeps its
    connections (its counters go on from where they were) and no rule changes."""
    client = web.get("h1")
    assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
    pids = {v["name"]: v["pid"] for v in controller.get("/v1/vnfs")["vnfs"]}
    assert len(pids) == 3 and None not in pids.values(), pids
    allowed = wait_until(lambda: vnf_stats(controller, "fw")["function"]["allowed"], 5,
                         what="the firewall's stats to show the connection")

    controller.stop(signal.SIGKILL)
    controller.start()
    controller.wait_topology(3, 2)
    wait_until(lambda: {v["name"]: v["pid"] for v in controller.get("/v1/vnfs")["vnfs"]
                        if v["state"] == "running"} == pids, 20,
               what="the same VNF workers running under the new controller")
    time.sleep(3.5)  # past the reconcile grace period
    assert controller.metric("sdn_flow_mods_total") == 0
    assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
    wait_until(lambda: vnf_stats(controller, "fw")["function"]["allowed"] > allowed, 5,
               what="the firewall counting on from where it was")
    assert controller.errors() == []


def port_state(net, switch: str, port: str, up: bool) -> None:
    net.get(switch).cmd(f"ovs-ofctl -O OpenFlow13 mod-port {switch} {port} "
                        f"{'up' if up else 'down'}")


def test_fail_open_bypasses_fail_closed_blocks(web, controller):
    client = web.get("h1")
    assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")

    port_state(web, "s3", "vmon-i", up=False)  # the analyzer is fail-open
    time.sleep(1.0)
    assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
    port_state(web, "s3", "vmon-i", up=True)

    port_state(web, "s1", "vfw-i", up=False)  # the firewall is fail-closed
    time.sleep(1.0)
    assert http_get(client, f"http://{VIP}/id", timeout=2) is None
    port_state(web, "s1", "vfw-i", up=True)
    assert wait_until(lambda: http_get(client, f"http://{VIP}/id") in ("h5", "h6"), 10,
                      what="chain restored")
