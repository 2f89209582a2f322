"""The Mininet topologies have the shape they promise (built without root)."""

from __future__ import annotations

import networkx as nx
import pytest

from topologies.sdn_topos import (
    DumbbellTopo,
    FatTreeTopo,
    IspTopo,
    LinearTopo,
    MeshTopo,
    RingTopo,
    TreeTopo,
    isp_links,
    topos,
)


def switch_graph(topo) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(topo.switches())
    g.add_edges_from((a, b) for a, b in topo.links() if topo.isSwitch(a) and topo.isSwitch(b))
    return g


@pytest.mark.parametrize("topo, switches, links, hosts", [
    (LinearTopo(n=4), 4, 3, 4),
    (TreeTopo(depth=3, fanout=2), 7, 6, 4),
    (RingTopo(n=5), 5, 5, 5),
    (MeshTopo(n=4), 4, 6, 4),
    (FatTreeTopo(k=4), 20, 32, 16),
    (DumbbellTopo(n=3), 2, 1, 6),
    (RingTopo(n=3, hosts_per_switch=2), 3, 3, 6),
])
def test_sizes(topo, switches, links, hosts):
    g = switch_graph(topo)
    assert (g.number_of_nodes(), g.number_of_edges(), len(topo.hosts())) == (
        switches, links, hosts)
    assert nx.is_connected(g)


def test_fat_tree_pods_have_k_over_2_disjoint_core_paths():
    g = switch_graph(FatTreeTopo(k=4))
    edge_a, edge_b = "s9", "s20"  # first edge switch of pod 0, last of pod 3
    assert nx.edge_connectivity(g, edge_a, edge_b) == 2


def test_fat_tree_rejects_odd_k():
    with pytest.raises(ValueError):
        FatTreeTopo(k=3)


def test_registered_for_mn_custom():
    assert set(topos) == {"linear", "tree", "ring", "mesh", "fattree", "dumbbell", "isp"}


@pytest.mark.parametrize(("n", "diameters"), [(50, range(10, 17)), (100, range(16, 25)),
                                              (200, range(20, 31))])
def test_isp_graphs_are_sparse_connected_long_and_seeded(n, diameters):
    for seed in (1, 2, 3):
        links = isp_links(n, seed)
        g = nx.Graph(links)
        assert sorted(g.nodes) == list(range(n)) and nx.is_connected(g)
        assert len(links) == round(n * 2.5 / 2) == g.number_of_edges()  # no duplicates
        assert nx.diameter(g) in diameters
        assert isp_links(n, seed) == links
    assert isp_links(n, 1) != isp_links(n, 2)


def test_isp_topo_hangs_a_host_off_every_switch():
    topo = IspTopo(n=30, seed=4)
    g = switch_graph(topo)
    assert g.number_of_nodes() == 30 and g.number_of_edges() == len(isp_links(30, 4))
    assert len(topo.hosts()) == 30 and topos["isp"] is IspTopo
