"""PNG plots of the figures in results/bench.json, written next to it by `make bench`.

Each plot is drawn only when its benchmark's figures are in the file; `python -m
bench.plots` redraws them from the file without running anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

Figures = dict[str, Any]


def _convergence(figures: Figures, ax) -> None:
    sizes = sorted(figures, key=int)
    x = [int(n) for n in sizes]
    ours = [figures[n].get("all_pairs_s") for n in sizes]
    ax.plot(x, [figures[n].get("discovery_s") for n in sizes], "o--", label="discovery")
    ax.plot(x, ours, "o-", label="all sampled pairs reachable")
    peer = [figures[n].get("rstp_all_pairs_s") for n in sizes]
    if any(v is not None for v in peer):
        ax.plot(x, peer, "s-", label="Open vSwitch standalone + RSTP")
    ax.set(title="Convergence on ISP-like backbones", xlabel="switches (one host each)",
           ylabel="seconds after start")


def _routing_scale(figures: Figures, ax) -> None:
    runs = sorted((f for name, f in figures.items() if name.startswith("fattree")),
                  key=lambda f: f["switches"])
    x = [f["switches"] for f in runs]
    ax.plot(x, [f["recompute_after_link_loss_ms"] for f in runs], "o-",
            label="recompute after a link loss (median)")
    ax.plot(x, [f["recompute_after_link_loss_max_ms"] for f in runs], "o--", label="(max)")
    ax.plot(x, [f["full_recompute_after_link_loss_ms"] for f in runs], "s-",
            label="every switch's rules")
    ax.set(title="Route compilation, fat trees", xlabel="switches", ylabel="ms",
           yscale="log")


def _first_packet(figures: Figures, ax) -> None:
    for mode, label in (("arp", "empty ARP caches"), ("static_arp", "ARP entries in place")):
        extra = sorted(s["first_ms"] - s["steady_ms"] for s in figures["samples"]
                       if s["mode"] == mode)
        ax.plot(extra, [(i + 1) / len(extra) for i in range(len(extra))], "o-", label=label)
    ax.set(title="First packet of a new pair, fat-tree k=4", xlabel="ms over a steady RTT",
           ylabel="fraction of pairs")


def _failover(figures: Figures, ax) -> None:
    names = [n for n in ("protection", "no_protection") if n in figures]
    ax.bar([n.replace("_", " ") for n in names], [figures[n]["lost"] for n in names])
    ax.set(title="Packets lost when the link in use is cut (1000 pps)", ylabel="packets")


PLOTS: dict[str, Callable[[Figures, Any], None]] = {
    "convergence": _convergence,
    "routing_scale": _routing_scale,
    "first_packet": _first_packet,
    "failover": _failover,
}


def plot_all(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per benchmark with figures in `results`; the paths written."""
    written = []
    for name, draw in PLOTS.items():
        figures = results.get(name)
        if not isinstance(figures, dict) or "skipped" in figures:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4))
        draw(figures, ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
        path = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench.json")
    for written in plot_all(json.loads(source.read_text()), source.parent):
        print(f"wrote {written}")
