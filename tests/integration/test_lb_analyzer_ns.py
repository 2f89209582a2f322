"""The analyzer and the load balancer in real namespaces, driven by `python -m nfv.datapath.worker`.

Analyzer: client ns -- [nf2a: analyzer worker] -- server ns. Real TCP and UDP traffic runs
across while tcpdump captures the client's interface; the analyzer's exported per-flow
packet and byte counts must equal tshark's `-z conv,tcp` / `-z conv,udp` for every flow.

Load balancer: client ns -- [nf2l: LB worker] -- bridge ns -- two backend namespaces. The
client reaches the VIP only through the LB (ARP answered by it, DNAT to the backends, reverse
NAT back); connections spread over both backends; when one backend goes silent, new
connections all land on the other within a second.

Everything is named nf2*, removed by exact name in fixture teardown, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

SERVER = textwrap.dedent("""
    import socket, sys, threading
    name, port = sys.argv[1].encode(), int(sys.argv[2])
    def serve(conn):
        with conn:
            buf = b""
            while not buf.endswith(b"\\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            conn.sendall(name + b" " + b"x" * int(buf.split()[-1]))
    def udp():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", port))
        while True:
            data, peer = u.recvfrom(65535)
            u.sendto(name + b" " + data, peer)
    threading.Thread(target=udp, daemon=True).start()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys
    dst, port, plan = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    out = []
    for kind, size in plan:
        try:
            if kind == "tcp":
                c = socket.create_connection((dst, port), timeout=float(sys.argv[4]))
                c.sendall(b"%d\\n" % size)
                data = b""
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                c.close()
            else:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.settimeout(float(sys.argv[4]))
                u.sendto(b"y" * size, (dst, port))
                data = u.recv(65535)
                u.close()
            out.append(data.split(b" ")[0].decode())
        except OSError as exc:
            out.append("error: %s" % exc)
    print(json.dumps(out))
""")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def ns(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", name, *args, check=check)


def popen(name: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", name, *args], text=True, **kw)


class Net:
    """Namespaces and veths created by one test; removed by exact name."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def netns(self, name: str) -> str:
        sh("ip", "netns", "del", name, check=False)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        ns(name, "ip", "link", "set", "lo", "up")
        ns(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        return name

    def veth(self, a_ns: str, a: str, b_ns: str, b: str) -> None:
        sh("ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns)
        for n, dev in ((a_ns, a), (b_ns, b)):
            ns(n, "ethtool", "-K", dev, "tx", "off")
            ns(n, "ip", "link", "set", dev, "up")

    def start(self, name: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
        proc = popen(name, *args, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for name in self.namespaces:  # deleting a namespace deletes the veths inside it
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root")
    n = Net()
    try:
        yield n
    finally:
        n.close()


def start_worker(
    net: Net, where: str, kind: str, config: dict[str, Any], ingress: str, egress: str, tmp: Path
) -> Path:
    cfg = tmp / f"{kind}.json"
    cfg.write_text(json.dumps(config))
    stats = tmp / f"{kind}.stats.json"
    with open(tmp / f"{kind}.log", "w") as log:  # the child keeps its own descriptor
        net.start(
            where,
            PY,
            "-m",
            "nfv.datapath.worker",
            "--kind",
            kind,
            "--config",
            str(cfg),
            "--ingress",
            ingress,
            "--egress",
            egress,
            "--stats",
            str(stats),
            cwd=str(ROOT),
            stderr=log,
        )
    end = time.monotonic() + 10
    while not stats.exists():
        if time.monotonic() > end:
            pytest.fail(f"{kind} worker did not start: {(tmp / f'{kind}.log').read_text()}")
        time.sleep(0.05)
    return stats


def wait_for(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(what)
        time.sleep(0.05)


def start_server(net: Net, where: str, name: str, port: int) -> None:
    proc = net.start(where, PY, "-c", SERVER, name, str(port), stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def run_client(
    where: str, dst: str, port: int, plan: list[tuple[str, int]], timeout: float = 2.0
) -> list[str]:
    out = ns(where, PY, "-c", CLIENT, dst, str(port), json.dumps(plan), str(timeout))
    return json.loads(out.stdout)


# --- analyzer vs tshark ------------------------------------------------------------------

CONV = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\d+)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\w+)"
)
UNIT = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def tshark_conversations(pcap: Path) -> dict[tuple[str, str, int, str, int], dict[str, Any]]:
    """(proto, A, port A, B, port B) -> frames and bytes each way ("->" is A to B).

    tshark prints bytes exactly below 10000 and rounded to a unit above, so byte counts come
    back as (low, high) bounds.
    """
    out = sh("tshark", "-r", str(pcap), "-q", "-z", "conv,tcp", "-z", "conv,udp").stdout
    convs: dict[tuple[str, str, int, str, int], dict[str, Any]] = {}
    proto = ""
    for line in out.splitlines():
        if "Conversations" in line:
            proto = line.split()[0].lower()
        m = CONV.match(line)
        if not m:
            continue
        a, pa, b, pb, fb, nb, ub, fa, na, ua = m.groups()

        def bounds(n: str, unit: str) -> tuple[int, int]:
            scale = UNIT[unit]
            return (int(n) * scale - (scale if scale > 1 else 0), int(n) * scale + scale - 1)

        convs[(proto, a, int(pa), b, int(pb))] = {
            "a_to_b": (int(fa), bounds(na, ua)),
            "b_to_a": (int(fb), bounds(nb, ub)),
        }
    return convs


def test_analyzer_counts_match_tshark(net: Net, tmp_path: Path) -> None:
    client, mon, server = net.netns("nf2c"), net.netns("nf2a"), net.netns("nf2s")
    net.veth(client, "nf2c0", mon, "nf2ai")
    net.veth(mon, "nf2ao", server, "nf2s0")
    ns(client, "ip", "addr", "add", "10.202.0.1/24", "dev", "nf2c0")
    ns(server, "ip", "addr", "add", "10.202.0.2/24", "dev", "nf2s0")
    export = tmp_path / "flows.jsonl"
    start_worker(
        net,
        mon,
        "analyzer",
        {"idle_timeout": 2, "active_timeout": 60, "export_path": str(export)},
        "nf2ai",
        "nf2ao",
        tmp_path,
    )
    start_server(net, server, "srv", 8080)
    pcap = tmp_path / "client.pcap"
    dump = net.start(
        client, "tcpdump", "-U", "-n", "-i", "nf2c0", "-w", str(pcap), stderr=subprocess.PIPE
    )
    assert dump.stderr is not None and "listening" in dump.stderr.readline()
    plan = [
        ("tcp", 10),
        ("tcp", 3000),
        ("tcp", 200_000),
        ("udp", 100),
        ("udp", 1400),
        ("tcp", 0),
        ("udp", 20),
    ]
    assert run_client(client, "10.202.0.2", 8080, plan) == ["srv"] * len(plan)
    # FIN-ended flows are exported after a 1 s linger, UDP ones after the 2 s idle timeout.
    time.sleep(3.5)
    dump.send_signal(signal.SIGTERM)
    dump.wait(timeout=5)
    records = [json.loads(line) for line in export.read_text().splitlines()]
    flows = {
        (r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]): r
        for r in records
        if r["proto"] in ("tcp", "udp")
    }
    convs = tshark_conversations(pcap)
    assert len(convs) == len(plan)
    assert len(flows) == len(records) == len(plan), records
    for (proto, a, pa, b, pb), conv in convs.items():
        if (proto, a, pa, b, pb) in flows:
            rec, fwd = flows[(proto, a, pa, b, pb)], "a_to_b"
        else:
            rec, fwd = flows[(proto, b, pb, a, pa)], "b_to_a"
        rev = "b_to_a" if fwd == "a_to_b" else "a_to_b"
        for side, key in (("orig", fwd), ("resp", rev)):
            frames, (lo, hi) = conv[key]
            assert rec[f"{side}_pkts"] == frames, (rec, conv)
            assert lo <= rec[f"{side}_l2_bytes"] <= hi, (rec, conv)
        if proto == "tcp":
            assert rec["conn_state"] == "SF" and rec["end_reason"] == "fin", rec
            assert rec["history"].startswith("ShA"), rec
        else:
            assert rec["end_reason"] == "idle" and rec["history"] == "Dd", rec


# --- load balancer -----------------------------------------------------------------------

VIP = "10.202.1.100"


def test_load_balancer_spreads_and_fails_over(net: Net, tmp_path: Path) -> None:
    client, lb, sw = net.netns("nf2c"), net.netns("nf2l"), net.netns("nf2b")
    s1, s2 = net.netns("nf2s1"), net.netns("nf2s2")
    net.veth(client, "nf2c0", lb, "nf2li")
    net.veth(lb, "nf2le", sw, "nf2bl")
    net.veth(s1, "nf2s1e", sw, "nf2b1")
    net.veth(s2, "nf2s2e", sw, "nf2b2")
    ns(sw, "ip", "link", "add", "nf2br", "type", "bridge")
    for dev in ("nf2bl", "nf2b1", "nf2b2"):
        ns(sw, "ip", "link", "set", dev, "master", "nf2br")
    ns(sw, "ip", "link", "set", "nf2br", "up")
    ns(client, "ip", "addr", "add", "10.202.1.1/24", "dev", "nf2c0")
    ns(s1, "ip", "addr", "add", "10.202.1.11/24", "dev", "nf2s1e")
    ns(s2, "ip", "addr", "add", "10.202.1.12/24", "dev", "nf2s2e")
    start_server(net, s1, "s1", 8080)
    start_server(net, s2, "s2", 8080)
    stats = start_worker(
        net,
        lb,
        "loadbalancer",
        {
            "vip": VIP,
            "vip_mac": "02:00:00:00:02:64",
            "port": 80,
            "proto": "tcp",
            "backends": [{"ip": "10.202.1.11", "port": 8080}, {"ip": "10.202.1.12", "port": 8080}],
        },
        "nf2li",
        "nf2le",
        tmp_path,
    )

    def function() -> dict[str, Any]:
        return json.loads(stats.read_text())["function"]

    wait_for(
        lambda: all(b["mac"] and b["probes_ok"] for b in function()["backends"].values()),
        10,
        "backends never answered the health checks",
    )
    got = run_client(client, VIP, 80, [("tcp", 100)] * 60)
    assert set(got) == {"s1", "s2"}, got
    assert min(Counter(got).values()) >= 15
    wait_for(lambda: function()["outcomes"]["unnat"] >= 60 * 4, 3, "stats never showed the NAT")
    c = function()
    assert c["outcomes"]["nat"] >= 60 * 4  # SYN, request, ACK(s), FIN per connection
    assert c["nat_errors"]["mac_unknown"] == 0
    # s1 goes silent (link down: no RST, no answer at all).
    ns(s1, "ip", "link", "set", "nf2s1e", "down")
    time.sleep(1.0)
    got = run_client(client, VIP, 80, [("tcp", 100)] * 30, timeout=1.0)
    assert got == ["s2"] * 30, got
    wait_for(
        lambda: function()["backends"]["10.202.1.11:8080"]["healthy"] is False,
        3,
        "the silent backend is still marked healthy",
    )
    ns(s1, "ip", "link", "set", "nf2s1e", "up")
    wait_for(
        lambda: function()["backends"]["10.202.1.11:8080"]["healthy"] is True,
        5,
        "the backend did not come back",
    )
    got = run_client(client, VIP, 80, [("tcp", 10)] * 40)
    assert set(got) == {"s1", "s2"}, got
