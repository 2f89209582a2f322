"""This controller as a member of a cluster on etcd: the election in the store, the
OpenFlow roles at the switches, and what the other members can read about it.

`Leadership` (pure) decides; this module does the I/O around it: etcd requests on a
green thread of their own, role requests to the switches, the member record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from os_ken.lib import hub
from prometheus_client import Counter, Gauge

from common.contract import AGENTS_PREFIX
from common.etcd import Etcd, StoreUnavailable, created_at, delete, put
from sdn.controller.leadership import LeaderRecord, Leadership
from sdn.model.topology import Link, Topology
from sdn.policy.etcd_store import LEADER_KEY, MEMBERS_PREFIX, NETWORK_KEY
from sdn.southbound.connection import SwitchConnection

LOG = logging.getLogger(__name__)
LEADER = Gauge("sdn_cluster_leader", "1 while this controller leads the cluster")
GENERATION = Gauge("sdn_cluster_generation", "Generation id of this controller's leadership")
LEADERSHIP_CHANGES = Counter("sdn_cluster_leadership_changes_total",
                             "Times this controller was elected or stepped down", ["change"])
REFUSED_WRITES = Counter("sdn_switch_role_refusals_total",
                         "Role requests or writes a switch refused (another controller is "
                         "master there)")
READY_WAIT = 10.0  # seconds after start a member campaigns even if it misses switches
OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE, OFPET_ROLE_REQUEST_FAILED = 1, 10, 11


def is_role_refusal(err_type: int, code: int) -> bool:
    """An OpenFlow error that means: not master here (stale generation id, or a write
    sent as slave)."""
    return err_type == OFPET_ROLE_REQUEST_FAILED or (
        err_type == OFPET_BAD_REQUEST and code == OFPBRC_IS_SLAVE)


class EtcdElection:
    """`ElectionStore` on etcd: the leader's record is /sdn/leader, bound to its lease;
    its create revision is the generation id."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    def grant(self, ttl: int) -> tuple[int, int]:
        return self.etcd.grant(ttl)

    def keepalive(self, lease: int) -> int:
        return self.etcd.keepalive(lease)

    def leader(self) -> LeaderRecord | None:
        entry = self.etcd.get(LEADER_KEY)
        if entry is None:
            return None
        record = entry.json()
        return LeaderRecord(record["node"], record["api"], entry.create_revision, entry.lease)

    def try_lead(self, lease: int, node: str, info: dict[str, Any]) -> int | None:
        if not self.etcd.txn([created_at(LEADER_KEY, 0)],
                             [put(LEADER_KEY, {"node": node, **info}, lease)]):
            return None
        entry = self.etcd.get(LEADER_KEY)
        return entry.create_revision if entry is not None and entry.lease == lease else None

    def resign(self, lease: int, generation: int) -> None:
        self.etcd.txn([created_at(LEADER_KEY, generation)], [delete(LEADER_KEY)])


