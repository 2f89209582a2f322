"""Our firewall and load balancer against the kernel's own and HAProxy, in the same place.

    sudo .venv/bin/python -m bench.vnf_peers [--rounds 3] [--seconds 1.5] [--tcp-seconds 2]
                                             [--mode auto]

The line of namespaces of `bench.vnf_pps` (nf8-a -> nf8-v -> nf8-b, offloads off on every
veth), and in nf8-v, one after the other in each round:

- `bridge`: a Linux bridge (the L2 baseline: our VNFs are bumps in the wire);
- ours: `python -m nfv.datapath.worker` as firewall (conntrack, allow rules) and as load
  balancer (Maglev + NAT), each across the two veths like the bridge, in `--mode` (default
  `auto`, what a VNF runs: AF_XDP where available);
- `router`: nf8-v routes between 10.9.0.0/24 (nf8-a) and 10.9.2.0/24 (nf8-b), no rules (the L3
  baseline), then with an nftables ruleset:
  - firewall: `ct state established,related accept; ct state new tcp dport {...} accept;
    ct state new udp dport 9 accept; policy drop` in the forward hook;
  - load balancer: DNAT in prerouting, `jhash ip saddr . udp sport mod 3` over three backends
    for the flood, to the one real server for TCP;
  - HAProxy 2.6 in TCP mode in nf8-v (listening on nf8-v's address, the server behind it).

Figures per round, each against the peer measured seconds apart:

- `pps`: 64-byte UDP frames per second delivered, the generator of `bench.vnf_pps` (1024
  flows), every row's sample checked (intact, or NATed to a backend with valid checksums);
- `tcp_gbps`: iperf3 goodput at the receiver (`--tcp-seconds`, one stream);
- `connect_ms`: median time of 200 TCP connects (connect() to established) to a server in
  nf8-b, through the load balancer; its `added` is against the same path's baseline (bridge
  for ours, router for nftables and HAProxy);
- `rtt_ms`: median ping round trip through the firewall; `added` as for connects.

Prints ours, peer and ours/peer (min / median / max over the rounds) and returns them.
About 70 s a round. Needs root, nftables, haproxy and iperf3 (`make setup` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from pyroute2 import NetNS

from bench.vnf_pps import (
    BACKEND_PORT,
    BACKENDS,
    CLIENT_IP,
    DIRECT,
    IF_A,
    IF_B,
    IF_VA,
    IF_VB,
    NS_A,
    NS_B,
    NS_V,
    PING_B,
    PYTHON,
    ROOT,
    SERVER_MAC,
    SERVER_PORT,
    TO_VIP,
    Target,
    _link_index,
    bridge,
    measure,
    netns_cmd,
    round_trip,
    seed_backends,
    topology,
    worker,
)
from testing.harness import stop_process

# The routed side: nf8-v is 10.9.0.254 towards nf8-a and 10.9.2.254 towards nf8-b.
ROUTER_A, ROUTER_B = "10.9.0.254", "10.9.2.254"
SERVER_B = "10.9.2.2"  # nf8-b's address behind the router (iperf3 and the connect server)
FLOOD_DST = "10.9.2.9"  # owned by nobody: nf8-v's neighbour entry points it at SERVER_MAC
NFT_VIP = "10.9.2.100"  # the nftables DNAT's VIP (flood and TCP)
NFT_BACKENDS = {f"10.9.2.{i}": mac for i, mac in zip((3, 4, 5), BACKENDS.values(), strict=True)}
OUR_VIP = "10.9.1.100"  # our load balancer's VIP for TCP (clients in 10.9.1.0/24)
OUR_VIP_MAC = "02:00:00:00:01:64"
IPERF_PORT, CONNECT_PORT = 5201, 5202
CONNECTS = 200

FW_RULES = [
    {"action": "allow", "proto": "udp", "dst_port": SERVER_PORT},
    {"action": "allow", "proto": "tcp", "dst_port": IPERF_PORT},
    {"action": "allow", "proto": "tcp", "dst_port": CONNECT_PORT},
    {"action": "allow", "proto": "icmp"},
]
OUR_FIREWALL = {"default": "drop", "rules": FW_RULES}
OUR_LB_FLOOD = {
    "vip": "10.9.0.100", "vip_mac": SERVER_MAC.hex(":"), "port": 80, "proto": "udp",
    "backends": [{"ip": ip, "port": BACKEND_PORT} for ip in BACKENDS],
}  # fmt: skip
OUR_LB_TCP = {"vip": OUR_VIP, "vip_mac": OUR_VIP_MAC, "proto": "tcp", "backends": [PING_B]}

NFT_FIREWALL = f"""
table inet peer_fw {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new tcp dport {{ {IPERF_PORT}, {CONNECT_PORT} }} accept
    ct state new udp dport {SERVER_PORT} accept
    ct state new icmp type echo-request accept
  }}
}}
"""
_JHASH_MAP = ", ".join(f"{i} : {ip}" for i, ip in enumerate(NFT_BACKENDS))
NFT_DNAT = f"""
table ip peer_lb {{
  chain pre {{
    type nat hook prerouting priority dstnat;
    ip daddr {NFT_VIP} udp dport 80 dnat to jhash ip saddr . udp sport mod 3 map {{ {_JHASH_MAP} }}:{BACKEND_PORT}
    ip daddr {NFT_VIP} tcp dport {{ {IPERF_PORT}, {CONNECT_PORT} }} dnat to {SERVER_B}
  }}
}}
"""  # noqa: E501 - one nft rule per line
HAPROXY = f"""
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
listen iperf
  bind {ROUTER_A}:{IPERF_PORT}
  server s {SERVER_B}:{IPERF_PORT}
