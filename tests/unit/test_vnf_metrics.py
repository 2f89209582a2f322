"""Each VNF instance's counters appear in /metrics as its last report gave them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sdn.controller.vnf_metrics import VnfCollector

FW = {"name": "fw-0", "vnf": "fw", "kind": "firewall", "rx_packets": 1200, "tx_packets": 1100,
      "drops": 97, "malformed": 3, "restarts": 1, "healthy": True}


def scrape(status) -> str:
    registry = CollectorRegistry()
    registry.register(VnfCollector(status))
    return generate_latest(registry).decode()


def test_counters_of_every_instance_by_name_vnf_and_kind():
    text = scrape(lambda: [FW, {**FW, "name": "lb-0", "vnf": "lb", "kind": "loadbalancer",
                                "drops": 0, "healthy": False}])
    labels = 'instance="fw-0",kind="firewall",vnf="fw"'
    assert f'sdn_vnf_packets_total{{direction="rx",{labels}}} 1200.0' in text
    assert f'sdn_vnf_packets_total{{direction="tx",{labels}}} 1100.0' in text
    assert f"sdn_vnf_drops_total{{{labels}}} 97.0" in text
    assert f"sdn_vnf_malformed_total{{{labels}}} 3.0" in text
    assert f"sdn_vnf_restarts_total{{{labels}}} 1.0" in text
    assert f"sdn_vnf_healthy{{{labels}}} 1.0" in text
    assert 'sdn_vnf_healthy{instance="lb-0",kind="loadbalancer",vnf="lb"} 0.0' in text


def test_no_instances_no_samples():
    text = scrape(list)
    assert "sdn_vnf_packets_total{" not in text and "# TYPE sdn_vnf_packets_total counter" in text
