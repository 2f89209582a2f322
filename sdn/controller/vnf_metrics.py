"""Each VNF instance's counters in /metrics, read from its last stats report at scrape
time (the workers write them; nothing is counted twice)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LABELS = ["instance", "vnf", "kind"]


class VnfCollector:
    """A prometheus collector over `status()`: the VNF manager's view of its instances."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "sdn_vnf_packets", "Frames a VNF instance received (rx) and sent (tx)",
            labels=[*LABELS, "direction"])
        drops = CounterMetricFamily(
            "sdn_vnf_drops", "Frames a VNF instance lost or dropped: kernel ring overruns, "
            "send failures, truncated frames and the function's own verdicts", labels=LABELS)
        malformed = CounterMetricFamily(
            "sdn_vnf_malformed", "Frames a VNF instance could not parse", labels=LABELS)
        restarts = CounterMetricFamily(
            "sdn_vnf_restarts", "Times the worker was restarted", labels=LABELS)
        healthy = GaugeMetricFamily(
            "sdn_vnf_healthy", "1 while the instance runs and reports in time", labels=LABELS)
        for vnf in self.status():
            labels = [vnf["name"], vnf["vnf"], vnf["kind"]]
            packets.add_metric([*labels, "rx"], vnf["rx_packets"])
            packets.add_metric([*labels, "tx"], vnf["tx_packets"])
            drops.add_metric(labels, vnf["drops"])
            malformed.add_metric(labels, vnf["malformed"])
            restarts.add_metric(labels, vnf["restarts"])
            healthy.add_metric(labels, 1.0 if vnf["healthy"] else 0.0)
        yield from (packets, drops, malformed, restarts, healthy)
