"""How much fast failover alone repairs, before the controller recomputes (pure).

For every single link of a graph cut, every host pair is traced through the rules the
switches already hold (testing.flowsim): delivered, dropped or looping. Pairs the cut
disconnects are counted apart (nothing could deliver them). Regular topologies (ring,
fat tree, grid) and random connected graphs, with hop counts and with random weights.
`python -m bench failover_coverage` prints the figures; `run()` returns them.
"""

from __future__ import annotations

import itertools
import random

import networkx as nx

from sdn.compile.routes import NetworkCompiler
from sdn.explain.flowsim import Network
from testing.flowsim import fat_tree, snapshot_from_graph

RANDOM_GRAPHS = 30
WEIGHTS = (0.5, 1.0, 1.0, 1.5, 2.0)


def _random_graph(seed: int, weighted: bool) -> nx.Graph:
    rng = random.Random(seed)
    nodes = rng.randint(6, 12)
    g = nx.relabel_nodes(nx.random_labeled_tree(nodes, seed=seed), lambda n: n + 1)
    while g.number_of_edges() < nodes - 1 + rng.randint(3, 8):
        a, b = rng.sample(sorted(g.nodes), 2)
        g.add_edge(a, b)
    if weighted:
        for u, v in g.edges:
            g[u][v]["weight"] = rng.choice(WEIGHTS)
    return g


def _coverage(graphs: list[nx.Graph]) -> dict:
    counts = dict.fromkeys(("pairs", "delivered", "looped", "dropped", "disconnected"), 0)
    for graph in graphs:
        snapshot = snapshot_from_graph(graph)
        rules = NetworkCompiler().compile(snapshot)
        for link in snapshot.links:
            survivor = graph.copy()
            survivor.remove_edge(link.a, link.b)
            net = Network(snapshot, rules, frozenset({link}))
            for src, dst in itertools.permutations(snapshot.hosts, 2):
                counts["pairs"] += 1
                if not nx.has_path(survivor, src.dpid, dst.dpid):
                    counts["disconnected"] += 1
                    continue
                pkt = {"eth_src": src.mac, "eth_dst": dst.mac, "eth_type": 0x0800}
                trace = net.send(src.dpid, src.port, pkt)
                if trace.looped:
                    counts["looped"] += 1
                elif trace.delivered == [(dst.dpid, dst.port)]:
                    counts["delivered"] += 1
                else:
                    counts["dropped"] += 1
    reachable = counts["pairs"] - counts["disconnected"]
    return {**counts, **{f"{k}_pct": round(100 * counts[k] / reachable, 2)
                         for k in ("delivered", "looped", "dropped")}}


def run() -> dict:
    families = {
        "ring6": [nx.cycle_graph(range(1, 7))],
        "fattree4": [fat_tree(4)],
        "grid4x4": [nx.convert_node_labels_to_integers(nx.grid_2d_graph(4, 4), 1)],
        "random_hops": [_random_graph(s, False) for s in range(RANDOM_GRAPHS)],
        "random_weighted": [_random_graph(s, True) for s in range(RANDOM_GRAPHS)],
    }
    figures = {name: _coverage(graphs) for name, graphs in families.items()}
    for name, f in figures.items():
        print(f"fast failover alone, {name:16s}: delivered {f['delivered_pct']}%, "
              f"looped {f['looped_pct']}%, dropped {f['dropped_pct']}% of "
              f"{f['pairs'] - f['disconnected']} (pair, cut link) still connected")
    return figures


if __name__ == "__main__":
    run()
