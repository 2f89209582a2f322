"""Per-packet cost of the load balancer and the analyzer, and Maglev rebuild time.

Runs the functions directly on prebuilt frames (no sockets), so the figures are the
functions' own cost, the ceiling they put on a worker. `python -m bench.lb_analyzer`
prints them; `run()` returns them as a dict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from nfv.datapath.function import Side
from nfv.functions.analyzer import Analyzer
from nfv.functions.loadbalancer import LoadBalancer
from nfv.functions.maglev import Maglev

VIP = "10.0.0.100"
BACKENDS = ["10.0.0.3", "10.0.0.4", "10.0.0.5"]


def _rate(frames: list[bytearray], fn: Callable[[memoryview, int], object]) -> float:
    """Frames per second through `fn`, each frame copied into a scratch buffer as the loop does."""
    scratch = bytearray(2048)
    view = memoryview(scratch)
    start = time.perf_counter()
    for f in frames:
        n = len(f)
        scratch[:n] = f
        fn(view, n)
    return len(frames) / (time.perf_counter() - start)


def _client_frames(n: int, flags: str, payload: int) -> list[bytearray]:
    tpl = (
        Ether(dst="02:00:00:00:01:00")
        / IP(src="10.1.0.1", dst=VIP)
        / TCP(sport=1, dport=80, flags=flags)
        / Raw(b"x" * payload)
    )
    base = bytes(tpl)
    frames = []
    for i in range(n):
        f = bytearray(base)
        f[34:36] = (1024 + i % 60000).to_bytes(2, "big")
        f[29] = 1 + i // 60000  # spread over client addresses too (checksums are irrelevant)
        frames.append(f)
    return frames


def bench_maglev() -> dict[str, float]:
    out = {}
    for n in (3, 10, 100):
        keys = [f"10.0.{i // 250}.{i % 250}:80" for i in range(n)]
        start = time.perf_counter()
        Maglev(keys, keys)
        out[f"maglev_rebuild_ms_{n}_backends"] = (time.perf_counter() - start) * 1000
    return out


def bench_lb(n: int = 100_000) -> dict[str, float]:
    lb = LoadBalancer(
        {
            "vip": VIP,
            "port": 80,
            "backends": BACKENDS,
            "health_check": {"interval": 1000, "timeout": 1000},
        }
    )
    for i, ip in enumerate(BACKENDS):
        garp = bytes(
            Ether(src=f"00:00:00:00:00:0{i + 3}", dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=2, hwsrc=f"00:00:00:00:00:0{i + 3}", psrc=ip, pdst=ip)
        )
        lb.process(memoryview(bytearray(garp)), len(garp), Side.EGRESS, 0.0)

    def step(view: memoryview, length: int) -> None:
        lb.process(view, length, Side.INGRESS, 1.0)

    new = _rate(_client_frames(n, "S", 0), step)
    established = _rate(_client_frames(n, "A", 64), step)
    return {"lb_new_conn_pps": new, "lb_established_pps": established}


def bench_analyzer(n: int = 100_000) -> dict[str, float]:
    an = Analyzer({})

    def step(view: memoryview, length: int) -> None:
        an.process(view, length, Side.INGRESS, 1.0)

    new = _rate(_client_frames(n, "S", 0), step)
    established = _rate(_client_frames(n, "A", 64), step)
    return {"analyzer_new_flow_pps": new, "analyzer_established_pps": established}


def run() -> dict[str, float]:
    figures = {**bench_maglev(), **bench_lb(), **bench_analyzer()}
    for name, value in figures.items():
        print(f"{name:32s} {value:12.1f}")
    return figures


if __name__ == "__main__":
    print(json.dumps(run()))
