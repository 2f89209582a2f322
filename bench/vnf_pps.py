"""Packets per second of minimum-size frames through a VNF, against a Linux bridge in its place.

    sudo .venv/bin/python -m bench.vnf_pps [--seconds 3] [--flows 1024] [--modes ring,recv]

Three namespaces in a line, `nf1-a` -> `nf1-v` -> `nf1-b`, joined by veths. A generator in
`nf1-a` floods 60-byte UDP frames (a PACKET_TX_RING sender: one `send()` pushes a whole ring of
prebuilt frames, so a Python process can outrun the device under test); what arrives in `nf1-b` is
read from the interface's rx counter. The frames carry a destination MAC nobody owns, so `nf1-b`
drops them at once and the figure is the forwarding rate of whatever sits in `nf1-v`:

- `generator`: nothing in between, nf1-a's peer is counted directly (what the generator can do);
- `bridge`: a Linux bridge across the two veths of `nf1-v`;
- `forward` / `firewall`: `python -m nfv.worker` on those veths (the firewall with conntrack on,
  one allow rule, `--flows` distinct UDP flows).

Prints a table and returns a dict {name: {"pps": ..., ...}}. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS, netns

PREFIX = "nf1"
NS_A, NS_V, NS_B = f"{PREFIX}-a", f"{PREFIX}-v", f"{PREFIX}-b"
IF_A, IF_VA, IF_VB, IF_B = f"{PREFIX}-a0", f"{PREFIX}-va", f"{PREFIX}-vb", f"{PREFIX}-b0"
BRIDGE = f"{PREFIX}-br"
SRC_MAC = bytes.fromhex("020000000a01")
DST_MAC = bytes.fromhex("020000000b99")  # owned by nobody: the sink drops frames cheaply
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

SOL_PACKET = 263
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1
TP_STATUS_SEND_REQUEST = 1
TX_FRAME = 128  # bytes per ring slot: header (32) + a 60-byte frame, aligned
TX_FRAMES = 4096
FRAME_LEN = 60  # Ethernet 14 + IPv4 20 + UDP 8 + 18 bytes payload (64 on the wire with FCS)


# --- the generator (runs in its own process inside nf1-a) ---------------------------------------


def udp_frame(sport: int) -> bytes:
    """A 60-byte IPv4/UDP frame 10.9.0.1:sport -> 10.9.0.2:9, UDP checksum 0 (allowed)."""
    payload = b"\x00" * (FRAME_LEN - 42)
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 46, 0, 0, 64, 17, 0, 0x0A090001, 0x0A090002))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", ip, 10, ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
    udp = struct.pack("!HHHH", sport, 9, 8 + len(payload), 0)
    return DST_MAC + SRC_MAC + b"\x08\x00" + bytes(ip) + udp + payload


def generate(ifname: str, seconds: float, flows: int) -> dict[str, float]:
    """Flood `ifname` for `seconds` from a TX ring of prebuilt frames cycling over `flows`."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    size = TX_FRAME * TX_FRAMES
    sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack("=IIII", size, 1, TX_FRAME, TX_FRAMES))
    ring = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sock.bind((ifname, 0))
    u32 = memoryview(ring).cast("I")
    for i in range(TX_FRAMES):
        base = i * TX_FRAME
        frame = udp_frame(10000 + i % max(1, flows))
        ring[base + 32 : base + 32 + FRAME_LEN] = frame
        struct.pack_into("=II", ring, base + 4, FRAME_LEN, FRAME_LEN)
    slots = range(0, size // 4, TX_FRAME // 4)
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        for i in slots:
            u32[i] = TP_STATUS_SEND_REQUEST
        try:
            sock.send(b"")
        except OSError:
            continue
        sent += TX_FRAMES
    elapsed = time.monotonic() - start
    u32.release()
    ring.close()
    sock.close()
    return {"sent": sent, "seconds": elapsed, "pps": sent / elapsed}


# --- the topology ---------------------------------------------------------------------------


def _link_index(ns: NetNS | IPRoute, ifname: str) -> int:
    return ns.link_lookup(ifname=ifname)[0]


@contextlib.contextmanager
def topology() -> Iterator[None]:
    """nf1-a --veth-- nf1-v --veth-- nf1-b; everything removed on exit, also on failure."""
    cleanup()
    try:
        for name in (NS_A, NS_V, NS_B):
            netns.create(name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=IF_A, kind="veth", peer=IF_VA)
            ipr.link("add", ifname=IF_VB, kind="veth", peer=IF_B)
            for ifname, ns in ((IF_A, NS_A), (IF_VA, NS_V), (IF_VB, NS_V), (IF_B, NS_B)):
                ipr.link("set", index=_link_index(ipr, ifname), net_ns_fd=ns)
        for ns_name, ifnames in ((NS_A, [IF_A]), (NS_V, [IF_VA, IF_VB]), (NS_B, [IF_B])):
            with NetNS(ns_name) as ns:
                for ifname in [*ifnames, "lo"]:
                    ns.link("set", index=_link_index(ns, ifname), state="up")
        yield
    finally:
        cleanup()


def cleanup() -> None:
    for name in (NS_A, NS_V, NS_B):
        if name in netns.listnetns():
            netns.remove(name)


@contextlib.contextmanager
def bridge() -> Iterator[None]:
    with NetNS(NS_V) as ns:
        ns.link("add", ifname=BRIDGE, kind="bridge")
        br = _link_index(ns, BRIDGE)
        for ifname in (IF_VA, IF_VB):
            ns.link("set", index=_link_index(ns, ifname), master=br)
        ns.link("set", index=br, state="up")
    try:
        yield
    finally:
        with NetNS(NS_V) as ns:
            ns.link("del", index=_link_index(ns, BRIDGE))


def rx_packets(ns_name: str, ifname: str) -> int:
    with NetNS(ns_name) as ns:
        link = ns.get_links(_link_index(ns, ifname))[0]
        return link.get_attr("IFLA_STATS64")["rx_packets"]


def netns_cmd(ns_name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns_name, *argv]


def run_generator(seconds: float, flows: int) -> dict[str, float]:
    out = subprocess.run(
        netns_cmd(NS_A, PYTHON, "-m", "bench.vnf_pps", "--generate", IF_A,
                  "--seconds", str(seconds), "--flows", str(flows)),
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def measure(ns_name: str, ifname: str, seconds: float, flows: int) -> dict[str, float]:
    before = rx_packets(ns_name, ifname)
    gen = run_generator(seconds, flows)
    time.sleep(0.2)  # let queues drain into the counter
    got = rx_packets(ns_name, ifname) - before
    return {
        "pps": got / gen["seconds"],
        "received": got,
        "generated_pps": gen["pps"],
        "delivered_ratio": got / gen["sent"] if gen["sent"] else 0.0,
    }


@contextlib.contextmanager
def worker(kind: str, config: dict[str, Any], mode: str) -> Iterator[Path]:
    """Run `python -m nfv.worker` in nf1-v; yields the stats file path."""
    with tempfile.TemporaryDirectory(prefix="nf1-bench-") as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(config))
        stats = Path(tmp) / "stats.json"
        proc = subprocess.Popen(
            netns_cmd(NS_V, PYTHON, "-m", "nfv.worker", "--kind", kind, "--config", str(cfg),
                      "--ingress", IF_VA, "--egress", IF_VB, "--stats", str(stats),
                      "--mode", mode),
            cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not stats.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {kind} did not start")
                time.sleep(0.05)
            yield stats
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


FIREWALL = {"default": "drop", "rules": [{"action": "allow", "proto": "udp", "dst_port": 9}]}


def run(seconds: float = 3.0, flows: int = 1024, modes: tuple[str, ...] = ("ring",)) -> dict:
    results: dict[str, dict[str, Any]] = {}
    with topology():
        results["generator"] = measure(NS_V, IF_VA, seconds, flows)
        with bridge():
            results["bridge"] = measure(NS_B, IF_B, seconds, flows)
        for mode in modes:
            for kind, config in (("forward", {}), ("firewall", FIREWALL)):
                with worker(kind, config, mode) as stats:
                    r = measure(NS_B, IF_B, seconds, flows)
                    time.sleep(1.1)
                    doc = json.loads(stats.read_text())
                r["kernel_drops"] = sum(p["kernel_drops"] for p in doc["ports"].values())
                if kind == "firewall":
                    fn = doc["function"]
                    r["conntrack_entries"] = fn["conntrack"]["entries"]
                    r["fw_dropped"] = fn["dropped"]
                results[f"{kind}_{mode}"] = r
    bridge_pps = results["bridge"]["pps"] or 1.0
    for r in results.values():
        r["vs_bridge"] = r["pps"] / bridge_pps
    print(f"{'path':<18}{'kpps':>10}{'vs bridge':>11}{'gen kpps':>10}{'delivered':>11}")
    for name, r in results.items():
        print(
            f"{name:<18}{r['pps'] / 1e3:>10.1f}{r['vs_bridge']:>11.2f}"
            f"{r['generated_pps'] / 1e3:>10.1f}{r['delivered_ratio']:>11.1%}"
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--flows", type=int, default=1024)
    ap.add_argument("--modes", default="ring", help="comma-separated: ring,recv")
    ap.add_argument("--generate", metavar="IFNAME", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        print(json.dumps(generate(args.generate, args.seconds, args.flows)))
        return
    if os.geteuid() != 0:
        sys.exit("bench.vnf_pps needs root (namespaces, raw sockets)")
    run(args.seconds, args.flows, tuple(m for m in args.modes.split(",") if m))


if __name__ == "__main__":
    main()
