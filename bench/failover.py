"""Packets lost when the link carrying a stream is cut (root, Mininet, Open vSwitch).

A ring of 4 switches, a 1000 pps UDP stream h1 -> h3 (opposite switches). The link the
stream uses leaving s1 is found from s1's port counters and cut; the receiver counts the
missing sequence numbers and the longest silence. Run twice in one network: with
fast-failover protection (the default policy), then with `routing: {protection: none}`,
where only the controller's reroute repairs the path.

`python -m bench failover` prints the figures; `run()` returns them as a dict. The sender
and receiver are this module run inside the Mininet hosts (`send` / `recv`).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

RATE_PPS = 1000
SECONDS = 4.0
CUT_AFTER = 1.5
PORT = 5999
HEADER = struct.Struct("!Id")  # sequence number, send time
REPO = Path(__file__).resolve().parent.parent


def send(dst: str, rate: float, seconds: float) -> None:
    """Sequence-numbered UDP datagrams at a fixed rate, paced to an absolute schedule."""
    count = int(rate * seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for seq in range(count):
            due = start + seq / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(HEADER.pack(seq, time.time()).ljust(64, b"\0"), (dst, PORT))
    print(json.dumps({"sent": count}), flush=True)


def recv(seconds: float, out: str) -> None:
    """Count datagrams until `seconds` pass with the stream over; record the gaps."""
    seqs, times = [], []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", PORT))
        sock.settimeout(0.2)
        Path(out + ".ready").touch()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            seqs.append(HEADER.unpack_from(data)[0])
            times.append(time.monotonic())
    gaps = [b - a for a, b in pairwise(times)]
    Path(out).write_text(json.dumps({
        "received": len(seqs), "unique": len(set(seqs)),
        "longest_gap_ms": round(max(gaps, default=0.0) * 1000, 1),
        "reordered": sum(1 for a, b in pairwise(seqs) if b < a),
    }))


def _port_tx(switch) -> dict[int, int]:
    out = switch.cmd("ovs-ofctl -O OpenFlow13 --no-names dump-ports", switch.name)
    return {int(p): int(tx) for p, tx in
            re.findall(r"port\s+(\d+): rx pkts=\d+.*?\n\s+tx pkts=(\d+)", out)}


def _link_in_use(net, switch: str, peers: list[str], sample: float = 0.5) -> str:
    """The neighbour of `switch` its busiest inter-switch port leads to."""
    sw = net.get(switch)
    ports = {}
    for peer in peers:
        for intf in sw.connectionsTo(net.get(peer)):
            ports[sw.ports[intf[0]]] = peer
    before = _port_tx(sw)
    time.sleep(sample)
    after = _port_tx(sw)
    busiest = max(ports, key=lambda p: after.get(p, 0) - before.get(p, 0))
    return ports[busiest]


def _stream_and_cut(net, workdir: Path, tag: str) -> dict:
    h1, h3 = net.get("h1"), net.get("h3")
    result = workdir / f"{tag}.json"
    receiver = h3.popen([sys.executable, "-m", "bench.failover", "recv",
                         str(SECONDS + 1.5), str(result)], cwd=str(REPO))
    while not Path(str(result) + ".ready").exists():
        time.sleep(0.05)
    sender = h1.popen([sys.executable, "-m", "bench.failover", "send", h3.IP(),
                       str(RATE_PPS), str(SECONDS)], stdout=subprocess.PIPE,
                      cwd=str(REPO))
    time.sleep(CUT_AFTER - 0.5)
    peer = _link_in_use(net, "s1", ["s2", "s4"])
    net.configLinkStatus("s1", peer, "down")
    out, _ = sender.communicate(timeout=SECONDS + 10)
    receiver.wait(timeout=15)
    figures = json.loads(result.read_text())
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    net.configLinkStatus("s1", peer, "up")
    return {"cut": f"s1-{peer}", "sent": sent, "lost": sent - figures["unique"],
            "outage_ms": figures["longest_gap_ms"], "duplicates":
            figures["received"] - figures["unique"], "reordered": figures["reordered"]}


def run() -> dict:
    import requests

    from testing.harness import Controller, network, ping, wait_until
    from topologies.sdn_topos import RingTopo

    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        workdir = Path(tmp)
        controller = Controller(workdir / "controller").start()
        try:
            with network(RingTopo(n=4), controller) as net:
                assert ping(net.get("h1"), net.get("h3").IP(), count=3).received == 3
                figures = {"protection": _stream_and_cut(net, workdir, "ff")}
                wait_until(lambda: len(controller.get("/v1/topology")["links"]) == 4, 15,
                           what="the cut link to come back")
                resp = requests.post(
                    f"http://{controller.api}/v1/policy", timeout=30,
                    json={"text": "version: 1\nrouting: {protection: none}\n",
                          "filename": "bench-failover.yaml"})
                resp.raise_for_status()
                wait_until(lambda: "type=ff" not in net.get("s1").cmd(
                    "ovs-ofctl -O OpenFlow13 dump-groups s1"), 10, what="ff groups to go")
                assert ping(net.get("h1"), net.get("h3").IP(), count=3).received == 3
                figures["no_protection"] = _stream_and_cut(net, workdir, "none")
        finally:
            controller.stop()
    for name, f in figures.items():
        print(f"{name}: cut {f['cut']} in a {RATE_PPS} pps stream: lost {f['lost']} of "
              f"{f['sent']}, longest gap {f['outage_ms']} ms, duplicates {f['duplicates']}, "
              f"reordered {f['reordered']}")
    return figures


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "recv":
        recv(float(sys.argv[2]), sys.argv[3])
    else:
        print(json.dumps(run(), indent=2))
