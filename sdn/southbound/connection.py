"""The OpenFlow side of each connected switch: what it holds, and bringing it to what we want.

On connect the switch's meter, flow and group tables are read, not wiped, so a restarted
controller reconciles instead of interrupting traffic. Afterwards every change is a
minimal diff, sent in a safe order and closed by a barrier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from prometheus_client import Counter

from common.blocking import run_blocking
from common.collector import collector_paused
from sdn.model.cookies import COOKIE_LEARN, cookie_kind
from sdn.model.pipeline import TABLE_INGRESS
from sdn.model.rules import Meter, RuleKey, RulesDelta, SwitchRules
from sdn.model.topology import Host, Link
from sdn.reconcile import ordering
from sdn.reconcile.diff import Changes, diff
from sdn.southbound import codec
from sdn.southbound.readback import add_flows, add_groups, add_meters

LOG = logging.getLogger("sdn.southbound.connection")
BARRIER_TIMEOUT = 5.0  # for all the rounds of one update
BARRIER_POLL = 0.0005  # seconds between looks at the barrier replies of a round
ROUNDS = Counter("sdn_update_rounds_total", "Rounds of ordered rule updates sent")
FLOW_MODS = Counter("sdn_flow_mods_total", "FlowMods sent to switches")
ROLES = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE,
         "equal": ofp.OFPCR_ROLE_EQUAL}
ROLE_NAMES = {value: name for name, value in ROLES.items()}
METER_MODS = Counter("sdn_meter_mods_total", "MeterMods sent to switches")


@dataclass
class SwitchConnection:
    datapath: object
    held: SwitchRules = field(default_factory=SwitchRules)
    flows_read: bool = False
    groups_read: bool = False
    meters_read: bool = False
    flow_mods_sent: int = 0
    barrier_xid: int | None = None
    confirmed: bool = True
    errors: list[str] = field(default_factory=list)
    hold_until: float = 0.0
    xid: int = 0  # of batched FlowMods (errors are told apart by switch, not by xid)
    role: str = "equal"  # this controller's OpenFlow role at the switch, as last confirmed
    generation: int = 0  # the generation id the switch confirmed with it
    # The desired rules (that very object, see sdn.compile.desired.DesiredCache) `held` was
    # last brought to in full; `push` skips the switch while it is handed that object
    # again. Anything that changes `held` otherwise clears it: `adopt` (also where a read of
    # the tables starts, and no push reaches a switch until it is read), `forget_flow`, an
    # error from the switch.
    in_step_with: SwitchRules | None = None

    @property
    def dpid(self) -> int:
        return self.datapath.id

    @property
    def ready(self) -> bool:
        return self.flows_read and self.groups_read

    def adopt(self, rules: SwitchRules) -> None:
        """Take `rules` (read back from the switch) as what it holds."""
        self.held = rules
        self.in_step_with = None

    def forget_flow(self, key: RuleKey) -> None:
        """The switch removed a flow of its own accord (an idle timeout)."""
        self.held.flows.pop(key, None)
        self.in_step_with = None

    def request_tables(self) -> None:
        dp = self.datapath
        self.adopt(SwitchRules())
        self.flows_read = self.groups_read = self.meters_read = False
        # Meters first: replies come back in order, so they are known by the time the
        # flows and groups are, when the application passes them to on_meter_config.
        dp.send_msg(parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL))
        dp.send_msg(parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY,
                                               ofp.OFPG_ANY, 0, 0, parser.OFPMatch()))
        dp.send_msg(parser.OFPGroupDescStatsRequest(dp, 0))

    def on_flow_stats(self, body: list, more: bool) -> None:
        add_flows(self.held, self.dpid, body)
        self.flows_read = not more

    def on_group_desc(self, body: list, more: bool) -> None:
        add_groups(self.held, self.dpid, body)
        self.groups_read = not more

    def on_meter_config(self, body: list, more: bool) -> None:
        add_meters(self.held, self.dpid, body)
        self.meters_read = not more

    def learned_hosts(self) -> list[Host]:
        """Hosts this switch's table 0 already names, with the addresses their ARP rules
        name: a restarted controller starts from them instead of forgetting every route
        (and every ARP answer) until the hosts speak again."""
        places: dict[str, int] = {}
        ips: dict[str, set[str]] = {}
        for rule in self.held.flows.values():
            fields = dict(rule.match)
            if (rule.table == TABLE_INGRESS and cookie_kind(rule.cookie) == COOKIE_LEARN
                    and "eth_src" in fields and "in_port" in fields):
                mac = fields["eth_src"]
                places[mac] = fields["in_port"]
                if "arp_spa" in fields:
                    ips.setdefault(mac, set()).add(fields["arp_spa"])
        return [Host(mac=mac, dpid=self.dpid, port=port, ips=tuple(sorted(ips.get(mac, ()))))
                for mac, port in sorted(places.items())]

    def plan(self, desired: SwitchRules) -> Changes:
        return diff(self._held_meters_known(desired), desired)

    def _held_meters_known(self, desired: SwitchRules) -> SwitchRules:
        """What the switch holds, with its meters inferred when their config has not been
        read: a switch holds every meter its flows use (it refuses flows naming a missing
        meter), and a meter's id names its content (sdn.compile.classes), so a used meter we
        still want
        is taken to be as we want it."""
        if self.meters_read:
            return self.held
        used = {r.meter for r in self.held.flows.values() if r.meter is not None}
        meters = dict(self.held.meters)
        for mid in used - meters.keys():
            meters[mid] = desired.meters.get(mid) or Meter(self.dpid, mid, 0, 0, "unknown")
        return SwitchRules(self.held.flows, self.held.groups, meters)

    def start_update(self, desired: SwitchRules) -> SwitchRules:
        """Adopt what the switch holds, its meters inferred when unread, as `held`: the
        state an update toward `desired` starts from. From here on only `apply_changes`
        changes it."""
        self.held = self._held_meters_known(desired)
        self.meters_read = True
        self.in_step_with = None
        return self.held

    def apply(self, desired: SwitchRules) -> Changes:
        """Send the whole difference to `desired` at once (see `push` for several switches
        in a safe order)."""
        changes = diff(self.start_update(desired), desired)
        self.apply_changes(changes)
        return changes

    def apply_changes(self, changes: Changes) -> None:
        """Send `changes`, closed by a barrier, and count them as held. `confirmed` turns
        true when the barrier reply arrives; errors land in `errors`."""
        self.errors = []
        if not changes:
            self.confirmed = True
            return
        self.confirmed = False
        dp = self.datapath
        for meter in changes.meter_adds:
            dp.send_msg(codec.meter_mod(dp, meter, ofp.OFPMC_ADD))
        for meter in changes.meter_mods:
            dp.send_msg(codec.meter_mod(dp, meter, ofp.OFPMC_MODIFY))
        for group in changes.group_adds:
            dp.send_msg(codec.group_mod(dp, group, ofp.OFPGC_ADD))
        for group in changes.group_mods:
            dp.send_msg(codec.group_mod(dp, group, ofp.OFPGC_MODIFY))
        if changes.flow_adds:  # one write for them all: thousands of class rules add up
            batch = bytearray()
            for rule in changes.flow_adds:
                self.xid = (self.xid + 1) & ofp.MAX_XID
                batch += codec.flow_add_bytes(rule, self.xid)
            dp.send(bytes(batch))
        if changes.flow_deletes:
            batch = bytearray()
            for rule in changes.flow_deletes:
                self.xid = (self.xid + 1) & ofp.MAX_XID
                batch += codec.flow_delete_bytes(rule, self.xid)
            dp.send(bytes(batch))
        for group in changes.group_deletes:
            dp.send_msg(parser.OFPGroupMod(dp, ofp.OFPGC_DELETE, 0, group.group_id, []))
        for meter in changes.meter_deletes:
            dp.send_msg(codec.meter_delete(dp, meter))
        barrier = parser.OFPBarrierRequest(dp)
        dp.send_msg(barrier)
        self.barrier_xid = barrier.xid
        self.flow_mods_sent += changes.flow_mods
        FLOW_MODS.inc(changes.flow_mods)
        METER_MODS.inc(changes.meter_messages)
        ordering.apply_changes(self.held, changes)
        LOG.debug("switch %016x: +%d -%d flows, +%d ~%d -%d groups, +%d ~%d -%d meters",
                 self.dpid, len(changes.flow_adds), len(changes.flow_deletes),
                 len(changes.group_adds), len(changes.group_mods), len(changes.group_deletes),
                 len(changes.meter_adds), len(changes.meter_mods), len(changes.meter_deletes))

    @property
    def settled(self) -> bool:
        """Nothing sent is left to confirm, or there is no one left to confirm it."""
        return self.confirmed or bool(self.errors) or not getattr(
            self.datapath, "is_active", True)

    def on_barrier_reply(self, xid: int) -> None:
        if xid == self.barrier_xid:
            self.confirmed = True

    def on_error(self, description: str) -> None:
        self.errors.append(description)
        self.in_step_with = None

    def request_role(self, role: str, generation: int) -> None:
        """Ask to be master or slave under `generation`. Until the reply confirms it,
        the connection holds no role a write may rely on."""
        dp = self.datapath
        self.role, self.generation = "pending", 0
        dp.send_msg(parser.OFPRoleRequest(dp, ROLES[role], generation))

    def on_role_reply(self, role: int, generation: int) -> None:
        self.role = ROLE_NAMES.get(role, "equal")
        self.generation = generation

    def refused_role(self) -> None:
        """The switch turned a role request down (stale generation id) or refused a
        write from a slave: another controller is master there."""
        self.role, self.generation = "slave", 0

    def packet_out(self, port: int, data: bytes) -> None:
        dp = self.datapath
        dp.send_msg(parser.OFPPacketOut(
            dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(port, 0)], data=data))


def _copy(rules: SwitchRules) -> SwitchRules:
    return SwitchRules(dict(rules.flows), dict(rules.groups), dict(rules.meters))


def _plan(held: Mapping[int, SwitchRules], desired: Mapping[int, SwitchRules],
          links: Iterable[Link], ordered: bool, in_step: frozenset[int],
          flow_keys: Mapping[int, Collection[RuleKey]]) -> ordering.Rounds:
    """Pure work on copies of what the switches hold (a flow-removed message may change
    that meanwhile): at 200 switches a plan takes ~0.2 s, which the event loop spends
    reading LLDP and packet-ins instead (`run_blocking`)."""
    with collector_paused():
        return ordering.plan_rounds(held, desired, links, ordered, in_step, flow_keys)


@dataclass
class PushResult:
    flow_mods: int = 0
    rounds: int = 0
    failures: dict[int, str] = field(default_factory=dict)  # dpid -> why
    switches: set[int] = field(default_factory=set)  # those sent anything
    messages: int = 0  # FlowMods, GroupMods and MeterMods


def push(conns: Mapping[int, SwitchConnection], desired: Mapping[int, SwitchRules],
         links: Iterable[Link], timeout: float = BARRIER_TIMEOUT, wait: bool = True,
         ordered: bool = True, stopping: Callable[[], bool] = lambda: False,
         deltas: Mapping[int, RulesDelta] | None = None) -> PushResult:
    """Bring every switch of `conns` to its `desired` rules in the rounds of
    `sdn.reconcile.ordering`, each round sent once every switch has confirmed the previous one (or
    none is left that could); a switch that reports an error or has not confirmed by
    `timeout` (over all rounds) fails the push, and nothing more is sent. Yields to other
    green threads while it waits; one round costs a barrier round trip.

    With `wait` false the rounds go one after another at once, without waiting and
    without failures: each switch still gets its messages in round order, but nothing
    holds one switch back for another. Not `ordered`: one round (see `plan_rounds`).
    Once `stopping()` is true no further round is sent: every round leaves the network
    consistent, so a stopping controller need not finish a long update. A switch in step
    with the `since` of its entry in `deltas` is diffed only where that says it changed."""
    in_step = frozenset(dpid for dpid, conn in conns.items()
                        if conn.in_step_with is desired[dpid])
    flow_keys = {dpid: delta.flow_keys for dpid, delta in (deltas or {}).items()
                 if dpid in conns and delta.now is desired[dpid]
                 and conns[dpid].in_step_with is delta.since}
    held = {dpid: _copy(conn.start_update(desired[dpid])) for dpid, conn in conns.items()
            if dpid not in in_step}
    rounds = run_blocking(_plan, held, {dpid: desired[dpid] for dpid in conns}, links,
                          ordered, in_step, flow_keys)
    result = PushResult()
    deadline = time.monotonic() + timeout
    for per_switch in rounds:
        if stopping():
            break
        for dpid, changes in per_switch.items():
            conns[dpid].apply_changes(changes)
            result.flow_mods += changes.flow_mods
            result.messages += len(changes)
            if changes:
                result.switches.add(dpid)
        result.rounds += 1
        ROUNDS.inc()
        if not wait:
            continue
        sent = [conns[dpid] for dpid in per_switch]
        while not all(c.settled for c in sent) and time.monotonic() < deadline:
            hub.sleep(BARRIER_POLL)
        for conn in sent:
            if conn.errors:
                result.failures[conn.dpid] = conn.errors[0]
            elif not conn.confirmed:
                result.failures[conn.dpid] = (
                    f"no barrier reply within {timeout:g}s" if getattr(
                        conn.datapath, "is_active", True) else "disconnected")
        if result.failures:
            break
    else:  # every round went out: each switch planned now holds its desired rules
        for dpid in held:
            if not conns[dpid].errors:
                conns[dpid].in_step_with = desired[dpid]
    if result.switches:  # one line per update, not per switch: 200 switches would flood
        LOG.info("update: %d messages (%d FlowMods) to %d switches in %d rounds",
                 result.messages, result.flow_mods, len(result.switches), result.rounds)
    return result