class ClusterMember:
    """Runs the election and keeps the switches' roles in line with it. The application
    passes `on_elected(generation)` (take over: reload the policy, then claim the
    switches) and `on_deposed()`."""

    def __init__(self, etcd: Etcd, node: str, api: str, ttl: int,
                 switches: dict[int, SwitchConnection], topology: Topology,
                 on_elected: Callable[[int], None], on_deposed: Callable[[], None],
                 on_network: Callable[[], None] = lambda: None) -> None:
        self.etcd = etcd
        self.node = node
        self.api = api
        self.switches = switches
        self.topology = topology
        self.on_network = on_network  # a standby's topology changed to the leader's
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.leadership = Leadership(EtcdElection(etcd), node, {"api": api}, ttl,
                                     self._changed, may_lead=self._sees_every_switch)
        self._started = time.monotonic()
        self._published: tuple[int | None, dict] | None = None
        self.store_answers = False  # at the last tick
        self._network: tuple[int, dict | None] = (0, None)  # (etcd revision, record)
        self._wake = hub.Event()

    # the Fence that ControllerState consults before every write
    def leading(self) -> bool:
        return self.leadership.leading()

    def holds(self, conn: SwitchConnection) -> bool:
        return (self.leadership.leading() and conn.role == "master"
                and conn.generation == self.leadership.generation)

    @property
    def generation(self) -> int:
        return self.leadership.generation

    def write_generation(self) -> int:
        """The generation id store writes are fenced with; 0 when not leading."""
        return self.generation if self.leading() else 0

    def known_leader(self) -> LeaderRecord | None:
        return self.leadership.known_leader

    def run(self) -> None:
        """The member's green thread: a tick per interval (a standby's twice as often:
        it takes over sooner), or at once when `wake` is called, forever."""
        while True:
            try:
                self.leadership.tick()
                self._follow()
                self._share_network()
                self._publish()
                self.store_answers = True
            except StoreUnavailable as exc:
                self.store_answers = False
                self.leadership.lost_store(str(exc))
            except Exception:
                LOG.exception("cluster tick failed")
            interval = self.leadership.interval
            self._wake.wait(interval if self.leadership.generation else interval / 2)
            self._wake.clear()

    def wake(self) -> None:
        """Tick now: a role changed, and the other members should read it soon."""
        self._wake.set()

    def _sees_every_switch(self) -> bool:
        """Campaign only once connected to every switch another member is (a member that
        has just started may not be yet, and would reroute around the ones it misses),
        or after READY_WAIT seconds however many it has."""
        if time.monotonic() - self._started > READY_WAIT:
            return True
        expected = {dpid for entry in self.etcd.get_prefix(MEMBERS_PREFIX)
                    for dpid in entry.json().get("switches", {})}
        ours = {f"{dpid:016x}" for dpid, conn in self.switches.items() if conn.ready}
        return expected <= ours

    def leave(self) -> None:
        """Stopping: end the lease now, so another member is elected at once instead of
        when it would have run out."""
        lease, self.leadership.lease = self.leadership.lease, None
        self.leadership.step_down("stopping")
        if lease is not None and self.store_answers:  # else it would only time out
            try:
                self.etcd.revoke(lease)
            except StoreUnavailable as exc:
                LOG.warning("could not end the lease: %s", exc)

    def _share_network(self) -> None:
        """The leader publishes the links and hosts it knows when they change; a standby
        takes them over (links only between ports it sees up), so its views are the
        leader's and, elected, it starts from the known network."""
        if self.leadership.generation:
            record = network_record(self.topology)
            if record != self._network[1] and self.etcd.txn(
                    [created_at(LEADER_KEY, self.leadership.generation)],
                    [put(NETWORK_KEY, record)]):
                self._network = (0, record)
            return
        entry = self.etcd.get(NETWORK_KEY)
        if entry is None or entry.mod_revision == self._network[0]:
            return
        record = entry.json()
        self._network = (entry.mod_revision, record)
        if follow_network(self.topology, record):
            self.on_network()

    def _follow(self) -> None:
        """A standby whose slave request a switch refused (it asked before it knew the
        current generation id) asks again: as an equal it would get packet-ins."""
        known = self.leadership.known_leader
        if self.leadership.generation or known is None:
            return
        for conn in list(self.switches.values()):
            if conn.role == "equal" or (conn.role == "slave" and conn.generation == 0):
                conn.request_role("slave", known.generation)

    def claim(self, conn: SwitchConnection) -> None:
        """Ask a switch for the role this controller has now: master under the current
        generation when leading, else slave (no packet-ins, no writes)."""
        if self.leading():
            conn.request_role("master", self.generation)
        else:
            known = self.leadership.known_leader
            conn.request_role("slave", known.generation if known else 0)

    def refused(self, conn: SwitchConnection, description: str) -> None:
        REFUSED_WRITES.inc()
        conn.refused_role()
        LOG.warning("switch %016x refused a role request or a write (another controller is "
                    "master there, or the generation id is stale): %s", conn.dpid,
                    description)
        self.leadership.fenced(description)

    def _changed(self, generation: int) -> None:
        LEADER.set(1 if generation else 0)
        GENERATION.set(generation)
        LEADERSHIP_CHANGES.labels("elected" if generation else "stepped down").inc()
        if generation:
            self.on_elected(generation)
        else:
            self.on_deposed()

    def _publish(self) -> None:
        """/sdn/members/<node>: where this controller's API is, whether it leads, and its
        role at each switch; bound to its lease, so a dead member disappears."""
        record = {"node": self.node, "api": self.api, "leading": self.leading(),
                  "generation": self.generation,
                  "switches": {f"{dpid:016x}": conn.role
                               for dpid, conn in sorted(self.switches.items())}}
        lease = self.leadership.lease
        if lease is None or self._published == (lease, record):
            return
        self.etcd.txn([], [put(MEMBERS_PREFIX + self.node, record, lease)])
        self._published = (lease, record)

    def status(self) -> dict[str, Any]:
        """What `sdnctl cluster status` shows: read from the store, so any member answers
        the same (its own view of the switches comes from its record)."""
        leader = self.etcd.get(LEADER_KEY)
        members = [entry.json() for entry in self.etcd.get_prefix(MEMBERS_PREFIX)]
        return {
            "node": self.node,
            "leading": self.leading(),
            "leader": ({**leader.json(), "generation": leader.create_revision}
                       if leader else None),
            "controllers": members,
            "agents": [entry.json() for entry in self.etcd.get_prefix(AGENTS_PREFIX)],
            "etcd": [{"name": m.get("name", ""), "client_urls": m.get("clientURLs", []),
                      "healthy": m["healthy"]} for m in self.etcd.members()],
            "lease_ttl": self.leadership.ttl,
            "leadership_changes": self.leadership.changes,
        }


def network_record(topology: Topology) -> dict[str, Any]:
    """The links, hosts and edge ports of `topology`, as the leader publishes them."""
    return {"links": sorted([lk.a, lk.a_port, lk.b, lk.b_port] for lk in topology.links),
            "hosts": sorted([h.mac, h.dpid, h.port, list(h.ips)]
                            for h in topology.hosts.values()),
            "edges": sorted([dpid, port] for dpid in topology.ports
                            for port in topology.edge_ports(dpid))}


def follow_network(topology: Topology, record: dict[str, Any]) -> bool:
    """Make a standby's links the leader's (where both ports are up here), learn its hosts
    and trust its edge ports; True if anything changed."""
    def up(dpid: int, port: int) -> bool:
        return port in topology.ports.get(dpid, {})

    wanted = {Link.between(a, ap, b, bp) for a, ap, b, bp in record.get("links", [])
              if up(a, ap) and up(b, bp)}
    changed = False
    for link in topology.links - wanted:
        topology.remove_link(link)
        changed = True
    for link in wanted - topology.links:
        changed |= topology.add_link(link.a, link.a_port, link.b, link.b_port)
    for dpid, port in record.get("edges", []):
        changed |= topology.trust_edge(dpid, port)
    for mac, dpid, port, ips in record.get("hosts", []):
        if up(dpid, port):
            changed |= topology.learn_host(mac, dpid, port, trusted=True)
            for ip in ips:
                changed |= topology.learn_host(mac, dpid, port, ip, trusted=True)
    return changed
