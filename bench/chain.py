"""The service chain end to end: firewall -> load balancer -> analyzer, against Linux bridges.

    sudo .venv/bin/python -m bench chain        (or: -m bench.chain [--rounds N])

One Mininet network (linear s1-s2-s3, two hosts each: h1 h2 on s1, h3 h4 on s2, h5 h6 on
s3), one controller, one policy applied with `sdnctl policy apply`, and in it side by side:

- the real chain, twice: firewall `fwon` (`offload: true`) and `fwoff` (`offload: false`) on
  s1, load balancers for VIP 10.0.0.100 on s2 (`lbon`/`lboff` for TCP to port 5201/5202,
  `lbuon`/`lbuoff` for UDP; one backend, h5, listening on the same port), the analyzer `mon`
  on s3. VIP:5201 is the chain with offload on, VIP:5202 the one with offload off. Two load
  balancers per protocol because a chain to a VIP must leave `src` open (a load balancer's
  health-check replies only reach it through a chain's reverse match), so the port is what
  tells the two chains apart.
- the baseline: three more VNFs `brfw`, `brlb`, `brmon` on the same three switches, chained
  for traffic to h6 (on s3, beside h5), whose worker is a Linux bridge joining the
  namespace's `ingress` and `egress` interfaces: same controller, same steering (classifier,
  VLAN tag to the arm's switch, pop, arm, return rule, next hop), same veth arms and
  namespaces, no Python in the packet path. How: the runtime starts workers with the
  command in $SDN_VNF_WORKER when it is set (its hook for test doubles); the bench points it
  at this file, which `exec`s the real `python -m nfv.datapath.worker` for every VNF but the `br*`
  ones, and for those builds the bridge and keeps the stats file fresh, so the runtime's
  supervision sees a healthy VNF. No product code knows about the bench. A bridge cannot
  NAT, so the baseline client targets its server (h6) directly.
- `direct`: h1 -> h5 on a port no chain matches: the network without any chain.

Every VNF is `failure_mode: closed`: a VNF the controller thought dead drops its chain's
traffic and shows as a failure, instead of being bypassed and looking fast. The client is
always h1.

Measured, paths in rotating order, `rounds` times; a figure is the median over the rounds,
a ratio the median of each round's path / that round's bridges (others' load on a shared
machine moves single runs):
- `tcp_mbps`: iperf3 TCP goodput at the receiver (3 s, after a 1 s warm-up left out);
- `pps`: 64-byte frames (iperf3 UDP, 18-byte payload, unpaced, 2 s) that reached the
  receiving iperf3, per second. The firewall settles a UDP flow once a reply came back:
  iperf3's UDP handshake is one, so offload applies to UDP too;
- RTT: a 1-byte TCP echo (TCP_NODELAY, one connection, `rtt_samples` exchanges 5-15 ms
  apart after a 2 s warm-up that lets the offload bypass come up) through chains of 0, 1,
  2, 3 VNFs with offload off: h5:5303 (no chain), h5:5301 [fwoff], h5:5302 [fwoff, mon],
  VIP:5202 [fwoff, lboff, mon]; plus VIP:5201 with offload on and h6 through the bridges.
  A VNF's added RTT is the difference of consecutive chains (10%-trimmed means), its
  detour to the VNF's arms and back included; `bridge` is the bridges' added RTT divided
  by three. The single-VNF differences are noisier than `vnf_mean` (timer effects, below).

Each measurement also records the frames the switches handed to each VNF (tx counters of
the VNFs' switch-side veths: the traffic took the path it should; with offload on the
firewall sees the first second or so of a flow) and the cores the busy processes used
(ovs-vswitchd, the workers; softirq, where a bridge forwards, is also charged to whichever
process was running; `machine` is all busy time, 2.0 = both cores).
`run()` returns {"flows": {path: {"tcp_mbps", "pps", per-round lists, "seen"}}, "vs_bridges":
{"offload_on"|"offload_off": {"tcp_mbps", "pps", per-round lists, "target", "met"}},
"rtt": {"paths",
"added_per_vnf_ms"}, "vnf_restarts", "vnf_modes", "rounds", "seconds"}.
Needs root, Open vSwitch and Mininet; about two minutes with the default three rounds.

Reading the figures on a 2-core machine with Open vSwitch's userspace datapath: the
bottleneck of every path is ovs-vswitchd's one forwarding thread (about 1.0 core busy in
every TCP run), and each chained packet crosses the switches twice as often as a direct
one. A bridge forwards in softirq, mostly inside ovs-vswitchd's own send, so its work
lands on that thread (`seen.cores`: ovs-vswitchd 1.0, the machine 1.1); a Python VNF does
its part on the other core. That is why the bridges can be slower than the real chain
here; with the kernel datapath the comparison would differ. The 64-byte runs keep both
cores busy (the unpaced iperf3 sender takes one). The offload bypass comes up about a
second after a flow starts, so the firewall still sees 20-30% of a TCP run's frames.
Until the VNF rings moved from TPACKET_V3 to V2 (2026-11-28) the round trip a Python VNF
added was mostly V3's 1 ms block-retire timer (~1.5 ms per VNF here); `python -m
bench.vnf_pps` now measures ~0.1 ms per VNF unloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIP = "10.0.0.100"
PORT_ON, PORT_OFF = 5201, 5202  # the VIP's ports: chain with offload on / with offload off
H5, H6 = "10.0.0.5", "10.0.0.6"
RTT_PORTS = {"fw": 5301, "fw_mon": 5302, "direct": 5303}
BRIDGE_PREFIX = "br"  # VNFs whose names start with it get a Linux bridge as their worker
BRIDGE_DEV = "br0"  # inside the VNF's own namespace: no name clash possible
LOAD_BALANCERS = ("lbon", "lboff", "lbuon", "lbuoff")
OVS_PIDFILE = Path("/run/openvswitch/ovs-vswitchd.pid")
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATS_SETTLE = 1.2  # seconds: VNF workers rewrite their stats once a second
WORKER_ENV = "SDN_VNF_WORKER"
WORKER_FLAG = "--vnf-worker"
UDP_PAYLOAD = 18  # + UDP 8 + IPv4 20 + Ethernet 14 = 60 bytes, 64 on the wire with the FCS
TARGETS = {"offload_on": 0.8, "offload_off": 0.5}

VIP_PORTS = f"{PORT_ON}-{PORT_OFF}"
HOP_PORTS = f"{RTT_PORTS['fw']}-{RTT_PORTS['fw_mon']}"
FW_RULES = (f'[{{action: allow, proto: tcp, dst_port: "{VIP_PORTS}"}}, '
            f'{{action: allow, proto: udp, dst_port: "{VIP_PORTS}"}}, '
            f'{{action: allow, proto: tcp, dst_port: "{HOP_PORTS}"}}]')
# Chains to the VIP leave `src` open on purpose: a load balancer's health-check replies
# (backend -> VIP) only reach it through a chain's reverse match (see the report).
POLICY = f"""\
version: 1
vnfs:
  fwon:   {{type: firewall, switch: s1, failure_mode: closed, offload: true, default: drop,
            rules: {FW_RULES}}}
  fwoff:  {{type: firewall, switch: s1, failure_mode: closed, offload: false, default: drop,
            rules: {FW_RULES}}}
  lbon:   {{type: loadbalancer, switch: s2, failure_mode: closed, vip: {VIP}, port: {PORT_ON},
            backends: [{H5}]}}
  lboff:  {{type: loadbalancer, switch: s2, failure_mode: closed, vip: {VIP}, port: {PORT_OFF},
            backends: [{H5}]}}
  lbuon:  {{type: loadbalancer, switch: s2, failure_mode: closed, proto: udp, vip: {VIP},
            port: {PORT_ON}, backends: [{H5}]}}
  lbuoff: {{type: loadbalancer, switch: s2, failure_mode: closed, proto: udp, vip: {VIP},
            port: {PORT_OFF}, backends: [{H5}]}}
  mon:    {{type: analyzer, switch: s3, failure_mode: closed}}
  brfw:   {{type: analyzer, switch: s1, failure_mode: closed}}
  brlb:   {{type: analyzer, switch: s2, failure_mode: closed}}
  brmon:  {{type: analyzer, switch: s3, failure_mode: closed}}
