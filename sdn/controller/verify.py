"""`sdnctl verify`: read every switch's tables back, compare them with what the controller
wants, report the drift by policy object, and on request send the difference."""

from __future__ import annotations

import logging
import time

from os_ken.lib import hub
from prometheus_client import Gauge

from sdn.controller.state import ControllerState
from sdn.policy.schema import Policy
from sdn.reconcile.drift import cookie_names, drift
from sdn.southbound.readback import TableRead

LOG = logging.getLogger(__name__)
READ_TIMEOUT = 10.0  # seconds for every switch to answer
READ_POLL = 0.01
DRIFTED = Gauge("sdn_drifted_rules", "Flows, groups and meters that differed from what the "
                "controller wants at the last verify")


class VerifyError(RuntimeError):
    """Some switch did not answer in time: nothing was repaired."""


def verify(state: ControllerState, repair: bool = False) -> dict:
    """{"switches": {name: drift}, "drifted": N, "repaired": bool}. Under the state's lock,
    so no update is in flight while the tables are read."""
    with state.lock:
        reads = read_all(state)
        wanted = state.desired(state.policy)
        names = object_names(state)
        found = {dpid: drift(wanted[dpid], read.rules, names)
                 for dpid, read in reads.items() if dpid in wanted}
        drifted = sum(len(d) for d in found.values())
        DRIFTED.set(drifted)
        repaired = False
        if repair and drifted:
            for dpid, switch_drift in found.items():
                if switch_drift:
                    state.switches[dpid].adopt(reads[dpid].rules)
            result = state.push(wait=True)
            if result.failures:
                raise VerifyError(f"repair failed: {result.failures}")
            repaired = True
            LOG.info("verify: repaired %d drifted rules on %d switches", drifted,
                     sum(1 for d in found.values() if d))
    return {"switches": {_name(state, dpid): d.to_json() for dpid, d in sorted(found.items())
                         if d},
            "checked": len(found), "drifted": drifted, "repaired": repaired}


def read_all(state: ControllerState) -> dict[int, TableRead]:
    reads = {dpid: TableRead.request(conn.datapath)
             for dpid, conn in list(state.switches.items()) if conn.ready}
    state.reads.update(reads)
    try:
        deadline = time.monotonic() + READ_TIMEOUT
        while not all(r.done for r in reads.values()):
            if time.monotonic() > deadline:
                late = sorted(_name(state, d) for d, r in reads.items() if not r.done)
                raise VerifyError(f"no complete answer within {READ_TIMEOUT:g}s from {late}")
            hub.sleep(READ_POLL)
    finally:
        for dpid in reads:
            state.reads.pop(dpid, None)
    return reads


def object_names(state: ControllerState, policy: Policy | None = None) -> dict[int, str]:
    """Cookie -> the policy object it names, for what is in force now (or `policy`)."""
    snapshot = state.topology.snapshot()
    policy = policy or state.policy
    return cookie_names(
        ((h.mac, h.ips) for h in snapshot.hosts),
        [ip for h in snapshot.hosts for ip in h.ips]
        + list(policy.virtual_ips() if policy else ()),
        policy.object_ids() if policy else {},
        [c.name for c in policy.chains] if policy else ())


def _name(state: ControllerState, dpid: int) -> str:
    return state.topology.bridge_names.get(dpid) or f"{dpid:016x}"

