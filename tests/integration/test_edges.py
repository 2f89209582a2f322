"""Trust at the edges: switches that are not who they claim, and stops that must leave
the network as it is."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from sdn.compile.pipeline import METER_ARP_IN
from sdn.model.topology import ADDRESSES_PER_HOST, HOSTS_PER_PORT
from sdn.northbound.service import API_CONNECTIONS, API_IDLE_TIMEOUT
from sdn.policy.source import MAX_POLICY_BYTES
from testing.harness import (
    Capture,
    Controller,
    datapath,
    dump_flows,
    network,
    ping_all,
    scapy_send,
    wait_until,
)
from topologies.sdn_topos import LinearTopo, RingTopo

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


def settled_flows(controller, switch, hosts: int) -> list[str]:
    """The switch's flows once the controller knows every host's address and has sent what
    follows from it (ARP answers): learning is asynchronous to the pings that teach it."""
    wait_until(lambda: sum(bool(h["ips"]) for h in controller.get("/v1/topology")["hosts"])
               == hosts, 10, what="every host's address")
    last: list[list[str]] = [dump_flows(switch)]

    def unchanged() -> bool:
        now = dump_flows(switch)
        same, last[0] = now == last[0], now
        return same

    wait_until(unchanged, 10, interval=0.5, what="the flows to settle")
    return last[0]


def test_a_second_switch_claiming_a_connected_id_is_refused(controller):
    with network(LinearTopo(n=2), controller) as net:
        s1 = net.get("s1")
        assert ping_all(net) == []
        before = settled_flows(controller, s1, hosts=2)
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


def big_policy(classes: int) -> str:
    return "version: 1\nclasses:\n" + "".join(
        f"  - {{name: c{i}, match: {{proto: tcp, dst_port: {1000 + i}}}, priority: low}}\n"
        for i in range(classes))


def test_heavy_requests_do_not_stall_the_switches(controller):
    """A maximal body and a 4,000-class policy: validation and compilation leave the
    event loop free, so no link ages out, no switch drops, traffic flows."""
    with network(RingTopo(n=4), controller) as net:
        assert ping_all(net) == []
        api = f"http://{controller.api}/v1/policy"
        padding = "# " + "x" * 1000 + "\n"
        maximal = big_policy(10) + padding * ((MAX_POLICY_BYTES - 2000) // len(padding))
        assert requests.post(api, json={"text": maximal, "dry_run": True},
                             timeout=120).status_code == 200
        too_big = requests.post(api, data=b"x" * (MAX_POLICY_BYTES + (128 << 10)), timeout=60)
        assert too_big.status_code == 413
        applied = requests.post(api, json={"text": big_policy(4000)}, timeout=300)
        assert applied.status_code == 200 and applied.json()["changed"]
        assert ping_all(net) == []
        topo = controller.get("/v1/topology")
        assert len(topo["links"]) == 4 and all(s["connected"] for s in topo["switches"])
        log = controller.log_file.read_text()
        assert "timed out (no LLDP)" not in log and "disconnected" not in log


def test_a_random_source_arp_flood_neither_hurts_known_hosts_nor_bloats_tables(controller):
    """h3 sends 2,000 ARP requests from random MACs and addresses while h1 pings h2 at
    100 pps: the ping loses nothing, the switches meter what they send the controller,
    and the hosts learned (so the rules on every switch) stay bounded."""
    with network(LinearTopo(n=3), controller) as net:
        h1, h2, h3 = net.get("h1", "h2", "h3")
        assert ping_all(net) == []
        rules_before = len(dump_flows(net.get("s1")))
        stream = h1.popen(["ping", "-n", "-i", "0.01", "-c", "500", h2.IP()],
                          stdout=subprocess.PIPE, text=True)
        scapy_send(h3, f"""
frames = [Ether(src=RandMAC()._fix(), dst="ff:ff:ff:ff:ff:ff")
          / ARP(op=1, hwsrc=RandMAC()._fix(), psrc=RandIP("10.0.0.0/8")._fix(),
                pdst="{h1.IP()}") for _ in range(2000)]
