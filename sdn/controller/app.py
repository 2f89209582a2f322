"""The os-ken application: an adapter between OpenFlow events and the controller.

Each handler decodes its event, calls pure code (sdn.controller.events) or the shared
state (sdn.controller.state), and carries out what comes back. One eventlet loop runs
every handler; `_sync_loop` recompiles after each burst of changes and sends each switch
only its difference.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from prometheus_client import Counter

from common.etcd import Etcd
from sdn.compile import chains, routing
from sdn.compile.queues import QueuePlan, plan_queues, port_capacities
from sdn.controller.agent_vnfs import AgentVnfs
from sdn.controller.apply import PolicyEngine
from sdn.controller.cluster import ClusterMember, is_role_refusal
from sdn.controller.events import LINK_EVENTS, Effects, EventHandler
from sdn.controller.packet_ins import PacketIns
from sdn.controller.placement import VnfManager
from sdn.controller.queues import QueueError, apply_queues
from sdn.controller.state import SYNC_PACE_MAX, ControllerState
from sdn.model.cookies import CHAIN_BYPASS, chain_cookie_mask, chain_sub_kind
from sdn.model.topology import EDGE_SETTLE_SECONDS
from sdn.policy.store import RevisionStore, StoreError
from sdn.southbound import codec
from sdn.southbound.connection import SwitchConnection

LOG = logging.getLogger(__name__)
REFUSED = Counter("sdn_switch_connections_refused_total",
                  "Switch connections refused, by reason", ["reason"])

LLDP_INTERVAL = 1.0
REPROBE_DELAY = 0.05  # after a switch is ready: time for its first rules to be installed
WARM_RESTART_GRACE = 2.5  # > LLDP_INTERVAL: every link is seen again before we reconcile
OFFLOAD_INTERVAL = 0.5  # workers rewrite their stats files every second
STATS_REPLY_TIMEOUT = 5.0


class SdnController(app_manager.OSKenApp):
    """Decodes OpenFlow events, hands them to `EventHandler` and the shared state, and
    carries out what they return. Timing (loops, grace periods) lives here too."""

    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.state = ControllerState()
        self.allowed_dpids: frozenset[int] | None = None  # None: any switch may connect
        self.topology = self.state.topology
        self.switches = self.state.switches
        self.handler = EventHandler(self.topology, self.state.vip_mac)
        self._dirty = hub.Event()
        self._queues_dirty = hub.Event()
        self._queues_applied = QueuePlan({})  # what the ports hold, as far as we know
        self._reprobe_pending = False
        self._bypass_requests: dict[tuple[int, int], float] = {}  # (dpid, xid) -> sent at
        self.cluster: ClusterMember | None = None  # None: the embedded default, no store
        self.engine: PolicyEngine | None = None
        self.packet_ins = PacketIns(self._packet_in)
        self.threads += [hub.spawn(loop) for loop in (
            self._sync_loop, self._queues_loop, self._lldp_loop, self._offload_loop,
            self.packet_ins.run)]

    def restore(self, store: RevisionStore, state_dir: Path, ordered_updates: bool = True,
                allowed_dpids: frozenset[int] | None = None) -> PolicyEngine:
        """Take over the stored desired state, as after a controller restart (in a
        cluster: once elected, see `_take_over`)."""
        self.state.ordered_updates = ordered_updates
        self.allowed_dpids = allowed_dpids
        self.engine = PolicyEngine(self.state, store)
        LOG.info("route repair: %s", routing.IMPLEMENTATION)
        if self.cluster is None:
            self.state.vnfs = VnfManager(self.topology, state_dir, self._changed)
            self._load_policy()
        else:  # host agents place the VNFs
            vnfs = AgentVnfs(self.cluster.etcd, self.topology, self.cluster.write_generation,
                             self._changed)
            self.state.vnfs = vnfs
            self.threads += [hub.spawn(self.cluster.run), hub.spawn(vnfs.watch)]
        return self.engine

    def _load_policy(self) -> None:
        """Abandon an apply that never finished; the latest revision is in force."""
        self.engine.recover()
        current = self.engine.store.current()
        self.state.policy = current.policy() if current is not None else None
        if current is not None:
            self.state.vnfs.expect(self.state.policy)
            LOG.info("restored policy revision %d", current.rev)

    def join_cluster(self, etcd: Etcd, node: str, api: str, ttl: int) -> ClusterMember:
        """Write to the switches only while elected leader through etcd (before restore)."""
        self.cluster = ClusterMember(etcd, node, api, ttl, self.switches, self.topology,
                                     self._take_over,
                                     lambda: LOG.info("standing by: no writes to switches"),
                                     self._changed)
        self.state.fence = self.cluster
        return self.cluster

    def _take_over(self, generation: int) -> None:
        """Elected: load the policy in force, then ask every switch to make us master
        (each is written to once it confirmed, and its tables were read again)."""
        try:  # not under the state's lock: etcd may be slow, and nothing is written yet
            self._load_policy()
        except StoreError as exc:
            self.cluster.leadership.step_down(f"could not read the policy: {exc}")
            return
        for conn in list(self.switches.values()):
            conn.request_role("master", generation)

    # switches
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev) -> None:
        dp = ev.msg.datapath
        refusal = self._refusal(dp)
        if refusal is not None:
            LOG.warning("refused a connection from %s claiming switch %016x: %s",
                        dp.address, dp.id, refusal)
            REFUSED.labels("connected" if dp.id in self.switches else "not allowed").inc()
            dp.close()
            return
        conn = SwitchConnection(dp)
        self.switches[dp.id] = conn
        if self.cluster is not None:
            self.cluster.claim(conn)
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
        conn.request_tables()
        LOG.info("switch %016x connected from %s", dp.id, dp.address)

    def _refusal(self, dp) -> str | None:
        """Why a connection may not speak for its datapath id: that switch is connected
        already (an impostor, or a stale session; the first keeps it), or the id is
        not on the allow-list."""
        held = self.switches.get(dp.id)
        if held is not None and held.datapath is not dp and held.datapath.is_active:
            return f"already connected from {held.datapath.address}"
        if self.allowed_dpids is not None and dp.id not in self.allowed_dpids:
            return "not on the allow-list (--allow-dpid)"
        return None

    def _registered(self, dp) -> SwitchConnection | None:
        """The connection `dp` is, if it speaks for its switch; events from any other
        connection claiming the same datapath id are ignored."""
        conn = self.switches.get(dp.id)
        return conn if conn is not None and conn.datapath is dp else None

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_disconnect(self, ev) -> None:
        dp = ev.datapath
        if dp.id is None or self.switches.get(dp.id, None) is None:
            return
        if self.switches[dp.id].datapath is not dp:
            return
        del self.switches[dp.id]
        self.topology.remove_switch(dp.id)
        LOG.info("switch %016x disconnected", dp.id)
        self._changed()

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _on_port_desc(self, ev) -> None:
        dp = ev.msg.datapath
        if self._registered(dp) is None:
            return
        ports = [p.port_no for p in ev.msg.body if codec.port_is_live(p)]
        self.topology.add_switch(dp.id, ports)
        names = {p.port_no: codec.port_name(p) for p in ev.msg.body}
        self.topology.name_ports(
            dp.id, {port: name for port, name in names.items() if port <= ofp.OFPP_MAX},
            bridge=names.get(ofp.OFPP_LOCAL))
        for port in ports:
            self._probe(dp.id, port)
        self._changed()
        hub.spawn(self._changed_after, EDGE_SETTLE_SECONDS + 0.05)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _on_port_status(self, ev) -> None:
        msg = ev.msg
        dpid, port = msg.datapath.id, msg.desc.port_no
        if port > ofp.OFPP_MAX or self._registered(msg.datapath) is None:
            return
        self.topology.name_ports(dpid, {port: codec.port_name(msg.desc)})
        if msg.reason == ofp.OFPPR_DELETE or not codec.port_is_live(msg.desc):
            if self.topology.port_down(dpid, port):
                LOG.info("link at %016x port %d went down", dpid, port)
                LINK_EVENTS.labels("port down").inc()
        else:
            self.topology.port_up(dpid, port)
            self._probe(dpid, port)
            hub.spawn(self._changed_after, EDGE_SETTLE_SECONDS + 0.05)
        self._changed()

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _on_flow_stats(self, ev) -> None:
        conn = self._registered(ev.msg.datapath)
        if conn is None or self._read_back(ev.msg):
            return
        if (ev.msg.datapath.id, ev.msg.xid) in self._bypass_requests:
            self._on_bypass_stats(ev.msg)
        elif conn is not None and not conn.ready:
            conn.on_flow_stats(ev.msg.body, bool(ev.msg.flags & ofp.OFPMPF_REPLY_MORE))
            self._tables_read(conn)

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _on_group_desc(self, ev) -> None:
        conn = self._registered(ev.msg.datapath)
        if conn is not None and not self._read_back(ev.msg) and not conn.ready:
            conn.on_group_desc(ev.msg.body, bool(ev.msg.flags & ofp.OFPMPF_REPLY_MORE))
            self._tables_read(conn)

    def _read_back(self, msg) -> bool:
        """A reply to a read-back of the tables (verify); True if it was one."""
        read = self.state.reads.get(msg.datapath.id)
        if read is None or not read.expects(msg.xid):
            return False
        read.on_reply(msg.xid, msg.body, bool(msg.flags & ofp.OFPMPF_REPLY_MORE))
        return True

    def _tables_read(self, conn: SwitchConnection) -> None:
        """A switch that already holds our rules (we restarted, it did not) keeps them
        untouched until discovery has caught up, then gets only the difference."""
        if not conn.ready:
            return
        for host in conn.learned_hosts():
            self.topology.learn_host(host.mac, conn.dpid, host.port, trusted=True)
            for ip in host.ips:
                self.topology.learn_host(host.mac, conn.dpid, host.port, ip, trusted=True)
        if not self._reprobe_pending:
            self._reprobe_pending = True
            hub.spawn(self._reprobe_after, REPROBE_DELAY)
        if conn.held.flows:
            conn.hold_until = time.monotonic() + WARM_RESTART_GRACE
            LOG.info("switch %016x holds %d flows: reconciling after %.1fs", conn.dpid,
                     len(conn.held.flows), WARM_RESTART_GRACE)
            hub.spawn(self._changed_after, WARM_RESTART_GRACE)
        self._changed()

    def _changed_after(self, seconds: float) -> None:
        hub.sleep(seconds)
        self._changed()

    def _reprobe_after(self, seconds: float) -> None:
        """Probe every port again once a new switch traps LLDP: probes its neighbours sent
        before that were lost, and an undiscovered link in a loop would flood. Switches
        ready within `seconds` share one repeat, and it is no new round."""
        hub.sleep(seconds)
        self._reprobe_pending = False
        self._carry_out(self.handler.probes(new_round=False))

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _on_meter_config(self, ev) -> None:
        conn = self._registered(ev.msg.datapath)
        if conn is not None and not self._read_back(ev.msg) and not conn.meters_read:
            conn.on_meter_config(ev.msg.body, bool(ev.msg.flags & ofp.OFPMPF_REPLY_MORE))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev) -> None:
        conn = self._registered(ev.msg.datapath)
        if conn is not None:
            conn.on_barrier_reply(ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _on_role_reply(self, ev) -> None:
        """Master now: read the tables again (the last leader may have changed them)."""
        conn = self._registered(ev.msg.datapath)
        if conn is None:
            return
        conn.on_role_reply(ev.msg.role, ev.msg.generation_id)
        LOG.info("switch %016x: role %s, generation %d", conn.dpid, conn.role, conn.generation)
        self.cluster.wake()
        if self.state.fence.holds(conn) and conn.ready:
            conn.request_tables()
        self._changed()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _on_error(self, ev) -> None:
        msg = ev.msg
        conn = self._registered(msg.datapath)
        if conn is not None and self.cluster is not None and is_role_refusal(msg.type,
                                                                             msg.code):
            self.cluster.refused(conn, f"type={msg.type} code={msg.code}")  # fencing, no fault
            return
        description = f"OpenFlow error type={msg.type} code={msg.code} xid={msg.xid}"
        LOG.error("%s from switch %016x: data=%s", description, msg.datapath.id or 0,
                  bytes(msg.data[:64]).hex())
        if conn is not None:
            conn.on_error(description)

    # packets
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev) -> None:
        msg = ev.msg
        if self._registered(msg.datapath) is not None:  # LLDP at once, the rest queued
            self.packet_ins.put(msg.datapath.id, msg.match["in_port"], msg.table_id,
                                bytes(msg.data))

    def _packet_in(self, dpid: int, in_port: int, table_id: int, data: bytes) -> None:
        self._carry_out(self.handler.packet_in(dpid, in_port, table_id, data,
                                               list(self.switches)))

    def _carry_out(self, effects: Effects) -> None:
        for dpid, port, data in effects.packets:  # only where we are confirmed master:
            conn = self.switches.get(dpid)        # a slave's packet-out is refused
            if conn is not None and self.state.fence.holds(conn):
                conn.packet_out(port, data)
        if effects.changed:
            self._changed()

    def _probe(self, dpid: int, port: int) -> None:
        self._carry_out(self.handler.probes([(dpid, port)]))

    # loops
    def _changed(self) -> None:
        self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            try:
                self.state.sync()
            except Exception:
                LOG.exception("sync failed")
            self._queues_dirty.set()
            hub.sleep(min(self.state.push_seconds, SYNC_PACE_MAX))

    def close(self) -> None:
        """VNFs are left running: the next controller takes them over (`Runtime.adopt`);
        a policy without them is what removes them."""
        self.state.freeze()

    def _queues_loop(self) -> None:
        """Egress HTB queues follow the policy's classes and the switch ports. tc runs in
        a helper process (netlink does not work under eventlet), so only on a change."""
        while True:
            self._queues_dirty.wait()
            self._queues_dirty.clear()
            if not self.state.fence.leading():
                continue
            snapshot = self.topology.snapshot()
            names = {(dpid, port): self.topology.port_names[dpid][port]
                     for dpid, ports in snapshot.switches.items() for port in ports
                     if port in self.topology.port_names.get(dpid, {})}
            policy = self.state.policy
            plan = plan_queues(policy, port_capacities(policy, snapshot, names))
            changes = plan.changes_since(self._queues_applied)
            if not changes:
                continue
            try:
                report = apply_queues(changes)
                self._queues_applied = plan.without(report["missing"])
                LOG.info("egress queues: %s", {k: len(v) for k, v in report.items()})
            except QueueError as exc:
                LOG.warning("egress queues not applied: %s", exc)

    # flow offload
    def _offload_loop(self) -> None:
        """Settled flows come from the workers' stats files; a change recompiles. While
        bypasses are wanted, their counters are read from the switches."""
        while True:
            hub.sleep(OFFLOAD_INTERVAL)
            try:
                self._collect_settled()
                self._request_bypass_stats()
            except Exception:
                LOG.exception("flow offload round failed")

    def _collect_settled(self) -> None:
        if self.state.vnfs is None:
            return
        policy = self.state.policy
        offloading = {n for n, v in policy.vnfs.items() if v.offload} if policy else set()
        if self.state.offload.update(self.state.vnfs.settled(), offloading):
            LOG.info("offload: %d settled flows", len(self.state.offload.flows))
            self._changed()
        try:
            wanted = chains.bypasses(policy, self.topology.snapshot(), self.state.offload.flows)
        except chains.ChainError as exc:  # sync reports it: the rules cannot compile either
            LOG.debug("offload: bypasses unknown for now: %s", exc)
            return
        self.state.offload.set_bypasses(wanted)

    def _request_bypass_stats(self) -> None:
        now = time.monotonic()
        self._bypass_requests = {k: t for k, t in self._bypass_requests.items()
                                 if now - t < STATS_REPLY_TIMEOUT}
        if not self.state.offload.active:
            return
        cookie, mask = chain_cookie_mask(CHAIN_BYPASS)
        for dpid, conn in list(self.switches.items()):
            if conn.ready:
                dp = conn.datapath
                request = codec.flow_stats_request(dp, cookie, mask)
                dp.set_xid(request)  # known before the reply can arrive
                self._bypass_requests[(dpid, request.xid)] = now
                dp.send_msg(request)

    def _on_bypass_stats(self, msg) -> None:
        dpid = msg.datapath.id
        for stat in msg.body:
            self.state.offload.record(stat.cookie, dpid, stat.table_id, stat.priority,
                                codec.match_items(stat.match), stat.packet_count,
                                stat.byte_count)
        if not msg.flags & ofp.OFPMPF_REPLY_MORE:
            self._bypass_requests.pop((dpid, msg.xid), None)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _on_flow_removed(self, ev) -> None:
        """A bypass rule idled out: its flow is over (or paused), so the flow leaves the
        held state (the next diff must not put the rule back) and the wanted one (its
        other rules go too; the flow's next packets take the whole chain). Rules we
        deleted ourselves only bring their final counters."""
        msg = ev.msg
        if chain_sub_kind(msg.cookie) != CHAIN_BYPASS or self._registered(msg.datapath) is None:
            return
        dpid, items = msg.datapath.id, codec.match_items(msg.match)
        self.state.offload.record(msg.cookie, dpid, msg.table_id, msg.priority, items,
                            msg.packet_count, msg.byte_count)
        if msg.reason == ofp.OFPRR_DELETE:
            return
        conn = self.switches.get(dpid)
        if conn is not None:
            conn.forget_flow((msg.table_id, msg.priority, items))
        if self.state.offload.expire(msg.cookie):
            LOG.info("offload: bypass %#018x idled out", msg.cookie)
            self._changed()

    def _lldp_loop(self) -> None:
        while True:
            hub.sleep(LLDP_INTERVAL)
            self._carry_out(self.handler.probes())
            self._carry_out(self.handler.expire_links())
            self._carry_out(self.handler.settle_claims())
