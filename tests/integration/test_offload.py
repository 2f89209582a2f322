"""Flow offload on real switches: a firewall with `offload: true` settles a TCP download
after the handshake, the controller installs a bypass that skips the firewall only, the
analyzer still sees (and counts) every packet, the bypass's OpenFlow counters come back
through /v1/offload, and the bypass idles out after the download ends."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sdn.compile.chain_model import BYPASS_IDLE_TIMEOUT, bypass_cookie
from testing.harness import network, ping, wait_until
from topologies.sdn_topos import LinearTopo

CLIENT, SERVER = "10.0.0.1", "10.0.0.5"
SIZE = 24 * 1024 * 1024
RATE = 3 * 1024 * 1024  # bytes/s the client reads: the download lasts about 8 s
POLICY = f"""\
version: 1
vnfs:
  fw:  {{type: firewall, switch: s1, offload: true, default: drop,
        rules: [{{action: allow, proto: tcp, src: {CLIENT}, dst: {SERVER}, dst_port: 80}}]}}
  mon: {{type: analyzer, switch: s2, failure_mode: open}}
chains:
  - {{name: web, match: {{proto: tcp, dst: {SERVER}, dst_port: 80}}, through: [fw, mon]}}
"""
# Reads the download at RATE; prints its local port first, the bytes it got last.
DOWNLOAD = """
import socket, sys, time
rate = float(sys.argv[1])
s = socket.create_connection((sys.argv[2], 80))
print(s.getsockname()[1], flush=True)
s.sendall(b"GET /big HTTP/1.0\\r\\nHost: server\\r\\n\\r\\n")
total, start = 0, time.monotonic()
while True:
    data = s.recv(65536)
    if not data:
        break
    total += len(data)
    ahead = total / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