listen connect
  bind {ROUTER_A}:{CONNECT_PORT}
  server s {SERVER_B}:{CONNECT_PORT}
"""

CONNECT_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""
CONNECT_CLIENT = """
import json, socket, statistics, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    s = socket.socket(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = time.perf_counter(); s.connect((host, port)); times.append(time.perf_counter() - t)
    s.close()
print(json.dumps(statistics.median(times) * 1e3))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


# --- the routed place and the servers ----------------------------------------------------------


def prepare_hosts() -> None:
    """Offloads off on every veth (as a VNF needs for TCP, so the peers get the same), and
    the routed addresses and routes of the two end namespaces."""
    for ns, ifname in ((NS_A, IF_A), (NS_V, IF_VA), (NS_V, IF_VB), (NS_B, IF_B)):
        sh(*netns_cmd(ns, "ethtool", "-K", ifname, "tx", "off", "rx", "off", "tso", "off",
                      "gso", "off", "gro", "off"))  # fmt: skip
    with NetNS(NS_A) as ns:
        ns.addr("add", index=_link_index(ns, IF_A), address=CLIENT_IP, prefixlen=24)
        ns.route("add", dst="10.9.2.0/24", gateway=ROUTER_A)
    with NetNS(NS_B) as ns:
        ns.addr("add", index=_link_index(ns, IF_B), address=SERVER_B, prefixlen=24)
        ns.route("add", dst="10.9.0.0/24", gateway=ROUTER_B)


def va_mac() -> bytes:
    with NetNS(NS_V) as ns:
        return bytes.fromhex(ns.get_links(_link_index(ns, IF_VA))[0].get_attr(
            "IFLA_ADDRESS").replace(":", ""))  # fmt: skip


@contextlib.contextmanager
def router(ruleset: str = "") -> Iterator[None]:
    """nf8-v routes (with `ruleset` loaded into nftables); undone on exit."""
    with NetNS(NS_V) as ns:
        va, vb = _link_index(ns, IF_VA), _link_index(ns, IF_VB)
        ns.addr("add", index=va, address=ROUTER_A, prefixlen=24)
        ns.addr("add", index=vb, address=ROUTER_B, prefixlen=24)
        for ip, mac in {FLOOD_DST: SERVER_MAC, **NFT_BACKENDS}.items():
            ns.neigh("add", dst=ip, lladdr=mac.hex(":"), ifindex=vb, state="permanent")
    sh(*netns_cmd(NS_V, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
    try:
        if ruleset:
            subprocess.run(netns_cmd(NS_V, "nft", "-f", "-"), input=ruleset, text=True,
                           check=True)  # fmt: skip
        yield
    finally:
        sh(*netns_cmd(NS_V, "nft", "flush", "ruleset"))
        sh(*netns_cmd(NS_V, "sysctl", "-qw", "net.ipv4.ip_forward=0"))
        with NetNS(NS_V) as ns:
            vb = _link_index(ns, IF_VB)
            for ip in (FLOOD_DST, *NFT_BACKENDS):
                ns.neigh("del", dst=ip, ifindex=vb)
            for index in (_link_index(ns, IF_VA), vb):
                ns.flush_addr(index=index)


@contextlib.contextmanager
def process(argv: list[str], ready: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """A server process, stopped by its pid on exit."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)  # fmt: skip
    try:
        if ready is not None:
            line = proc.stdout.readline() if proc.stdout else ""
            if ready not in line:
                raise RuntimeError(f"{argv[3:]} did not start: {line}")
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def haproxy() -> Iterator[None]:
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="nf8-haproxy-") as cfg:
        cfg.write(HAPROXY)
        cfg.flush()
        with process(netns_cmd(NS_V, "haproxy", "-db", "-f", cfg.name)):
            wait_listening(ROUTER_A, CONNECT_PORT)
            yield


def wait_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = subprocess.run(netns_cmd(NS_V, "ss", "-ltnH", f"src {host}:{port}"),
                             capture_output=True, text=True).stdout  # fmt: skip
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


# --- measurements --------------------------------------------------------------------------


def tcp_gbps(host: str, port: int, seconds: float) -> float:
    out = subprocess.run(
        netns_cmd(NS_A, "iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J",
                  "--connect-timeout", "2000"),
        capture_output=True, text=True, timeout=seconds + 20,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    if "error" in doc:
        raise RuntimeError(f"iperf3 to {host}:{port}: {doc['error']}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


def connect_ms(host: str, port: int) -> float:
    out = subprocess.run(
        netns_cmd(NS_A, PYTHON, "-c", CONNECT_CLIENT, host, str(port), str(CONNECTS)),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return float(out)


def ping_ms(dst: str, pings: int) -> float:
    rtt = round_trip(pings, dst)
    assert rtt is not None
    return rtt


def one_round(
    seconds: float, tcp_seconds: float, flows: int, pings: int, mode: str
) -> dict[str, Any]:
    """Every row once; returns {row: {figure: value}}."""
    router_mac = va_mac()
    routed_flood = Target(router_mac, FLOOD_DST, SERVER_PORT, {FLOOD_DST: SERVER_MAC}, SERVER_PORT)
    routed_vip = Target(router_mac, NFT_VIP, 80, dict(NFT_BACKENDS), BACKEND_PORT)
    flood = lambda target: measure(seconds, flows, target, sample=500)["pps"]  # noqa: E731

    def path(target: Target, server: str, connect: bool = True) -> dict[str, float]:
        """Flood, round trip and TCP through whatever is in nf8-v to `server` (and connects)."""
        row = {"pps": flood(target), "rtt_ms": ping_ms(server, pings),
               "tcp_gbps": tcp_gbps(server, IPERF_PORT, tcp_seconds)}  # fmt: skip
        if connect:
            row["connect_ms"] = connect_ms(server, CONNECT_PORT)
        return row

    rows: dict[str, Any] = {}
    with bridge():
        rows["bridge"] = path(DIRECT, PING_B)
    with worker("forward", {}, mode):
        rows["ours_forward"] = {"pps": flood(DIRECT)}
    with worker("firewall", OUR_FIREWALL, mode):
        rows["ours_firewall"] = path(DIRECT, PING_B, connect=False)
    with worker("loadbalancer", OUR_LB_FLOOD, mode) as w:
        seed_backends(w)
        rows["ours_lb"] = {"pps": flood(TO_VIP)}
    with worker("loadbalancer", OUR_LB_TCP, mode):
        rows["ours_lb"]["tcp_gbps"] = tcp_gbps(OUR_VIP, IPERF_PORT, tcp_seconds)
        rows["ours_lb"]["connect_ms"] = connect_ms(OUR_VIP, CONNECT_PORT)
    with router():
        rows["router"] = path(routed_flood, SERVER_B)
    with router(NFT_FIREWALL):
        rows["nft_firewall"] = path(routed_flood, SERVER_B, connect=False)
    with router(NFT_DNAT):
        rows["nft_dnat"] = {
            "pps": flood(routed_vip), "tcp_gbps": tcp_gbps(NFT_VIP, IPERF_PORT, tcp_seconds),
            "connect_ms": connect_ms(NFT_VIP, CONNECT_PORT),
        }  # fmt: skip
    with router(), haproxy():
        rows["haproxy"] = {
            "tcp_gbps": tcp_gbps(ROUTER_A, IPERF_PORT, tcp_seconds),
            "connect_ms": connect_ms(ROUTER_A, CONNECT_PORT),
        }
    for row, base in (("ours_firewall", "bridge"), ("ours_lb", "bridge"),
                      ("nft_firewall", "router"), ("nft_dnat", "router"),
                      ("haproxy", "router")):  # fmt: skip
        for key in ("rtt_ms", "connect_ms"):
            if key in rows[row]:
                rows[row][key.replace("_ms", "_added_ms")] = rows[row][key] - rows[base][key]
    return rows


# What is compared: (figure, ours row, peer row, key, target as "ours/peer >= x" or
# "added <= x ms").
COMPARISONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("firewall 64-byte pps", "ours_firewall", "nft_firewall", "pps", ">= 0.9"),
    ("load balancer 64-byte pps", "ours_lb", "nft_dnat", "pps", ">= 0.8"),
    ("forwarding 64-byte pps", "ours_forward", "bridge", "pps", ">= 1.0"),
    ("firewall TCP Gbit/s", "ours_firewall", "nft_firewall", "tcp_gbps", ">= 0.5"),
    ("load balancer TCP Gbit/s", "ours_lb", "nft_dnat", "tcp_gbps", ">= 0.5"),
    ("load balancer TCP Gbit/s", "ours_lb", "haproxy", "tcp_gbps", ">= 0.5"),
    ("LB connect, added ms", "ours_lb", "nft_dnat", "connect_added_ms", "<= 0.2"),
    ("LB connect, added ms", "ours_lb", "haproxy", "connect_added_ms", "<= 0.2"),
    ("firewall round trip, added ms", "ours_firewall", "nft_firewall", "rtt_added_ms", "<= 0.2"),
)


def summarize(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for figure, ours, peer, key, target in COMPARISONS:
        mine = [r[ours][key] for r in rounds]
        theirs = [r[peer][key] for r in rounds]
        row: dict[str, Any] = {"figure": figure, "ours_row": ours, "peer": peer, "key": key,
                               "target": target, "ours": mine, "theirs": theirs}  # fmt: skip
        if target.startswith(">="):
            ratios = [m / t if t else 0.0 for m, t in zip(mine, theirs, strict=True)]
            row["ratio"] = ratios
            row["met"] = statistics.median(ratios) >= float(target[2:])
        else:
            row["met"] = statistics.median(mine) <= float(target[2:])
        out.append(row)
    return out


def _mmm(values: list[float], fmt: str) -> str:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{lo:{fmt}}/{mid:{fmt}}/{hi:{fmt}}"


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'figure':<36}{'peer':<14}{'ours min/med/max':>26}{'peer min/med/max':>26}"
          f"{'ours/peer':>20}  target")  # fmt: skip
    for r in rows:
        fmt = ".0f" if r["key"] == "pps" else ".3f" if "ms" in r["key"] else ".2f"
        scale = 1e-3 if r["key"] == "pps" else 1.0
        mine = _mmm([v * scale for v in r["ours"]], fmt)
        theirs = _mmm([v * scale for v in r["theirs"]], fmt)
        ratio = _mmm(r["ratio"], ".2f") if "ratio" in r else "-"
        verdict = "met" if r["met"] else "NOT met"
        unit = " (kpps)" if r["key"] == "pps" else ""
        print(f"{r['figure'] + unit:<36}{r['peer']:<14}{mine:>26}{theirs:>26}{ratio:>20}  "
              f"{r['target']}: {verdict}")  # fmt: skip


def run(
    rounds: int = 3, seconds: float = 1.5, tcp_seconds: float = 2.0, flows: int = 1024,
    pings: int = 200, mode: str = "auto",
) -> dict[str, Any]:
    """Every row `rounds` times; figures are per round, ratios against the same round."""
    per_round: list[dict[str, Any]] = []
    with topology():
        prepare_hosts()
        with process(netns_cmd(NS_B, "iperf3", "-s", "-p", str(IPERF_PORT))), process(
            netns_cmd(NS_B, PYTHON, "-c", CONNECT_SERVER, str(CONNECT_PORT)), ready="ready"
        ):
            for _ in range(rounds):
                per_round.append(one_round(seconds, tcp_seconds, flows, pings, mode))
    rows = summarize(per_round)
    report(rows)
    return {"comparisons": rows, "rounds": per_round}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="per 64-byte flood")
    ap.add_argument("--tcp-seconds", type=float, default=2.0, help="per iperf3 run")
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--mode", default="auto", help="our workers' --mode (auto, xdp, ring, ...)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.vnf_peers needs root (namespaces, nftables)")
    run(args.rounds, args.seconds, args.tcp_seconds, args.flows, args.pings, args.mode)


if __name__ == "__main__":
    main()