chains:
  - {{name: tcp-on, match: {{proto: tcp, dst: {VIP}, dst_port: {PORT_ON}}},
      through: [fwon, lbon, mon]}}
  - {{name: tcp-off, match: {{proto: tcp, dst: {VIP}, dst_port: {PORT_OFF}}},
      through: [fwoff, lboff, mon]}}
  - {{name: udp-on, match: {{proto: udp, dst: {VIP}, dst_port: {PORT_ON}}},
      through: [fwon, lbuon, mon]}}
  - {{name: udp-off, match: {{proto: udp, dst: {VIP}, dst_port: {PORT_OFF}}},
      through: [fwoff, lbuoff, mon]}}
  - {{name: hop-fw, match: {{proto: tcp, dst: {H5}, dst_port: {RTT_PORTS['fw']}}},
      through: [fwoff]}}
  - {{name: hop-fw-mon, match: {{proto: tcp, dst: {H5}, dst_port: {RTT_PORTS['fw_mon']}}},
      through: [fwoff, mon]}}
  - {{name: bridges, match: {{dst: {H6}}}, through: [brfw, brlb, brmon]}}
"""

ECHO_SERVER = """
import socket, sys, threading
def serve(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
def listen(port):
    srv = socket.create_server(("", port))
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
for port in sys.argv[1:]:
    threading.Thread(target=listen, args=(int(port),), daemon=True).start()
threading.Event().wait()
"""
ECHO_CLIENT = """
import json, random, socket, sys, time
ip, port, warmup, count, gap = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
s = socket.create_connection((ip, port), timeout=2)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def once():
    t = time.perf_counter()
    s.sendall(b"x")
    if s.recv(16) != b"x":
        raise SystemExit("bad echo")
    return (time.perf_counter() - t) * 1e3
end = time.monotonic() + warmup
while time.monotonic() < end:
    once()
    time.sleep(gap)
rtts = []
for _ in range(int(count)):
    rtts.append(once())
    time.sleep(gap * (0.5 + random.random()))  # no phase lock with the kernel's timers
print(json.dumps(rtts))
"""


@dataclass(frozen=True)
class Route:
    """The client (h1 always) talks to `dst`:`port`; `server` is the host that answers."""

    dst: str
    port: int
    server: str
    client: str = "h1"


# Throughput and packet rate: the real chain both ways, the bridges, and no chain at all.
FLOWS = {
    "bridges": Route(H6, PORT_ON, "h6"),
    "offload_on": Route(VIP, PORT_ON, "h5"),
    "offload_off": Route(VIP, PORT_OFF, "h5"),
    "direct": Route(H5, RTT_PORTS["direct"], "h5"),
}
# Round trips through chains of 0, 1, 2, 3 VNFs (offload off), offload on, and the bridges.
RTT_ROUTES = {
    "direct": Route(H5, RTT_PORTS["direct"], "h5"),
    "fw": Route(H5, RTT_PORTS["fw"], "h5"),
    "fw_mon": Route(H5, RTT_PORTS["fw_mon"], "h5"),
    "fw_lb_mon": Route(VIP, PORT_OFF, "h5"),
    "fw_lb_mon_offload": Route(VIP, PORT_ON, "h5"),
    "bridges": Route(H6, PORT_ON, "h6"),
}


# --- the worker the runtime starts: the real one, or a Linux bridge ------------------------------


def vnf_worker(argv: list[str]) -> int:
    """Entry point for $SDN_VNF_WORKER: `br*` VNFs get a bridge, the others the real worker."""
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    config = json.loads(Path(opts["--config"]).read_text() or "{}")
    if not str(config.get("name", "")).startswith(BRIDGE_PREFIX):
        os.execv(sys.executable, [sys.executable, "-m", "nfv.datapath.worker", *argv])
    return bridge_worker(opts["--kind"], opts["--ingress"], opts["--egress"],
                         Path(opts["--stats"]))


def bridge_worker(kind: str, ingress: str, egress: str, stats: Path) -> int:
    """Join the two arms with a Linux bridge; rewrite the stats file every second until
    SIGTERM (the runtime's supervision wants fresh stats from a live process)."""
    from pyroute2 import IPRoute

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.time()
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=BRIDGE_DEV):  # a restarted worker's leftover
            ipr.link("del", index=index)
        ipr.link("add", ifname=BRIDGE_DEV, kind="bridge")
        (br,) = ipr.link_lookup(ifname=BRIDGE_DEV)
        with contextlib.suppress(OSError):  # no IPv6 chatter from the bridge itself
            Path(f"/proc/sys/net/ipv6/conf/{BRIDGE_DEV}/disable_ipv6").write_text("1")
        arms = {"ingress": ipr.link_lookup(ifname=ingress)[0],
                "egress": ipr.link_lookup(ifname=egress)[0]}
        for index in arms.values():
            ipr.link("set", index=index, master=br)
        ipr.link("set", index=br, state="up")
        print(f"bench.chain: {kind} as bridge {BRIDGE_DEV}: {ingress} <-> {egress}",
              file=sys.stderr, flush=True)
        try:
            while True:
                ports = {side: _link_counters(ipr, index) for side, index in arms.items()}
                _write_stats(stats, {
                    "kind": kind, "pid": os.getpid(), "started": started,
                    "updated": time.time(), "mode": "bridge", "ports": ports,
                    "dropped": sum(p["kernel_drops"] for p in ports.values()),
                    "malformed": 0, "function": {"bridge": BRIDGE_DEV},
                })
                if stop.wait(1.0):
                    break
        finally:
            ipr.link("del", index=br)
    return 0


def _link_counters(ipr: Any, index: int) -> dict[str, int]:
    s = ipr.get_links(index)[0].get_attr("IFLA_STATS64")
    return {"rx_packets": s["rx_packets"], "tx_packets": s["tx_packets"],
            "rx_bytes": s["rx_bytes"], "tx_bytes": s["tx_bytes"],
            "kernel_drops": s["rx_dropped"] + s["tx_dropped"]}


def _write_stats(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


@contextlib.contextmanager
def bridge_workers() -> Iterator[None]:
    """$SDN_VNF_WORKER -> this file while a controller starts (it inherits the variable)."""
    old = os.environ.get(WORKER_ENV)
    os.environ[WORKER_ENV] = shlex.join([sys.executable, str(Path(__file__).resolve()),
                                         WORKER_FLAG])
    try:
        yield
    finally:
        if old is None:
            del os.environ[WORKER_ENV]
        else:
            os.environ[WORKER_ENV] = old


# --- traffic --------------------------------------------------------------------------------------


def _run_in(host, argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run `argv` inside a Mininet host; (exit status, stdout, stderr); killed on timeout."""
    proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return proc.returncode, out, err


def _iperf3(client, route: Route, seconds: float, args: list[str]) -> dict[str, Any]:
    argv = ["iperf3", "-c", route.dst, "-p", str(route.port), "-t", str(seconds), *args, "-J"]
    _, out, err = _run_in(client, argv, seconds + 30)
    try:
        doc = json.loads(out)
    except ValueError as e:
        raise RuntimeError(f"iperf3 {client.name} -> {route.dst}: {out[-300:]} {err[-300:]}"
                           ) from e
    if "error" in doc:
        raise RuntimeError(f"iperf3 {client.name} -> {route.dst}: {doc['error']}")
    return doc["end"]


def tcp_mbps(net, route: Route, seconds: float) -> float:
    """iperf3 TCP goodput at the receiver, the first second (slow start) left out."""
    end = _iperf3(net.get(route.client), route, seconds, ["-O", "1"])
    return end["sum_received"]["bits_per_second"] / 1e6


def udp_pps(net, route: Route, seconds: float) -> float:
    """64-byte UDP frames per second that reached the receiving iperf3 (sender unpaced)."""
    end = _iperf3(net.get(route.client), route, seconds, ["-u", "-b", "0", "-l", str(UDP_PAYLOAD)])
    got = end["sum_received"]
    return (got["packets"] - got["lost_packets"]) / got["seconds"]


def echo_rtts(net, route: Route, samples: int, warmup: float = 2.0, gap: float = 0.01
              ) -> list[float]:
    client = net.get(route.client)
    argv = [sys.executable, "-c", ECHO_CLIENT, route.dst, str(route.port), str(warmup),
            str(samples), str(gap)]
    code, out, err = _run_in(client, argv, warmup + samples * (gap + 2) + 10)
    if code:
        raise RuntimeError(f"echo {client.name} -> {route.dst}:{route.port}: {err[-500:]}")
    return json.loads(out)


@contextlib.contextmanager
def servers(net, wanted: list[tuple[str, list[str], list[int]]]) -> Iterator[None]:
    """Start (host, argv, ports it listens on) processes, wait until the ports listen,
    stop them on exit."""
    from testing.harness import stop_process, wait_until

    procs = []
    try:
        for name, argv, ports in wanted:
            host = net.get(name)
            procs.append(host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in ports:
                wait_until(lambda h=host, p=port: f":{p} " in h.cmd("ss -ltn"), 10,
                           what=f"a server on {name}:{port}")
        yield
    finally:
        for proc in procs:
            stop_process(proc)


# --- the controller side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """What to read around a measurement: the VNFs' switch-side interfaces, and the
    processes whose CPU time tells where the work went (workers, ovs-vswitchd)."""

    arms: dict[str, list[str]]
    pids: dict[str, int]
    controller: Any

    @classmethod
    def of(cls, controller) -> Watch:
        vnfs = controller.get("/v1/vnfs")["vnfs"]
        pids = {v["vnf"]: v["pid"] for v in vnfs if v["pid"]}
        with contextlib.suppress(OSError, ValueError):
            pids["ovs-vswitchd"] = int(OVS_PIDFILE.read_text())
        return cls({v["vnf"]: list(v["interfaces"].values()) for v in vnfs}, pids, controller)

    def drops(self) -> dict[str, int]:
        """Frames each VNF lost or dropped so far (ring overruns, send failures, truncated
        frames, its own verdicts), from the workers' reports, replicas summed."""
        out: dict[str, int] = {}
        for v in self.controller.get("/v1/vnfs")["vnfs"]:
            out[v["vnf"]] = out.get(v["vnf"], 0) + v["drops"]
        return out

    def frames(self) -> dict[str, int]:
        """Frames the switches handed to each VNF so far (tx of its switch-side veths)."""
        return {name: sum(int(Path(f"/sys/class/net/{i}/statistics/tx_packets").read_text())
                          for i in ifaces) for name, ifaces in self.arms.items()}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process, of the machine's softirqs (where a Linux
        bridge forwards, on whichever core sent the frame), and of the machine (2 cores
        busy while our processes use less means someone else's load was in the way)."""
        out = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                out[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        cpu = [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
        out["softirq"] = cpu[6] / CLK_TCK
        out["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / CLK_TCK  # all but idle and iowait
        return out

    def around(self, measure: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
        """Run `measure()`; return its value, the frames each VNF got meanwhile and the
        cores each busy process (or softirq) used on average."""
        drops, frames, cpu, start = self.drops(), self.frames(), self.cpu(), time.monotonic()
        value = measure()
        elapsed = time.monotonic() - start
        frames2, cpu2 = self.frames(), self.cpu()
        time.sleep(STATS_SETTLE)  # the workers report once a second
        drops2 = self.drops()
        cores = {n: round((cpu2[n] - cpu[n]) / elapsed, 2) for n in cpu2 if n in cpu}
        return value, {"frames": {n: frames2[n] - frames[n] for n in sorted(frames2)
                                  if frames2[n] > frames[n]},
                       "vnf_drops": {n: drops2[n] - drops.get(n, 0) for n in sorted(drops2)
                                     if drops2[n] > drops.get(n, 0)},
                       "cores": {n: c for n, c in cores.items() if c >= 0.05}}


def _stats(vnf: dict[str, Any]) -> dict[str, Any] | None:
    """The stats file a VNF's worker writes, or None while there is none to read."""
    try:
        return json.loads(Path(vnf["stats_file"]).read_text())
    except (OSError, ValueError):
        return None


def vnf_modes(controller) -> dict[str, str]:
    """How each VNF moves its frames, as its worker reports it: `xdp native`, `ring`, ...
    (the bridges of the baseline say `bridge`)."""
    modes = {}
    for v in controller.get("/v1/vnfs")["vnfs"]:
        if (doc := _stats(v)) is not None:
            modes[v["vnf"]] = " ".join(filter(None, (doc.get("mode"), doc.get("xdp_attach"))))
    return dict(sorted(modes.items()))


def lb_ready(controller) -> bool:
    """Every load balancer knows its backend's MAC and sees it healthy."""
    for v in controller.get("/v1/vnfs")["vnfs"]:
        if v["vnf"] not in LOAD_BALANCERS:
            continue
        doc = _stats(v)
        if doc is None or "function" not in doc:
            return False
        if not all(b["healthy"] and b["mac"] for b in doc["function"]["backends"].values()):
            return False
    return True


def prepare(controller, net, tmp: Path) -> None:
    from testing.harness import ping, wait_until

    for host in net.hosts:  # every host known to the controller
        ping(host, "10.0.0.3")
    policy = tmp / "chain.yaml"
    policy.write_text(POLICY)
    controller.apply(policy)
    wait_until(lambda: all(v["state"] == "running" and v["healthy"]
                           for v in controller.get("/v1/vnfs")["vnfs"]), 30,
               what="VNFs running")
    for host in net.hosts:
        ping(host, "10.0.0.3")


# --- the benchmark -------------------------------------------------------------------------------


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean without the lowest and highest `cut` of the values: round trips through a
    ring-mode worker fall into levels set by its block-retire timer, where a median jumps
    from one level to the next between runs, and a plain mean follows single stalls."""
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    return statistics.fmean(ordered[k:len(ordered) - k])


def measure_rtt(controller, net, watch: Watch, samples: int) -> dict[str, Any]:
    from testing.harness import wait_until

    ports: dict[str, list[int]] = {}
    for route in RTT_ROUTES.values():
        ports.setdefault(route.server, []).append(route.port)
    echo = [sys.executable, "-c", ECHO_SERVER]
    with servers(net, [(host, [*echo, *map(str, p)], p) for host, p in ports.items()]):
        wait_until(lambda: lb_ready(controller), 20, what="load balancers ready")
        rows = {}
        for name, route in RTT_ROUTES.items():
            rtts, seen = watch.around(lambda r=route: echo_rtts(net, r, samples))
            rows[name] = {"mean_ms": round(trimmed_mean(rtts), 3),
                          "median_ms": round(statistics.median(rtts), 3),
                          "p90_ms": round(statistics.quantiles(rtts, n=10)[-1], 3),
                          "frames_into_vnfs": seen["frames"]}
    med = {name: row["mean_ms"] for name, row in rows.items()}
    added = {
        "fw": med["fw"] - med["direct"],
        "mon": med["fw_mon"] - med["fw"],
        "lb": med["fw_lb_mon"] - med["fw_mon"],
        "vnf_mean": (med["fw_lb_mon"] - med["direct"]) / 3,
        "vnf_mean_offload_on": (med["fw_lb_mon_offload"] - med["direct"]) / 3,
        "bridge": (med["bridges"] - med["direct"]) / 3,
    }
    added["vnf_mean_over_bridge"] = added["vnf_mean"] - added["bridge"]
    return {"paths": rows, "added_per_vnf_ms": {k: round(v, 3) for k, v in added.items()}}


def measure_rates(controller, net, watch: Watch, rounds: int, tcp_seconds: float,
                  udp_seconds: float) -> dict[str, Any]:
    """TCP and 64-byte UDP on every flow, `rounds` times, the order rotated each round."""
    from testing.harness import wait_until

    def iperf(port: int) -> list[str]:
        return ["iperf3", "-s", "-p", str(port)]

    tests = {"tcp_mbps": lambda r: tcp_mbps(net, r, tcp_seconds),
             "pps": lambda r: udp_pps(net, r, udp_seconds)}
    got: dict[str, dict[str, list]] = {n: {k: [] for k in tests} for n in FLOWS}
    seen: dict[str, dict[str, list]] = {n: {k: [] for k in tests} for n in FLOWS}
    wanted = {(r.server, r.port) for r in FLOWS.values()}
    with servers(net, [(host, iperf(port), [port]) for host, port in sorted(wanted)]):
        wait_until(lambda: lb_ready(controller), 20, what="load balancers ready")
        names = list(FLOWS)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for key, test in tests.items():
                for name in order:
                    value, where = watch.around(lambda t=test, r=FLOWS[name]: t(r))
                    got[name][key].append(value)
                    seen[name][key].append(where)
    return {name: {"tcp_mbps": round(statistics.median(got[name]["tcp_mbps"]), 1),
                   "pps": round(statistics.median(got[name]["pps"])),
                   "tcp_mbps_rounds": [round(x, 1) for x in got[name]["tcp_mbps"]],
                   "pps_rounds": [round(x) for x in got[name]["pps"]],
                   "seen": seen[name]}
            for name in FLOWS}


def run(rounds: int = 3, tcp_seconds: float = 3, udp_seconds: float = 2,
        rtt_samples: int = 100) -> dict[str, Any]:
    """The whole comparison in one network; prints a table and returns the figures."""
    from testing.harness import Controller, network
    from topologies.sdn_topos import LinearTopo

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        controller = Controller(Path(tmp) / "controller")
        try:
            with bridge_workers():
                controller.start()
            with network(LinearTopo(n=3, hosts_per_switch=2), controller) as net:
                prepare(controller, net, Path(tmp))
                watch = Watch.of(controller)
                rtt = measure_rtt(controller, net, watch, rtt_samples)
                flows = measure_rates(controller, net, watch, rounds, tcp_seconds, udp_seconds)
                restarts = {v["vnf"]: v["restarts"] for v in controller.get("/v1/vnfs")["vnfs"]
                            if v["restarts"]}
                modes = vnf_modes(controller)
        finally:
            controller.stop()
    ratios = {}
    for name, target in TARGETS.items():
        r: dict[str, Any] = {"target": target}
        for key in ("tcp_mbps", "pps"):  # each round against the bridges of the same round
            per_round = [a / b for a, b in zip(flows[name][f"{key}_rounds"],
                                               flows["bridges"][f"{key}_rounds"], strict=True)]
            r[key] = round(statistics.median(per_round), 3)
            r[f"{key}_rounds"] = [round(x, 3) for x in per_round]
        r["met"] = r["tcp_mbps"] >= target and r["pps"] >= target
        ratios[name] = r
    figures = {"flows": flows, "vs_bridges": ratios, "rtt": rtt, "vnf_restarts": restarts,
               "vnf_modes": modes, "rounds": rounds,
               "seconds": round(time.monotonic() - started, 1)}
    report(figures)
    return figures


def report(f: dict[str, Any]) -> None:
    print(f"{'path':<13}{'TCP Mbit/s':>11}{'64B kpps':>10}   per round: Mbit/s | kpps")
    for name, row in f["flows"].items():
        rounds = " ".join(f"{x:.0f}" for x in row["tcp_mbps_rounds"]) + " | " + " ".join(
            f"{x / 1e3:.1f}" for x in row["pps_rounds"])
        print(f"{name:<13}{row['tcp_mbps']:>11.1f}{row['pps'] / 1e3:>10.1f}   {rounds}")
    for name, r in f["vs_bridges"].items():
        print(f"{name} / bridges: TCP {r['tcp_mbps']:.2f} {r['tcp_mbps_rounds']}, "
              f"64B pps {r['pps']:.2f} {r['pps_rounds']} "
              f"(target >= {r['target']}: {'met' if r['met'] else 'NOT met'})")
    print("RTT, 1-byte TCP echo from h1 (10%-trimmed mean / median / p90 ms):")
    for name, row in f["rtt"]["paths"].items():
        print(f"  {name:<19}{row['mean_ms']:7.3f} {row['median_ms']:7.3f} {row['p90_ms']:7.3f}")
    print("added RTT per VNF (ms): " + ", ".join(
        f"{k} {v:.3f}" for k, v in f["rtt"]["added_per_vnf_ms"].items()))
    for key in ("tcp_mbps", "pps"):
        print(f"first round of {key}: frames into VNFs / lost or dropped in each VNF / "
              "busy cores")
        for name, row in f["flows"].items():
            where = row["seen"][key][0]
            print(f"  {name:<13}{where['frames']}  {where['vnf_drops']}  {where['cores']}")
    print("VNF packet paths: " + ", ".join(f"{n} {m}" for n, m in f["vnf_modes"].items()))
    if f["vnf_restarts"]:
        print(f"VNF restarts (figures suspect): {f['vnf_restarts']}")
    print(f"took {f['seconds']} s")


def main(argv: list[str]) -> int:
    if argv[:1] == [WORKER_FLAG]:
        return vnf_worker(argv[1:])
    if os.geteuid() != 0:
        sys.exit("bench.chain needs root (Mininet, namespaces)")
    if "--rounds" in argv:
        run(rounds=int(argv[argv.index("--rounds") + 1]))
    else:
        run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
