"""The firewall worker on real veths: client ns -> VNF ns (nfv.datapath.worker) -> server ns.

Allowed TCP connects and echoes, a rejected port is refused at once (RST from the firewall), a
denied port times out, ping passes, and the worker's stats file says so. Needs root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS_A, NS_V, NS_B = "nf1-ta", "nf1-tv", "nf1-tb"
IP_A, IP_B = "10.9.1.1", "10.9.1.2"
ALLOWED, REJECTED, DENIED = 8080, 8081, 8082

CONFIG = {
    "default": "drop",
    "rules": [
        {"action": "allow", "proto": "tcp", "dst": f"{IP_B}/32", "dst_port": ALLOWED},
        {"action": "reject", "proto": "tcp", "dst_port": REJECTED},
        {"action": "allow", "proto": "icmp", "icmp_type": 8},
    ],
}

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(c.recv(1024)); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = """
import json, socket, sys, time
out = {}
for port in map(int, sys.argv[2:]):
    t = time.monotonic()
    try:
        with socket.create_connection((sys.argv[1], port), timeout=2) as s:
            s.sendall(b"hello nfv"); out[port] = s.recv(1024).decode()
    except ConnectionRefusedError:
        out[port] = "refused"
    except OSError:
        out[port] = "timeout"
    out[f"{port}_s"] = time.monotonic() - t
print(json.dumps(out))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def teardown() -> None:
    for ns in (NS_A, NS_V, NS_B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def line() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root")
    teardown()
    try:
        for ns in (NS_A, NS_V, NS_B):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for host, ns_host, vnf_if, ip in (("nf1-ta0", NS_A, "nf1-tva", IP_A),
                                          ("nf1-tb0", NS_B, "nf1-tvb", IP_B)):  # fmt: skip
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", vnf_if)
            sh("ip", "link", "set", host, "netns", ns_host)
            sh("ip", "link", "set", vnf_if, "netns", NS_V)
            sh("ip", "-n", ns_host, "addr", "add", f"{ip}/24", "dev", host)
            sh("ip", "-n", ns_host, "link", "set", host, "up")
            sh("ip", "-n", NS_V, "link", "set", vnf_if, "up")
            sh(*in_ns(ns_host, "ethtool", "-K", host, "tx", "off"))
        yield
    finally:
        teardown()


def test_firewall_worker_between_namespaces(line: None, tmp_path: Path) -> None:
    cfg = tmp_path / "fw.json"
    cfg.write_text(json.dumps(CONFIG))
    stats = tmp_path / "stats.json"
    procs: list[subprocess.Popen[str]] = []
    try:
        worker = subprocess.Popen(
            in_ns(NS_V, sys.executable, "-m", "nfv.datapath.worker", "--kind", "firewall",
                  "--config", str(cfg), "--ingress", "nf1-tva", "--egress", "nf1-tvb",
                  "--stats", str(stats)),
            cwd=ROOT, text=True, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(worker)
        server = subprocess.Popen(
            in_ns(NS_B, sys.executable, "-c", SERVER, str(ALLOWED), str(REJECTED), str(DENIED)),
            text=True, stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while not stats.exists():
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "worker wrote no stats"
            time.sleep(0.05)

        ping = subprocess.run(in_ns(NS_A, "ping", "-c", "3", "-i", "0.2", "-W", "2", IP_B),
                              capture_output=True, text=True)  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr

        client = subprocess.run(
            in_ns(NS_A, sys.executable, "-c", CLIENT, IP_B, str(ALLOWED), str(REJECTED),
                  str(DENIED)),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        got = json.loads(client.stdout)
        assert got[str(ALLOWED)] == "hello nfv"
        assert got[str(REJECTED)] == "refused" and got[f"{REJECTED}_s"] < 1.0
        assert got[str(DENIED)] == "timeout"

        time.sleep(1.2)  # one more stats period
        doc = json.loads(stats.read_text())
        fn = doc["function"]
        assert doc["kind"] == "firewall" and doc["pid"] > 0
        assert fn["bounced"] >= 1 and fn["denied"] >= 1
        assert fn["established"] >= 6 and fn["rules"][0]["hits"] == 1
        assert fn["processed"] == fn["forwarded"] + fn["dropped"] + fn["bounced"]
        assert doc["ports"]["ingress"]["rx_packets"] > 0
        assert doc["ports"]["egress"]["tx_packets"] > 0

        worker.terminate()
        assert worker.wait(5) == 0
        final = json.loads(stats.read_text())
        assert final["updated"] >= doc["updated"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