sendp(frames, iface="{h3.defaultIntf()}")
""")
        out, _ = stream.communicate(timeout=60)
        assert " 0% packet loss" in out, out[-300:]
        hosts = controller.get("/v1/topology")["hosts"]
        assert len(hosts) <= 3 + HOSTS_PER_PORT
        rules_after = len(dump_flows(net.get("s1")))
        assert rules_after - rules_before <= 2 * HOSTS_PER_PORT * (1 + ADDRESSES_PER_HOST)
        arp_in = controller.metric('sdn_packet_in_total{kind="arp"}')
        assert 100 < arp_in < 1500  # the flood arrived, metered
        assert meter_drops(net.get("s3"), METER_ARP_IN) > 500
        assert ping_all(net) == []


def meter_drops(switch, meter_id: int) -> int:
    out = switch.cmd("ovs-ofctl -O OpenFlow13 meter-stats", switch.name, f"meter={meter_id}")
    return sum(int(n) for n in re.findall(r"packet_count:(\d+)", out.split("bands:", 1)[-1]))



def test_a_host_repeating_anothers_mac_and_address_diverts_nothing(controller, tmp_path):
    """h3 sends frames from h2's MAC and ARP claiming h2's address every 50 ms for 3 s
    while h1 pings h2: the controller asks h2, h2 answers, nothing moves; h3 receives
    none of the echo requests meant for h2."""
    with network(LinearTopo(n=3), controller) as net:
        h1, h2, h3 = net.get("h1", "h2", "h3")
        assert ping_all(net) == []
        capture = Capture(h3, f"icmp and dst host {h2.IP()}", tmp_path / "h3.pcap")
        stream = h1.popen(["ping", "-n", "-i", "0.075", "-c", "40", h2.IP()],
                          stdout=subprocess.PIPE, text=True)
        scapy_send(h3, f"""
import time
spoof = Ether(src="{h2.MAC()}", dst="{h1.MAC()}") / IP(src="{h2.IP()}", dst="{h1.IP()}") / UDP()
claim = Ether(src="{h3.MAC()}", dst="{h1.MAC()}") / ARP(op=2, hwsrc="{h3.MAC()}",
            psrc="{h2.IP()}", hwdst="{h1.MAC()}", pdst="{h1.IP()}")
for _ in range(60):
    sendp([spoof, claim], iface="{h3.defaultIntf()}")
    time.sleep(0.05)
""")
        out, _ = stream.communicate(timeout=30)
        diverted = capture.packets(timeout=1)
        assert diverted == [], f"{len(diverted)} echo requests for h2 reached h3"
        received = int(re.search(r"(\d+) received", out).group(1))
        assert received >= 38, out[-300:]
        assert controller.metric("sdn_host_probes_total") > 0
        assert controller.metric("sdn_arp_spoofed_total") > 0
        host = next(h for h in controller.get("/v1/topology")["hosts"] if h["mac"] == h2.MAC())
        assert host["ips"] == [h2.IP()] and host["switch"] == net.get("s2").dpid


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at `path`, unmounted afterwards."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_an_apply_the_store_cannot_record_changes_nothing(tmp_path):
    voice = ("version: 1\nclasses:\n  - {name: voice, match: {proto: udp, dst_port: 5004}, "
             "priority: high}\n")
    with small_disk(tmp_path / "state") as state:
        ctl = Controller(state).start()
        try:
            with network(LinearTopo(n=2), ctl) as net:
                assert ping_all(net) == []
                before = {s.name: dump_flows(s) for s in net.switches}
                filler = state / "filler"
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                               capture_output=True)  # until the disk is full
                api = f"http://{ctl.api}/v1/policy"
                refused = requests.post(api, json={"text": voice}, timeout=60)
                assert refused.status_code == 409, refused.text
                assert "revision store" in refused.json()["description"]
                assert {s.name: dump_flows(s) for s in net.switches} == before
                filler.unlink()
                assert requests.get(f"{api}/history", timeout=10).json() == []
                applied = requests.post(api, json={"text": voice}, timeout=60)
                assert applied.status_code == 200 and applied.json()["revision"]["rev"] == 1
                assert {s.name: dump_flows(s) for s in net.switches} != before
                assert ping_all(net) == []
        finally:
            ctl.stop()


def test_idle_connections_cannot_hold_the_api(controller):
    """More idle connections than the API serves at once: a real request still gets its
    answer, and the idle ones are dropped after the idle timeout."""
    idle = [socket.create_connection(("127.0.0.1", controller.api_port))
            for _ in range(API_CONNECTIONS + 44)]
    try:
        started = time.monotonic()
        health = requests.get(f"http://{controller.api}/v1/health", timeout=3 * API_IDLE_TIMEOUT)
        assert health.status_code == 200
        assert time.monotonic() - started < 2 * API_IDLE_TIMEOUT
        idle[0].settimeout(2 * API_IDLE_TIMEOUT)
        assert idle[0].recv(1) == b""  # closed by the server
    finally:
        for conn in idle:
            conn.close()
    assert controller.errors() == []
