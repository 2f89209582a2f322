"""What the first packet of a new host pair pays, on a fat tree k=4 (root, Mininet, OVS).

Routes are proactive: once the controller knows both hosts, every switch already holds
the route, so an ICMP echo between a pair that never talked crosses the network like any
later one. What the first ping can still pay is ARP: with empty neighbour caches the
sender's request (and the receiver's, for the reply) goes to the controller, which
answers it from its host table. Measured both ways, per pair:

- `arp`: neighbour caches flushed on both hosts, so the first ping includes ARP;
- `static_arp`: both entries installed with `ip neigh replace` first, so it does not.

Figure = RTT of the first ping minus the median RTT of the next pings on the same pair.
`python -m bench first_packet` prints the figures; `run()` returns them as a dict.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

# pairs across pods, within a pod, and on one edge switch (hosts numbered pod by pod)
PAIRS = [("h2", "h15"), ("h3", "h10"), ("h5", "h8"), ("h6", "h13"), ("h9", "h12"),
         ("h11", "h14"), ("h4", "h16"), ("h7", "h8")]
STEADY_PINGS = 20


def _first_and_steady(ping, src, dst) -> tuple[float, float]:
    first = ping(src, dst.IP(), count=1, timeout=2)
    assert first.received == 1, f"{src.name} -> {dst.name}: first ping lost"
    steady = ping(src, dst.IP(), count=STEADY_PINGS, interval=0.05)
    assert steady.received == STEADY_PINGS
    return first.rtts_ms[0], statistics.median(steady.rtts_ms)


def _wait_settled(controller, quiet: float = 1.0) -> None:
    """Until the controller has sent no FlowMod for `quiet` seconds: every host it learned
    is routed and answered for, as it would be for any pair that has not talked yet."""
    from testing.harness import wait_until

    last = {"mods": -1.0, "since": time.monotonic()}

    def quiet_enough() -> bool:
        mods = controller.metric("sdn_flow_mods_total")
        if mods != last["mods"]:
            last.update(mods=mods, since=time.monotonic())
        return time.monotonic() - last["since"] >= quiet

    wait_until(quiet_enough, 30, interval=0.2, what="the controller's updates to settle")


def _summary(extra: list[float]) -> dict:
    return {"median_extra_ms": round(statistics.median(extra), 3),
            "max_extra_ms": round(max(extra), 3), "pairs": len(extra)}


def run() -> dict:
    from testing.harness import Controller, network, ping
    from topologies.sdn_topos import FatTreeTopo

    extra: dict[str, list[float]] = {"arp": [], "static_arp": []}
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        controller = Controller(Path(tmp) / "controller").start()
        try:
            with network(FatTreeTopo(k=4), controller) as net:
                hub = net.get("h1")
                for host in net.hosts[1:]:  # the controller learns every host
                    assert ping(host, hub.IP(), count=1).received == 1
                _wait_settled(controller)
                for mode in ("arp", "static_arp"):
                    for a, b in PAIRS:
                        src, dst = net.get(a), net.get(b)
                        for host in (src, dst):
                            host.cmd("ip neigh flush all")
                        if mode == "static_arp":
                            src.cmd(f"ip neigh replace {dst.IP()} lladdr {dst.MAC()} "
                                    f"dev {src.defaultIntf()} nud permanent")
                            dst.cmd(f"ip neigh replace {src.IP()} lladdr {src.MAC()} "
                                    f"dev {dst.defaultIntf()} nud permanent")
                        first, steady = _first_and_steady(ping, src, dst)
                        extra[mode].append(first - steady)
                        samples.append({"mode": mode, "pair": f"{a}-{b}",
                                        "first_ms": first, "steady_ms": steady})
        finally:
            controller.stop()
    figures = {mode: _summary(values) for mode, values in extra.items()}
    figures["samples"] = samples
    for mode in ("arp", "static_arp"):
        f = figures[mode]
        print(f"first ping minus steady median ({mode}): median {f['median_extra_ms']} ms, "
              f"max {f['max_extra_ms']} ms over {f['pairs']} new pairs")
    return figures


if __name__ == "__main__":
    run()