s.close()
print(total, flush=True)
"""


def vnf_status(controller, name: str) -> dict:
    return next(v for v in controller.get("/v1/vnfs")["vnfs"] if v["name"] == name)


def vnf_function(controller, name: str) -> dict:
    return json.loads(Path(vnf_status(controller, name)["stats_file"]).read_text())["function"]


def bypass_lines(switch, cookie: int) -> list[str]:
    out = switch.cmd(f"ovs-ofctl -O OpenFlow13 dump-flows {switch.name}")
    return [line for line in out.splitlines() if f"cookie={cookie:#x}," in line]


def n_packets(lines: list[str]) -> int:
    return sum(int(re.search(r"n_packets=(\d+)", line).group(1)) for line in lines)


def dry_run_flow_mods(controller) -> int:
    resp = requests.post(f"http://{controller.api}/v1/policy",
                         json={"text": POLICY, "dry_run": True}, timeout=30)
    resp.raise_for_status()
    return resp.json()["flow_mods"]


@pytest.fixture
def chain(controller, tmp_path):
    """Linear s1-s2-s3, two hosts each; a web server on h5 with a big file; fw -> mon."""
    with network(LinearTopo(n=3, hosts_per_switch=2), controller) as net:
        root = tmp_path / "www"
        root.mkdir()
        (root / "big").write_bytes(bytes(range(256)) * (SIZE // 256))
        server = net.get("h5").popen(
            ["python3", "-m", "http.server", "80", "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            policy = tmp_path / "offload.yaml"
            policy.write_text(POLICY)
            resp = requests.post(f"http://{controller.api}/v1/policy",
                                 json={"text": POLICY, "filename": str(policy)}, timeout=120)
            assert resp.status_code == 200, resp.text
            wait_until(lambda: all(v["state"] == "running"
                                   for v in controller.get("/v1/vnfs")["vnfs"]), 20,
                       what="VNFs running")
            for host in net.hosts:  # every host known to the controller
                ping(host, "10.0.0.3")
            wait_until(lambda: ":80 " in net.get("h5").cmd("ss -ltn"), 10, what="web server")
            yield net
        finally:
            server.terminate()
            server.wait(5)


def test_settled_download_bypasses_the_firewall_and_stays_counted(chain, controller):
    s1, s2 = chain.get("s1"), chain.get("s2")
    client = chain.get("h1").popen(
        [sys.executable, "-c", DOWNLOAD, str(RATE), SERVER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(client.stdout.readline())
        connected = time.monotonic()
        five = (6, CLIENT, port, SERVER, 80)
        cookie = bypass_cookie("web", five)

        # The handshake went through the firewall, which settled the flow: a bypass
        # appears on the client's switch (forward) and after the analyzer (replies).
        forward = wait_until(lambda: bypass_lines(s1, cookie), 10, interval=0.05,
                             what="bypass on s1")
        settle_seconds = time.monotonic() - connected
        assert f"tp_src={port}" in forward[0] and f"idle_timeout={BYPASS_IDLE_TIMEOUT}" in \
            forward[0], forward
        wait_until(lambda: bypass_lines(s2, cookie), 5, what="bypass on s2")
        assert dry_run_flow_mods(controller) == 0  # the bypasses are part of the held state

        time.sleep(1.5)  # the VNFs' stats files (rewritten every second) catch up
        fw1, mon1 = vnf_function(controller, "fw"), vnf_function(controller, "mon")
        of1 = n_packets(bypass_lines(s1, cookie)) + n_packets(bypass_lines(s2, cookie))
        time.sleep(2.5)
        assert client.poll() is None, "the download ended too early to see the bypass at work"
        fw2, mon2 = vnf_function(controller, "fw"), vnf_function(controller, "mon")
        of2 = n_packets(bypass_lines(s1, cookie)) + n_packets(bypass_lines(s2, cookie))
        assert fw2["processed"] - fw1["processed"] <= 2, (fw1["processed"], fw2["processed"])
        assert mon2["frames"] - mon1["frames"] > 500, (mon1["frames"], mon2["frames"])
        assert of2 - of1 > 500, (of1, of2)

        live = next(f for f in controller.get("/v1/offload")["flows"]
                    if f["flow"]["sport"] == port)
        assert live["state"] == "active" and live["settled_by"] == ["fw"]
        assert live["forward"]["packets"] > 0 and live["reverse"]["bytes"] > 1_000_000
        assert {r["switch"] for r in live["rules"]} == {f"{1:016x}", f"{2:016x}"}

        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        received = int(out.split()[-1])
        assert received > SIZE
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)

    # The analyzer saw the whole download, bypass or not: its record of the connection
    # counts what the client received, byte for byte (sequence space, as Zeek counts: the
    # retransmissions a loaded machine causes do not count twice).
    flows_file = Path(vnf_status(controller, "mon")["stats_file"]).with_suffix(".flows.jsonl")

    def record():
        if not flows_file.exists():
            return None
        for line in flows_file.read_text().splitlines():
            rec = json.loads(line)
            if rec["id.orig_h"] == CLIENT and rec["id.orig_p"] == port:
                return rec
        return None

    rec = wait_until(record, 10, what="the analyzer's record of the download")
    assert rec["resp_bytes"] == received, (rec["resp_bytes"], received)

    # After the flow ends the bypass idles out everywhere, and the controller forgets it:
    # nothing re-adds it, and its final OpenFlow counts stay readable.
    wait_until(lambda: not bypass_lines(s1, cookie) and not bypass_lines(s2, cookie),
               BYPASS_IDLE_TIMEOUT + 10, interval=0.5, what="bypass rules idled out")
    ended = wait_until(lambda: next((f for f in controller.get("/v1/offload")["flows"]
                                     if f["flow"]["sport"] == port
                                     and f["state"] == "ended"), None),
                       5, what="/v1/offload to show the flow ended")
    held = controller.get("/v1/flows")
    assert not [r for sw in held.values() for r in sw["flows"] if int(r["cookie"], 16) == cookie]
    assert dry_run_flow_mods(controller) == 0
    # Counted by the switch: every reply packet after the bypass went in, the analyzer
    # having counted those plus the ones before.
    assert 0 < ended["reverse"]["packets"] <= rec["resp_pkts"]
    assert ended["reverse"]["packets"] > rec["resp_pkts"] // 2, (ended, rec)
    print(f"\noffload: client received {received} B; analyzer resp_bytes {rec['resp_bytes']}, "
          f"resp_pkts {rec['resp_pkts']}; bypass counted {ended['forward']} forward, "
          f"{ended['reverse']} reverse; firewall processed {fw2['processed']} packets; "
          f"bypass on s1 {settle_seconds:.2f}s after connect",
          file=sys.stderr)


def test_a_download_survives_a_controller_restart_with_its_bypass(chain, controller):
    """kill -9 of the controller in the middle of an offloaded download: the firewall is
    taken over with its connection, the bypass is learned again from its report before
    the switches are reconciled (so it is never touched), and the download completes."""
    s1 = chain.get("s1")
    client = chain.get("h1").popen(
        [sys.executable, "-c", DOWNLOAD, str(RATE), SERVER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(client.stdout.readline())
        cookie = bypass_cookie("web", (6, CLIENT, port, SERVER, 80))
        wait_until(lambda: bypass_lines(s1, cookie), 10, interval=0.05, what="bypass on s1")
        fw_pid = vnf_status(controller, "fw")["pid"]

        controller.stop(signal.SIGKILL)
        controller.start()
        controller.wait_topology(3, 2)
        time.sleep(3.5)  # past the reconcile grace period
        assert client.poll() is None, "the download ended before the restart was over"
        assert vnf_status(controller, "fw")["pid"] == fw_pid
        assert bypass_lines(s1, cookie), "the bypass went away with the old controller"
        assert controller.metric("sdn_flow_mods_total") == 0  # not even dropped and re-added
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        assert int(out.split()[-1]) > SIZE
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
    assert controller.errors() == []
