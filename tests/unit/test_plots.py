"""`make bench` draws its figures: one PNG per benchmark present, none for those absent."""

from __future__ import annotations

from bench.plots import plot_all

RESULTS = {
    "convergence": {
        "50": {"discovery_s": 3.4, "all_pairs_s": 5.0, "rstp_all_pairs_s": 9.2},
        "100": {"discovery_s": 9.6, "all_pairs_s": 15.9, "rstp_all_pairs_s": 17.0},
        "200": {"discovery_s": 10.5, "all_pairs_s": 39.4, "rstp_all_pairs_s": None},
    },
    "failover": {"protection": {"lost": 4}, "no_protection": {"lost": 7}},
    "routing_scale": {  # the ISP graph's figures are printed, not plotted with fat trees'
        "isp200_link_loss": {"switches": 200, "link_loss_ms": 405.0},
        **{f"fattree_k{k}": {"switches": 5 * k * k // 4, "recompute_after_link_loss_ms": k,
                             "recompute_after_link_loss_max_ms": 2 * k,
                             "full_recompute_after_link_loss_ms": 10 * k} for k in (4, 8)},
    },
    "vnf_pps": {"skipped": "needs root"},
}


def test_each_benchmark_present_gets_a_plot(tmp_path):
    written = plot_all(RESULTS, tmp_path)
    assert sorted(p.name for p in written) == ["convergence.png", "failover.png",
                                               "routing_scale.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
