"""The ring loop in C (`ring`) and the AF_XDP loop (`xdp`) against their Python reference
(`ring-py`) on real veths: the same frames through a firewall come out the same, in the same
order, with the same counters.

a0 --veth-- va [Dataplane] vb --veth-- b0, all four in one namespace of ours. The frames cover
every verdict (forward, drop, bounce: a TCP RST for a rejected port), VLAN-tagged frames (the
kernel strips the tag into metadata, so they take the slow path, which the C loop hands back to
Python), ARP, and sizes from 60 to 1514 bytes (the C loop sends the small ones through the TX
ring and the large ones with sendmmsg, so their interleaving checks that it keeps the order),
and a TCP connection sent from both sides, whose established segments the C loop's flow cache
forwards without the firewall's Python. Needs root.

Also: a worker left to choose (`auto`) takes AF_XDP, and without the compiled module says why
it fell back to the rings; its XDP programs go when it goes, also when it is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS, netns
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from nfv.datapath.tpacket import Dataplane
from nfv.functions.firewall import Firewall

pytestmark = pytest.mark.integration

NS = "nfr-t"
LINKS = (("nfr-a0", "nfr-va"), ("nfr-vb", "nfr-b0"))
CONFIG = {
    "default": "drop",
    "rules": [
        {"action": "allow", "proto": "udp", "dst_port": 9},
        {"action": "reject", "proto": "tcp", "dst_port": 23},
        {"action": "allow", "proto": "tcp", "dst_port": 80},
    ],
}
A_MAC, B_MAC = "02:00:00:00:0a:01", "02:00:00:00:0b:01"
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not in Python's socket module
AUXDATA = struct.Struct("=IIIHHHH")  # status len snaplen mac net vlan_tci vlan_tpid
OURS = {bytes.fromhex(A_MAC.replace(":", "")), bytes.fromhex(B_MAC.replace(":", ""))}


def frames(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(400):
        sport = 10000 + i
        size = rng.choice([0, 18, 200, 1472])
        eth = Ether(src=A_MAC, dst=B_MAC)
        kind = rng.randrange(6)
        if kind == 0:
            pkt = eth / IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=sport, dport=9)
        elif kind == 1:  # no rule: dropped
            pkt = eth / IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=sport, dport=10)
        elif kind == 2:  # rejected: an RST goes back to a0
            pkt = eth / IP(src="10.7.0.1", dst="10.7.0.2") / TCP(sport=sport, dport=23, flags="S")
        elif kind == 3:
            pkt = eth / IP(src="10.7.0.1", dst="10.7.0.2") / TCP(sport=sport, dport=80, flags="S")
        elif kind == 4:  # tagged: the slow path
            pkt = eth / Dot1Q(vlan=100 + i % 3) / IP(src="10.7.0.1", dst="10.7.0.2") / UDP(
                sport=sport, dport=9
            )
        else:
            pkt = eth / ARP(psrc="10.7.0.1", pdst=f"10.7.0.{2 + i % 50}", hwsrc=A_MAC)
        raw = bytes(pkt / Raw(rng.randbytes(size))) if kind != 5 else bytes(pkt)
        out.append(raw[:1514])
    return out


def conversation(seed: int) -> list[tuple[str, bytes]]:
    """A TCP connection through the firewall, as (side it is sent from, frame): the handshake,
    data both ways (its established segments are what the C loop's flow cache forwards), the
    close, and segments after it (dropped as invalid)."""
    rng = random.Random(seed)
    cs, ss = 1000, 0xFFFFFF00  # the server's sequence numbers wrap

    def seg(side: str, flags: str, data: bytes = b"", seq: int | None = None) -> tuple[str, bytes]:
        a_to_b = side == "a"
        eth = Ether(src=A_MAC, dst=B_MAC) if a_to_b else Ether(src=B_MAC, dst=A_MAC)
        ip = IP(src="10.7.0.1", dst="10.7.0.2") if a_to_b else IP(src="10.7.0.2", dst="10.7.0.1")
        ports = (30000, 80) if a_to_b else (80, 30000)
        own, peer = (cs, ss) if a_to_b else (ss, cs)
        tcp = TCP(sport=ports[0], dport=ports[1], flags=flags,
                  seq=own if seq is None else seq, ack=peer)  # fmt: skip
        return side, bytes(eth / ip / tcp / Raw(data))

    out = [seg("a", "S")]
    cs += 1
    out.append(seg("b", "SA"))
    ss = (ss + 1) & 0xFFFFFFFF
    out.append(seg("a", "A"))
    for burst in range(6):
        side = "a" if burst % 2 == 0 else "b"
        for _ in range(rng.randrange(10, 25)):
            data = rng.randbytes(rng.choice([0, 40, 300, 700, 1400, 1460]))
            out.append(seg(side, rng.choice(["A", "PA"]), data))
            if side == "a":
                cs = (cs + len(data)) & 0xFFFFFFFF
            else:
                ss = (ss + len(data)) & 0xFFFFFFFF
    out.append(seg("a", "FA"))
    cs += 1
    out.append(seg("b", "FA"))
    ss = (ss + 1) & 0xFFFFFFFF
    out.append(seg("a", "A"))
    out.append(seg("a", "PA", b"late" * 100, seq=cs + 1000))  # far out of the window: invalid
    return out


@contextlib.contextmanager
def namespace() -> Iterator[None]:
    if NS in netns.listnetns():
        netns.remove(NS)
    netns.create(NS)
    try:
        subprocess.run(["ip", "netns", "exec", NS, "sysctl", "-qw",  # no IPv6 chatter of its own
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)  # fmt: skip
        with NetNS(NS) as ns:
            for a, b in LINKS:
                ns.link("add", ifname=a, kind="veth", peer=b)
            for name in ("lo", *(n for pair in LINKS for n in pair)):
                ns.link("set", index=ns.link_lookup(ifname=name)[0], state="up")
        yield
    finally:
        netns.remove(NS)


def raw_socket(ifname: str) -> socket.socket:
    netns.pushns(NS)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.bind((ifname, 0x0003))
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        # Room for every frame of the run: it is read only at the end, and a full buffer would
        # drop frames by their kernel size, which differs with how the VNF sent them.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    finally:
        netns.popns()
    sock.settimeout(0.05)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    """Our frames that arrived on `sock`, with the VLAN tag the kernel took off put back."""
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            data, anc, _flags, addr = sock.recvmsg(4096, socket.CMSG_SPACE(AUXDATA.size))
            if addr[2] == socket.PACKET_OUTGOING or not OURS & {data[0:6], data[6:12]}:
                continue
            for level, kind, aux in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, *_, tci, _tpid = AUXDATA.unpack_from(aux)
                    if status & TP_STATUS_VLAN_VALID:
                        data = data[:12] + struct.pack("!HH", 0x8100, tci) + data[12:]
            got.append(data)
    return got


def through(mode: str, sent: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Send `sent` from a0 or b0 (as each says) through a firewall Dataplane in `mode`; what
    came out where. Before the sending side changes, the loop has seen every frame so far, so
    the order across the two arms is the same in every run."""
    a0, b0 = raw_socket("nfr-a0"), raw_socket("nfr-b0")
    fw = Firewall(CONFIG, log=open("/dev/null", "w"))  # noqa: SIM115 - closed with the test
    netns.pushns(NS)
    try:
        dp = Dataplane(fw, "nfr-va", "nfr-vb", mode=mode)
    finally:
        netns.popns()
    loop = threading.Thread(target=dp.run, daemon=True)
    loop.start()
    def wait_seen(count: int) -> None:
        deadline = time.monotonic() + 5
        while sum(p["rx_packets"] for p in dp.stats().values()) < count:
            assert time.monotonic() < deadline, f"{mode}: the loop did not see every frame"
            time.sleep(0.005)

    try:
        for i, (side, frame) in enumerate(sent):
            if i and side != sent[i - 1][0]:
                wait_seen(i)
            (a0 if side == "a" else b0).send(frame)
            time.sleep(0.0002)  # veths hold a short backlog: do not measure its overflow
        wait_seen(len(sent))
        time.sleep(0.2)
        return {
            "compiled": dp.compiled,
            "at_b0": received(b0),
            "at_a0": received(a0),
            "stats": dp.stats(),
            "dropped": dp.dropped,
            "bounced": dp.bounced,
            "function": fw.counters(),
            "cache_hits": fw.flow_cache.hits if fw.flow_cache else 0,
        }
    finally:
        dp.stop()
        loop.join(2)
        dp.close()
        a0.close()
        b0.close()
        fw._log.close()


def test_c_loop_and_python_loop_agree_frame_for_frame() -> None:
    sent = [("a", f) for f in frames(1)] + conversation(2)
    with namespace():
        c, py = through("ring", sent), through("ring-py", sent)
    assert c["compiled"] and not py["compiled"]
    assert len(c["at_b0"]) > 150 and len(c["at_a0"]) > 30  # forwarded, and RSTs bounced
    assert c["at_b0"] == py["at_b0"]
    assert c["at_a0"] == py["at_a0"]
    assert sum(f[12:14] == b"\x81\x00" for f in c["at_b0"]) > 20  # tagged: the slow path
    assert any(len(f) > 1400 for f in c["at_b0"])
    for run in (c, py):  # how many drop log lines fit each second depends on the clock
        del run["function"]["logs_suppressed"]
    for key in ("stats", "dropped", "bounced", "function"):
        assert c[key] == py[key], key
    assert c["cache_hits"] > 50 and py["cache_hits"] == 0  # the C loop's flow cache at work
    assert c["stats"]["ingress"]["rx_packets"] + c["stats"]["egress"]["rx_packets"] == len(sent)
    assert len(c["at_b0"]) == c["stats"]["egress"]["tx_packets"]  # nothing lost on the way
    assert len(c["at_a0"]) == c["stats"]["ingress"]["tx_packets"]


def test_af_xdp_loop_agrees_with_the_python_loop() -> None:
    sent = [("a", f) for f in frames(3)] + conversation(4)
    with namespace():
        xdp, py = through("xdp", sent), through("ring-py", sent)
        assert not xdp_programs()  # taken off when the Dataplane closed
    assert xdp["compiled"]
    assert len(xdp["at_b0"]) > 150 and len(xdp["at_a0"]) > 30
    assert xdp["at_b0"] == py["at_b0"]
    assert xdp["at_a0"] == py["at_a0"]
    for run in (xdp, py):
        del run["function"]["logs_suppressed"]
    for key in ("dropped", "bounced", "function"):
        assert xdp[key] == py[key], key
    # The rings see a tagged frame without its tag (the kernel keeps it aside); XDP sees it
    # whole. Every other counter is the same.
    tagged = sum(f[12:14] == b"\x81\x00" for side, f in sent if side == "a")
    assert tagged > 20
    assert (xdp["stats"]["ingress"].pop("rx_bytes")
            == py["stats"]["ingress"].pop("rx_bytes") + 4 * tagged)  # fmt: skip
    assert xdp["stats"] == py["stats"]
    assert xdp["cache_hits"] > 50


def xdp_programs() -> list[str]:
    """The interfaces of our namespace that have an XDP program attached."""
    out = subprocess.run(["ip", "-n", NS, "-o", "link", "show"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if "prog/xdp" in line]  # fmt: skip


@contextlib.contextmanager
def worker(stats: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    config = stats.with_suffix(".config.json")
    config.write_text("{}")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-m", "nfv.datapath.worker", "--kind",
         "forward", "--config", str(config), "--ingress", "nfr-va", "--egress", "nfr-vb",
         "--stats", str(stats)],
        env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not stats.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_auto_takes_af_xdp_and_a_killed_worker_leaves_no_program(tmp_path: Path) -> None:
    with namespace():
        with worker(tmp_path / "xdp.json", {}) as proc:
            doc = json.loads((tmp_path / "xdp.json").read_text())
            assert (doc["mode"], doc["xdp_attach"], doc["xdp_unavailable"]) == ("xdp", "native", "")
            assert xdp_programs() == ["nfr-va", "nfr-vb"]
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        deadline = time.monotonic() + 5
        while xdp_programs():  # the links' descriptors closed with the process
            assert time.monotonic() < deadline, xdp_programs()
            time.sleep(0.05)
        with worker(tmp_path / "py.json", {"NFV_PURE_PYTHON": "1"}):
            doc = json.loads((tmp_path / "py.json").read_text())
            assert (doc["mode"], doc["xdp_attach"]) == ("ring", "")
            assert "compiled module" in doc["xdp_unavailable"]
            assert not xdp_programs()
        with worker(tmp_path / "ring.json", {"NFV_MODE": "ring"}):  # a benchmark's choice
            doc = json.loads((tmp_path / "ring.json").read_text())
            assert (doc["mode"], doc["compiled"], doc["xdp_unavailable"]) == ("ring", True, "")
            assert not xdp_programs()
