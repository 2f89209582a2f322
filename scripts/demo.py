"""`make demo`: the whole product on one machine, with a readable report.

A ring of four Open vSwitch switches (loops on purpose) with two hosts each, the
controller, and `examples/demo.yaml`: web traffic to a virtual IP goes through a firewall,
a Maglev load balancer and an analyzer to two web servers; traffic classes mark, cap and
guarantee. The demo sends allowed and forbidden HTTP requests, bulk TCP and voice-like
UDP, then reports what each part saw. Exits non-zero if any check fails.
Needs root, Open vSwitch and Mininet (`make setup` installs them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testing.harness import (  # noqa: E402
    Controller,
    http_get,
    iperf3_tcp,
    network,
    ping,
    ping_all,
    reap_vnfs,
    stop_process,
    wait_until,
    web_servers,
)
from topologies.sdn_topos import RingTopo  # noqa: E402

POLICY = REPO / "examples/demo.yaml"
VIP = "10.0.0.100"
WEB_SERVERS = ("h5", "h6")
REQUESTS = 24


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def line(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)


def sdnctl(controller: Controller, *args: str) -> str:
    result = controller.sdnctl(*args)
    if result.returncode != 0:
        raise RuntimeError(f"sdnctl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def vnf_status(controller: Controller) -> dict[str, dict]:
    return {v["name"]: v for v in controller.get("/v1/vnfs")["vnfs"]}


def vnf_stats(controller: Controller, name: str) -> dict:
    return json.loads(Path(vnf_status(controller)[name]["stats_file"]).read_text())


def main() -> int:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="sdn-demo-") as tmp:
        controller = Controller(Path(tmp) / "controller").start()
        try:
            run(controller, report, Path(tmp))
        finally:
            controller.stop()
            reap_vnfs()
        errors = controller.errors()
        report.check(not errors, f"controller log free of errors ({len(errors)} found)")
        for line in errors[:5]:
            report.line(line)
    verdict = "FAILED: " + "; ".join(report.failures) if report.failures else "all checks passed"
    print(f"\n{verdict}")
    return 1 if report.failures else 0


def run(controller: Controller, report: Report, tmp: Path) -> None:
    report.section("network: a ring of 4 switches, 2 hosts each (loops on purpose)")
    with network(RingTopo(n=4, hosts_per_switch=2), controller) as net:
        topo = controller.get("/v1/topology")
        report.line(f"the controller sees {len(topo['switches'])} switches and "
                    f"{len(topo['links'])} links")
        with web_servers(net, WEB_SERVERS, tmp / "www"):
            connectivity(controller, net, report)
            apply_policy(controller, net, report)
            web_traffic(controller, net, report)
            classes(net, report)
            vnf_report(controller, report)


def connectivity(controller: Controller, net, report: Report) -> None:
    report.section("routing: proactive shortest paths, ECMP, fast failover, loop-free flooding")
    started = time.monotonic()
    failures = ping_all(net)
    pairs = len(net.hosts) * (len(net.hosts) - 1)
    report.check(not failures, f"{pairs - len(failures)}/{pairs} host pairs reach each other "
                               f"exactly once ({time.monotonic() - started:.1f}s)")
    for line in sdnctl(controller, "path", "10.0.0.1", "10.0.0.5").splitlines():
        report.line(line)


def apply_policy(controller: Controller, net, report: Report) -> None:
    report.section(f"policy: sdnctl policy apply -f {POLICY.relative_to(REPO)}")
    for line in sdnctl(controller, "policy", "apply", "-f", str(POLICY)).splitlines()[:1]:
        report.line(line)
    running = wait_until(lambda: (v := vnf_status(controller)) and all(
        x["state"] == "running" for x in v.values()) and v, 30, what="VNFs running")
    for name, vnf in sorted(running.items()):
        report.line(f"{name:4} {vnf['kind']:13} netns {vnf['netns']:9} on {vnf['switch']} "
                    f"ports in={vnf['ports']['ingress']} out={vnf['ports']['egress']}")
    report.check(set(running) == {"fw", "lb", "mon"}, "3 VNFs running in their namespaces")
    for host in net.hosts:  # hosts speak, so the controller knows them all
        ping(host, "10.0.0.3")
    healthy = wait_until(lambda: all(
        b["healthy"] for b in vnf_stats(controller, "lb")["function"]["backends"].values()),
        30, what="load balancer backends healthy")
    report.check(bool(healthy), "load balancer health checks see both web servers")


def web_traffic(controller: Controller, net, report: Report) -> None:
    report.section("chain web: client -> fw (s1) -> lb (s2) -> mon (s3) -> web servers")
    client, intruder = net.get("h1"), net.get("h2")
    answers = Counter(http_get(client, f"http://{VIP}/id") for _ in range(REQUESTS))
    report.line(f"h1 -> http://{VIP}/: " + ", ".join(
        f"{k or 'failed'} {v}" for k, v in sorted(answers.items(), key=str)))
    report.check(answers[None] == 0, f"{REQUESTS - answers[None]}/{REQUESTS} allowed "
                                     f"requests answered")
    report.check(all(answers[s] for s in WEB_SERVERS), "both web servers behind the VIP serve")
    blocked = [http_get(intruder, f"http://{VIP}/id", timeout=1.5) for _ in range(3)]
    report.check(blocked == [None] * 3, "h2's requests are blocked by the firewall (3/3)")


def classes(net, report: Report) -> None:
    report.section("traffic classes: bulk capped at 100 Mbit/s, voice guaranteed 20 Mbit/s")
    bulk = iperf3_tcp(net.get("h3"), net.get("h7"), seconds=3, omit=1)
    report.line(f"bulk  h3 -> h7 TCP :5201  {bulk / 1e6:6.1f} Mbit/s")
    report.check(bulk <= 110e6, "bulk stays within 10% of its 100 Mbit/s cap")
    voice = udp_stream(net.get("h4"), net.get("h8"), port=5004, mbps=20, seconds=3)
    report.line(f"voice h4 -> h8 UDP :5004  {voice['mbps']:6.1f} Mbit/s, "
                f"loss {voice['loss']:.1%}")
    report.check(voice["mbps"] >= 18 and voice["loss"] < 0.05, "voice gets its 20 Mbit/s")


def udp_stream(client, server, port: int, mbps: int, seconds: int) -> dict:
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: f":{port}" in server.cmd("ss -ltn"), 5, what="iperf3 server")
        out = json.loads(client.cmd(f"iperf3 -c {server.IP()} -p {port} -u -b {mbps}M "
                                    f"-t {seconds} -J"))
        end = out["end"]["sum"]
        return {"mbps": end["bits_per_second"] / 1e6 * (1 - end["lost_percent"] / 100),
                "loss": end["lost_percent"] / 100}
    finally:
        stop_process(srv)


def vnf_report(controller: Controller, report: Report) -> None:
    report.section("what the network functions saw")
    status = vnf_status(controller)
    for name in ("fw", "lb", "mon"):
        v = status[name]
        report.line(f"{name:4} rx {v['rx_packets']:6} tx {v['tx_packets']:6} packets, "
                    f"drops {v['drops']}, malformed {v['malformed']}, restarts {v['restarts']}")
        report.check(v["rx_packets"] > 0, f"{name} saw the chain's packets")
    fw = vnf_stats(controller, "fw")["function"]
    report.line(f"firewall: {fw['allowed']} connections allowed, {fw['denied']} packets "
                f"denied, {fw['established']} established packets passed")
    report.check(fw["denied"] >= 3, "the firewall counted the blocked attempts")
    lb = vnf_stats(controller, "lb")["function"]
    for key, backend in sorted(lb["backends"].items()):
        report.line(f"load balancer -> {key}: {backend.get('connections', 0)} connections, "
                    f"healthy={backend['healthy']}")
    mon = vnf_stats(controller, "mon")["function"]
    report.line(f"analyzer: {mon['flows_created']} flows, protocols "
                + ", ".join(f"{p} {c['packets']}" for p, c in mon["protocols"].items()))
    for talker in mon["top_talkers"][:4]:
        report.line(f"   top talker {talker['host']:12} {talker['bytes']:8} bytes")
    report.check(mon["flows_created"] >= REQUESTS, "the analyzer recorded every web flow")


if __name__ == "__main__":
    sys.exit(main())
