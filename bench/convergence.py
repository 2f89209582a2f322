"""Convergence on ISP-sized backbones (root, Mininet, Open vSwitch userspace datapath).

Per size (seeded ISP-like graphs, one host per switch; `topologies.sdn_topos.isp_links`)
the network is built first and the controller started into it, as an operator would:

- discovery: seconds from controller start until every switch and link is known;
- all pairs: seconds from controller start until every sampled host pair (PAIRS) pings;
- shortest: sampled pairs whose `/v1/path` has as many switches as networkx's shortest;
- steady window (STEADY_SECONDS): link flaps (links timed out or lost), packet-ins per
  second and controller CPU seconds per second; then the sampled pairs again (loss %);
- repair: a 1000 pps UDP stream between the farthest sampled pair, the middle link of
  its path cut: packets lost and the longest gap;
- peers: the same bridges under FAUCET (a stack of DPs; bench.faucet_peer), then without a
  controller in Open vSwitch's standalone mode with RSTP: seconds until every sampled pair
  pings, and our ratio to each.

`python -m bench convergence` runs 50, 100 and 200 switches; `python -m bench.convergence
N [N...]` runs the sizes given.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import requests

from bench import faucet_peer
from testing.harness import empty_tables, unreachable

SIZES = (50, 100, 200)
SEED = 1
PAIRS = 200
STEADY_SECONDS = 60.0
REACH_TIMEOUT = 120.0
RATE_PPS = 1000
STREAM_SECONDS = 4.0
REPO = Path(__file__).resolve().parent.parent


def sample_pairs(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    """Distinct ordered host pairs (1-based: hN hangs off sN), all of them if fewer."""
    every = [(a, b) for a in range(1, n + 1) for b in range(1, n + 1) if a != b]
    return sorted(random.Random(seed).sample(every, min(count, len(every))))


def time_to_reach(net, pairs: list[tuple[int, int]], since: float) -> float | None:
    """Seconds from `since` until every pair has pinged once (None: not within
    REACH_TIMEOUT); a pair that answered once is not asked again."""
    waiting = list(pairs)
    progress = []
    while waiting:
        if time.monotonic() - since > REACH_TIMEOUT:
            return None
        waiting = unreachable(net, waiting)
        progress.append(f"{time.monotonic() - since:.0f}s:{len(waiting)}")
    print(f"  pairs still unreachable after each round: {' '.join(progress)}", flush=True)
    return round(time.monotonic() - since, 1)


def graph_of(n: int, seed: int) -> nx.Graph:
    from topologies.sdn_topos import isp_links

    return nx.Graph((a + 1, b + 1) for a, b in isp_links(n, seed))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def counters(controller) -> dict[str, float]:
    return {
        "packet_in": sum(controller.metric(f'sdn_packet_in_total{{kind="{kind}"}}')
                         for kind in ("lldp", "arp", "learn", "miss")),
        "flaps": sum(controller.metric(f'sdn_link_events_total{{event="{event}"}}')
                     for event in ("timed out", "port down")),
        "cpu": cpu_seconds(controller.proc.pid),
    }


def shortest_paths(controller, graph: nx.Graph, pairs: list[tuple[int, int]]) -> int:
    """How many of `pairs` the controller routes over as few switches as networkx (a host
    it does not know has no path)."""
    good = 0
    for a, b in pairs:
        try:
            hops = controller.get("/v1/path", src=f"10.0.0.{a}", dst=f"10.0.0.{b}")["hops"]
        except requests.HTTPError:
            continue
        good += len(hops) == nx.shortest_path_length(graph, a, b) + 1
    return good


def cut_repair(net, controller, workdir: Path, graph: nx.Graph,
               pairs: list[tuple[int, int]]) -> dict:
    """Cut the middle link of the longest sampled path under a UDP stream."""
    a, b = max(pairs, key=lambda p: nx.shortest_path_length(graph, *p))
    hops = controller.get("/v1/path", src=f"10.0.0.{a}", dst=f"10.0.0.{b}")["hops"]
    middle = len(hops) // 2
    cut = (hops[middle - 1]["name"], hops[middle]["name"])
    result = workdir / "stream.json"
    receiver = net.get(f"h{b}").popen([sys.executable, "-m", "bench.failover", "recv",
                                       str(STREAM_SECONDS + 1.5), str(result)], cwd=str(REPO))
    while not Path(str(result) + ".ready").exists():
        time.sleep(0.05)
    sender = net.get(f"h{a}").popen(
        [sys.executable, "-m", "bench.failover", "send", net.get(f"h{b}").IP(),
         str(RATE_PPS), str(STREAM_SECONDS)], stdout=subprocess.PIPE, cwd=str(REPO))
    time.sleep(1.0)
    net.configLinkStatus(*cut, "down")
    out, _ = sender.communicate(timeout=STREAM_SECONDS + 10)
    receiver.wait(timeout=15)
    figures = json.loads(result.read_text())
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    net.configLinkStatus(*cut, "up")
    return {"pair": f"h{a}->h{b}", "hops": len(hops), "cut": "-".join(cut), "sent": sent,
            "lost": sent - figures["unique"], "longest_gap_ms": figures["longest_gap_ms"]}


def rstp_peer(net, pairs: list[tuple[int, int]]) -> float | None:
    """The same bridges on their own: standalone, RSTP, no controller, no rules of ours."""
    names = [sw.name for sw in net.switches]
    command = ["ovs-vsctl"]
    for name in names:
        command += ["--", "del-controller", name, "--", "set-fail-mode", name, "standalone",
                    "--", "set", "bridge", name, "rstp_enable=true"]
    empty_tables(net)
    since = time.monotonic()
    subprocess.run(command, check=True)
    return time_to_reach(net, pairs, since)


def faucet(net, pairs: list[tuple[int, int]], workdir: Path) -> float | str | None:
    """The same bridges under FAUCET (a stack, see bench.faucet_peer): seconds from its
    start until every sampled pair pings."""
    if not faucet_peer.available():
        return "not installed (make bench builds .venv-faucet)"
    since = time.monotonic()
    with faucet_peer.running(net, workdir / "faucet"):
        return time_to_reach(net, pairs, since)


def measure(n: int, seed: int = SEED, steady: float = STEADY_SECONDS,
            peer: bool = True, keep: Path | None = None) -> dict:
    """The figures of one size; `keep` keeps the controller's state dir (its log)."""
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        return _measure(n, seed, steady, peer, keep or Path(tmp))


