"""The VNFs of a cluster, placed by host agents through etcd (`nfv.host.agent`).

The leader assigns every instance to the agent whose machine has the instance's switch
(agents publish their Open vSwitch bridges) and reads each instance's status back; every
member reads the statuses, so a new leader knows at once where the VNFs' arms are and
whether they live. Same interface as `VnfManager`, which places VNFs in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from os_ken.lib import hub

from common.contract import AGENTS_PREFIX, ASSIGNMENTS_PREFIX, VNF_STATUS_PREFIX
from common.etcd import Etcd, StoreUnavailable, created_at, delete, put
from nfv.host.agent import AGENT_INTERVAL, spec_to_json, status_from_json
from nfv.host.spec import VnfSpec, VnfStatus
from sdn.compile.chain_model import VnfInstance
from sdn.controller.offload import WorkerReport
from sdn.controller.placement import expect_arms, instances_of, mark_arms, specs_for
from sdn.model.topology import Topology
from sdn.policy.etcd_store import LEADER_KEY
from sdn.policy.schema import Policy

LOG = logging.getLogger(__name__)


class AgentVnfs:
    def __init__(self, etcd: Etcd, topology: Topology, generation: Callable[[], int],
                 on_change: Callable[[], None]) -> None:
        self.etcd = etcd
        self.topology = topology
        self.generation = generation  # the leader's; 0 when this member does not lead
        self.on_change = on_change
        self.specs: dict[str, VnfSpec] = {}
        self.statuses: list[dict[str, Any]] = []

    def expect(self, policy: Policy | None) -> None:
        expect_arms(self.topology, policy)

    def reconcile(self, policy: Policy | None) -> None:
        """Assign the policy's instances to the agents (one fenced transaction, only when
        an assignment changes). LookupError while a switch has no agent."""
        wanted = specs_for(policy, self.topology)
        hosts = {bridge: entry.json()["host"] for entry in self.etcd.get_prefix(AGENTS_PREFIX)
                 for bridge in entry.json().get("bridges", [])}
        assignments = {}
        for instance, spec in wanted.items():
            host = hosts.get(spec.switch)
            if host is None:
                raise LookupError(f"no host agent reports bridge {spec.switch} for VNF "
                                  f"{instance} (run `sdnctl agent run` on its machine)")
            assignments[f"{ASSIGNMENTS_PREFIX}{host}/{instance}"] = spec_to_json(spec)
            mark_arms(self.topology, instance)
        current = {e.key: e.json() for e in self.etcd.get_prefix(ASSIGNMENTS_PREFIX)}
        changes = [put(k, v) for k, v in assignments.items() if current.get(k) != v]
        changes += [delete(k) for k in current if k not in assignments]
        generation = self.generation()
        if changes and generation:
            if not self.etcd.txn([created_at(LEADER_KEY, generation)], changes):
                raise LookupError("VNF assignments not written: no longer the leader")
            LOG.info("VNF assignments: %d written or removed", len(changes))
        self.specs = wanted

    def watch(self) -> None:
        """Read the agents' reports every AGENT_INTERVAL; a change recompiles."""
        while True:
            try:
                statuses = [e.json() for e in self.etcd.get_prefix(VNF_STATUS_PREFIX)]
            except StoreUnavailable as exc:
                LOG.debug("VNF statuses not read: %s", exc)
            else:
                changed = _placement(statuses) != _placement(self.statuses)
                self.statuses = statuses
                if changed:
                    self.on_change()
            hub.sleep(AGENT_INTERVAL)

    def _statuses(self) -> list[VnfStatus]:
        return [status_from_json(s) for s in self.statuses]

    def instances(self) -> list[VnfInstance]:
        return instances_of(self._statuses(), self.specs, self.topology)

    def settled(self) -> list[WorkerReport]:
        """Offload needs the workers' stats files, which are on the agents' machines."""
        return []

    def status(self) -> list[dict[str, Any]]:
        return list(self.statuses)

    def close(self) -> None:
        """The agents keep their VNFs running."""


def _placement(statuses: list[dict[str, Any]]) -> list[tuple]:
    """What of the statuses the rules depend on (not the packet counters)."""
    return sorted((s["name"], s["switch"], tuple(sorted(s["ports"].items())), s["state"],
                   s["healthy"]) for s in statuses)
