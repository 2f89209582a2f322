"""The host agent and the leader's side of it, against a real etcd and a runtime
stand-in (placing real VNFs is tests/integration/test_cluster.py's part)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from common.contract import AGENTS_PREFIX, ASSIGNMENTS_PREFIX, VNF_STATUS_PREFIX
from common.etcd import delete, put
from nfv.host.agent import Agent, spec_from_json, spec_to_json
from nfv.host.spec import VnfError, VnfSpec, VnfStatus
from sdn.controller.agent_vnfs import AgentVnfs
from sdn.controller.cluster import EtcdElection
from sdn.model.topology import Topology
from sdn.policy.load import load_policy

FW = VnfSpec(name="fw", kind="firewall", switch="s1", config={"name": "fw", "default": "drop"})


class FakeRuntime:
    """Places instantly; `broken` switches cannot take a VNF."""

    def __init__(self) -> None:
        self.running: dict[str, VnfSpec] = {}
        self.broken: set[str] = set()

    def adopt(self, spec: VnfSpec) -> None:
        return None

    def start(self, spec: VnfSpec) -> None:
        if spec.switch in self.broken:
            raise VnfError(f"no bridge {spec.switch}")
        self.running[spec.instance] = spec

    def stop(self, name: str) -> None:
        self.running.pop(name)

    def reap(self) -> dict:
        return {}

    def list(self) -> list[VnfStatus]:
        return [VnfStatus(name=i, vnf=s.name, replica=s.replica, kind=s.kind, state="running",
                          healthy=True, failure_mode=s.failure_mode, netns=f"vnf-{i}",
                          switch=s.switch, ports={"ingress": 7, "egress": 8},
                          interfaces={}, pid=1000, restarts=0, since=0.0, rx_pps=0.0,
                          tx_pps=0.0, rx_packets=0, tx_packets=0, drops=0, malformed=0,
                          stats_updated=None, stats_file="", cpu=None, memory=None,
                          last_error=None)
                for i, s in sorted(self.running.items())]


def test_specs_go_through_the_store_unchanged():
    spec = replace(FW, replica=1, cpu=0.5, memory=1 << 28)
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_the_agent_places_its_assignments_reports_them_and_drops_the_rest(etcd):
    runtime = FakeRuntime()
    runtime.broken.add("s9")
    agent = Agent(etcd, "host0", runtime, bridges=lambda: ["s1", "s2"])
    etcd.txn([], [put(f"{ASSIGNMENTS_PREFIX}host0/fw", spec_to_json(FW)),
                  put(f"{ASSIGNMENTS_PREFIX}host0/bad", {"name": "Bad!", "kind": "nope"}),
                  put(f"{ASSIGNMENTS_PREFIX}host0/lost", spec_to_json(
                      replace(FW, name="lost", switch="s9"))),
                  put(f"{ASSIGNMENTS_PREFIX}host1/other", spec_to_json(
                      replace(FW, name="other")))])
    agent.tick()
    assert set(runtime.running) == {"fw"}  # not another host's, not malformed, not broken
    assert etcd.get(AGENTS_PREFIX + "host0").json() == {"host": "host0",
                                                       "bridges": ["s1", "s2"]}
    status = etcd.get(VNF_STATUS_PREFIX + "fw")
    assert status.json()["host"] == "host0" and status.lease == agent.lease

    etcd.txn([], [delete(f"{ASSIGNMENTS_PREFIX}host0/", prefix=True)])
    agent.tick()
    assert runtime.running == {}
    assert etcd.get(VNF_STATUS_PREFIX + "fw") is None


def test_the_leader_assigns_by_bridge_and_only_while_it_leads(etcd):
    topology = Topology()
    topology.add_switch(1, [1, 2])
    topology.name_ports(1, {1: "s1-eth1"}, bridge="s1")
    policy = load_policy("version: 1\nvnfs:\n  fw: {type: firewall, switch: s1}\n")
    generation = {"now": 0}
    vnfs = AgentVnfs(etcd, topology, lambda: generation["now"], lambda: None)
    with pytest.raises(LookupError, match="no host agent reports bridge s1"):
        vnfs.reconcile(policy)
    etcd.put(AGENTS_PREFIX + "host0", {"host": "host0", "bridges": ["s1"]})
    vnfs.reconcile(policy)  # not leading: nothing written
    assert etcd.get_prefix(ASSIGNMENTS_PREFIX) == []

    election = EtcdElection(etcd)
    lease, _ttl = election.grant(10)
    generation["now"] = election.try_lead(lease, "c0", {"api": ""})
    vnfs.reconcile(policy)
    (assigned,) = etcd.get_prefix(ASSIGNMENTS_PREFIX)
    assert assigned.key == f"{ASSIGNMENTS_PREFIX}host0/fw"
    assert spec_from_json(assigned.json()).switch == "s1"
    vnfs.reconcile(None)
    assert etcd.get_prefix(ASSIGNMENTS_PREFIX) == []
