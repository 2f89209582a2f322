"""What the controller knows and wants, shared by the OpenFlow adapter, apply/rollback and
the REST API: the topology, the connected switches, the policy in force, the VNFs placed,
the offloaded flows. One compile-and-push runs at a time (`lock`)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from os_ken.lib import hub
from prometheus_client import Counter, Gauge

from common.blocking import run_blocking
from common.collector import collector_paused
from sdn.compile.desired import DesiredCache, desired_rules
from sdn.controller.offload import OffloadTable
from sdn.controller.placement import VnfManager
from sdn.model.rules import SwitchRules
from sdn.model.topology import Snapshot, Topology
from sdn.policy.schema import Policy
from sdn.southbound.connection import PushResult, SwitchConnection, push
from sdn.southbound.readback import TableRead

LOG = logging.getLogger(__name__)

FREEZE_WAIT = 1.0  # seconds a stopping controller waits for a push under way
# A sync whose compile-and-push took d seconds is followed by min(d, this) in which
# changes only gather: at 200 switches (pushes of ~0.5 s) the event loop keeps time for
# LLDP and packet-ins, and hosts learnt meanwhile go out in one update instead of one each;
# small networks (pushes of milliseconds) do not notice. Time spent starting VNFs does not
# count: a VNF that comes up just after must be steered to at once.
SYNC_PACE_MAX = 1.0
SYNCS = Counter("sdn_syncs_total", "Compile-and-diff rounds")
SWITCHES = Gauge("sdn_switches", "Connected switches")
LINKS = Gauge("sdn_links", "Inter-switch links known")
HOSTS = Gauge("sdn_hosts", "Hosts known")


class Fence(Protocol):
    """Whether this controller may write to the switches (`sdn.controller.cluster`)."""

    def leading(self) -> bool:
        """May write at all (and send packets, start VNFs)."""

    def holds(self, conn: SwitchConnection) -> bool:
        """May write to this switch: it confirmed this controller as its master."""


class Solo:
    """The embedded default: this controller is the only one its switches have."""

    def leading(self) -> bool:
        return True

    def holds(self, conn: SwitchConnection) -> bool:
        return True


class ControllerState:
    def __init__(self, ordered_updates: bool = True) -> None:
        self.topology = Topology()
        self.switches: dict[int, SwitchConnection] = {}
        self.policy: Policy | None = None
        self.vnfs: VnfManager | None = None
        self.offload = OffloadTable()
        self.lock = hub.Semaphore(1)
        self.reads: dict[int, TableRead] = {}  # tables being read back (verify)
        self.ordered_updates = ordered_updates
        self._desired = DesiredCache()
        self.frozen = False  # stopping: nothing more is sent to any switch
        self.fence: Fence = Solo()
        self.push_seconds = 0.0  # how long the last sync's compile-and-push took

    def desired(self, policy: Policy | None, snapshot: Snapshot | None = None
                ) -> dict[int, SwitchRules]:
        """What every switch should hold under `policy`, with the VNFs where they are."""
        instances = self.vnfs.instances() if self.vnfs else []
        snapshot = snapshot or self.topology.snapshot()
        return run_blocking(self._compile, policy, snapshot, instances, self.offload.flows)

    def _compile(self, policy: Policy | None, snapshot: Snapshot, instances: list,
                 settled: frozenset) -> dict[int, SwitchRules]:
        """Pure work on values taken before: may run in another thread (`run_blocking`);
        the cache is only used under `lock`."""
        with collector_paused():
            return desired_rules(policy, snapshot, instances, settled, self._desired)

    def push(self, wait: bool) -> PushResult:
        """Send every ready switch the difference to what the policy in force wants, in
        ordered rounds. Waiting, each round is confirmed by barriers and failures are
        reported; not waiting (topology changes), rounds follow one another at once.
        Switches held after a warm restart keep what they have until discovery caught up.
        A frozen controller, or one that is not the cluster's leader, sends nothing."""
        if self.frozen or not self.fence.leading():
            return PushResult()
        snapshot = self.topology.snapshot()
        desired = self.desired(self.policy, snapshot)
        now = time.monotonic()
        ready = {dpid: conn for dpid, conn in list(self.switches.items())
                 if conn.ready and dpid in desired and conn.hold_until <= now
                 and self.fence.holds(conn)}
        result = push(ready, desired, snapshot.links, wait=wait, ordered=self.ordered_updates,
                      stopping=lambda: self.frozen or not self.fence.leading(),
                      deltas=self._desired.deltas)
        SYNCS.inc()
        SWITCHES.set(len(self.switches))
        LINKS.set(len(snapshot.links))
        HOSTS.set(len(snapshot.hosts))
        return result

    def sync(self) -> int:
        """After a topology or VNF change: place VNFs whose switches are now there, then
        send every switch its difference. Returns the FlowMods sent."""
        with self.lock:
            self.place_vnfs()
            # Not waiting for barriers between rounds here: on looped topologies, while
            # LLDP is still finding links, rounds held apart by barrier waits let
            # broadcast storms start (torus 3x3: 4 of 4 runs, none without the waits).
            started = time.monotonic()
            flow_mods = self.push(wait=False).flow_mods
            self.push_seconds = time.monotonic() - started
            return flow_mods

    def place_vnfs(self) -> None:
        """VNFs of a restored policy start once their switches have connected."""
        if self.vnfs is None or not self.fence.leading():
            return
        try:
            self.vnfs.reconcile(self.policy)
        except LookupError as exc:
            LOG.debug("VNFs wait for their switches: %s", exc)

    def freeze(self) -> None:
        """From now on send nothing: a stopping controller must not take down the links
        and rules it can no longer see (fail-secure switches keep forwarding with them),
        and waits (up to FREEZE_WAIT: an apply may be waiting on a slow store) for any push
        under way to finish; a push sends no further round once frozen anyway."""
        self.frozen = True
        if self.lock.acquire(timeout=FREEZE_WAIT):
            self.lock.release()

    def vip_mac(self, ip: str) -> str | None:
        """The MAC the controller answers ARP with for a load balancer's virtual IP."""
        return self.policy.virtual_ips().get(ip) if self.policy is not None else None
