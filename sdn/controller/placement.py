"""The policy's network functions, run by nfv.host.runtime on the switches the policy names.

The controller asks for the VNFs a policy wants (`reconcile`) and learns where their arms
are plugged in and whether they are alive (`instances`), which is what chain steering
(sdn.compile.chains) and fail-open/fail-closed need.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from common.contract import PLACEMENT_KEYS
from nfv.host.agent import Placer
from nfv.host.netns import arm_names
from nfv.host.runtime import Runtime
from nfv.host.spec import VnfSpec, VnfStatus, instance_name
from sdn.compile.chain_model import VnfInstance
from sdn.controller.offload import WorkerReport
from sdn.model.topology import Topology
from sdn.policy.schema import LoadBalancer, Policy, Vnf

LOG = logging.getLogger("sdn.controller.placement")
ALIVE_STATES = ("running",)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def specs_for(policy: Policy | None, topology: Topology) -> dict[str, VnfSpec]:
    """One spec per instance. Pure: bridge names come from the switches' LOCAL ports."""
    if policy is None:
        return {}
    canonical = policy.canonical()["vnfs"]
    specs = {}
    for name, vnf in policy.vnfs.items():
        dpid = policy.dpid_of(vnf.switch)
        bridge = topology.bridge_names.get(dpid) if dpid is not None else None
        if bridge is None:
            raise LookupError(f"vnfs.{name}.switch: switch {vnf.switch} is not connected")
        config = {k: v for k, v in _without_nulls(canonical[name]).items()
                  if k not in PLACEMENT_KEYS}
        config["name"] = name
        if isinstance(vnf, LoadBalancer):
            config["vip_mac"] = vnf.mac_for(name)
        for replica in _replicas(vnf):
            if isinstance(vnf, LoadBalancer) and replica is not None:  # chains.health_rules
                config = {**config, "replica": replica, "replicas": vnf.replicas}
            spec = VnfSpec(name=name, kind=vnf.type, switch=bridge, config=config,
                           cpu=vnf.cpu, memory=vnf.memory, failure_mode=vnf.failure_mode,
                           replica=replica)
            specs[spec.instance] = spec
    return specs


def _replicas(vnf: Vnf) -> list[int | None]:
    """Replica indices of a policy VNF; None for one that is not replicated."""
    return list(range(vnf.replicas)) if vnf.replicas > 1 else [None]


def mark_arms(topology: Topology, instance: str) -> None:
    """An instance's arms are VNF ports: never probed, never a host's place."""
    for side in ("ingress", "egress"):
        topology.service_port_names.add(arm_names(instance, side).outside)


def expect_arms(topology: Topology, policy: Policy | None) -> None:
    """Mark the arms of the policy's instances before any switch connects: a restarted
    controller must neither probe nor learn hosts on the arms of the VNFs it is about to
    take over (a transparent VNF echoes LLDP from one arm to the other, which would pass
    for a link)."""
    for name, vnf in (policy.vnfs.items() if policy is not None else ()):
        for replica in _replicas(vnf):
            mark_arms(topology, instance_name(name, replica))


def instances_of(statuses: Iterable[VnfStatus], specs: Mapping[str, VnfSpec],
                 topology: Topology) -> list[VnfInstance]:
    """Every placed instance; alive only when its worker runs and both arms are up."""
    dpids = {name: dpid for dpid, name in topology.bridge_names.items()}
    out = []
    for status in statuses:
        spec = specs.get(status.name)
        dpid = dpids.get(status.switch)
        if spec is None or dpid is None or len(status.ports) < 2:
            continue
        ingress, egress = status.ports["ingress"], status.ports["egress"]
        live = topology.ports.get(dpid, {})
        alive = (status.state in ALIVE_STATES and status.healthy
                 and ingress in live and egress in live)
        out.append(VnfInstance(spec.name, status.name, dpid, ingress, egress, alive,
                               spec.replica or 0))
    return sorted(out, key=lambda i: i.instance)


class VnfManager:
    """The VNFs of a controller that runs alone: the host agent's `Placer`, in-process."""

    def __init__(self, topology: Topology, state_dir: Path, on_change: Callable[[], None]
                 ) -> None:
        self.topology = topology
        self.runtime = Runtime(status_file=state_dir / "vnfs.json")
        self.runtime.on_state_change(lambda status, previous: self._state_changed(
            status, previous, on_change))
        # Leftovers of an earlier run stay until the first reconcile has taken over
        # those the policy still wants (their workers keep forwarding meanwhile).
        self.placer = Placer(self.runtime)

    def _state_changed(self, status: VnfStatus, previous, on_change) -> None:
        LOG.info("VNF %s: %s -> %s", status.name, previous, status.state)
        on_change()

    def expect(self, policy: Policy | None) -> None:
        expect_arms(self.topology, policy)

    def reconcile(self, policy: Policy | None) -> None:
        """Start what the policy adds or changes, stop what it drops; leave the rest."""
        self.placer.reconcile(specs_for(policy, self.topology),
                              on_place=lambda instance: mark_arms(self.topology, instance))

    def instances(self) -> list[VnfInstance]:
        return instances_of(self.runtime.list(), self.placer.specs, self.topology)

    def settled(self) -> list[WorkerReport]:
        """The settled-flow lists of the running workers, read from their stats files (a
        file some earlier process of the instance wrote does not count)."""
        reports = []
        for status in self.runtime.list():
            spec = self.placer.specs.get(status.name)
            if spec is None or status.state not in ALIVE_STATES:
                continue
            try:
                stats = json.loads(Path(status.stats_file).read_text())
            except (OSError, ValueError):
                continue
            if stats.get("pid") != status.pid or "settled" not in stats:
                continue
            reports.append(WorkerReport(spec.name, status.name, float(stats.get("started", 0)),
                                        tuple(stats["settled"])))
        return reports

    def status(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.runtime.list()]

    def close(self) -> None:
        self.runtime.close()