def _measure(n: int, seed: int, steady: float, peer: bool, workdir: Path) -> dict:
    from testing.harness import Controller, network, wait_until
    from topologies.sdn_topos import IspTopo

    graph = graph_of(n, seed)
    pairs = sample_pairs(n, PAIRS, seed)
    figures: dict = {"switches": n, "links": graph.number_of_edges(),
                     "diameter": nx.diameter(graph), "pairs": len(pairs)}
    controller = Controller(workdir / "controller")
    with network(IspTopo(n=n, seed=seed), controller, wait=False) as net:
        try:
            since = time.monotonic()
            controller.start()
            wait_until(lambda: len(controller.get("/v1/topology")["links"])
                       == graph.number_of_edges(), REACH_TIMEOUT, interval=0.2,
                       what="every link")
            figures["discovery_s"] = round(time.monotonic() - since, 1)
            figures["all_pairs_s"] = time_to_reach(net, pairs, since)
            figures["shortest"] = f"{shortest_paths(controller, graph, pairs)}/{len(pairs)}"
            before, start = counters(controller), time.monotonic()
            time.sleep(steady)
            after, elapsed = counters(controller), time.monotonic() - start
            figures["steady_s"] = round(elapsed)
            figures["flaps"] = int(after["flaps"] - before["flaps"])
            figures["packet_in_per_s"] = round((after["packet_in"] - before["packet_in"])
                                               / elapsed, 1)
            figures["cpu_per_s"] = round((after["cpu"] - before["cpu"]) / elapsed, 3)
            figures["flaps_since_start"] = int(after["flaps"])
            figures["loss_pct"] = round(100 * len(unreachable(net, pairs)) / len(pairs), 1)
            print(f"  {n} switches so far: {figures}", flush=True)
            figures["repair"] = cut_repair(net, controller, workdir, graph, pairs)
        finally:
            try:
                controller.stop()
            except AssertionError as exc:  # killed instead: the figures stand, this is one
                figures["stop"] = str(exc)
        if peer:
            figures["faucet_all_pairs_s"] = faucet(net, pairs, workdir)
            if isinstance(figures["faucet_all_pairs_s"], float) and figures["all_pairs_s"]:
                figures["ratio_to_faucet"] = round(
                    figures["all_pairs_s"] / figures["faucet_all_pairs_s"], 2)
            figures["rstp_all_pairs_s"] = rstp_peer(net, pairs)
            if figures["rstp_all_pairs_s"] and figures["all_pairs_s"]:
                figures["ratio_to_rstp"] = round(
                    figures["all_pairs_s"] / figures["rstp_all_pairs_s"], 2)
    return figures


def run(sizes: tuple[int, ...] = SIZES) -> dict:
    results = {}
    for n in sizes:
        figures = measure(n)
        results[str(n)] = figures
        print(f"{n} switches: " + ", ".join(f"{k} {v}" for k, v in figures.items()),
              flush=True)
    return results


if __name__ == "__main__":
    run(tuple(int(arg) for arg in sys.argv[1:]) or SIZES)
