"""What every switch should hold, from the policy and the topology. Pure.

This is where the policy's sections meet the compiler: routing preferences become
compile options and link weights; traffic classes and chains add their own rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from sdn.compile.arp import answer_rule
from sdn.compile.chain_model import SettledFlow, VnfInstance
from sdn.compile.chains import compile_chains, vnf_ports
from sdn.compile.classes import add_class_rules
from sdn.compile.pipeline import packet_in_meters
from sdn.compile.routes import CompilerCache, Options, compile_network
from sdn.model.rules import RulesDelta, SwitchRules
from sdn.model.topology import Snapshot
from sdn.policy.schema import Policy

DEFAULT_LATENCY_SECONDS = 0.001
DEFAULT_CAPACITY_BPS = 1_000_000_000


def options_for(policy: Policy | None) -> Options:
    if policy is None:
        return Options()
    return Options(ecmp=policy.routing.ecmp,
                   protection=policy.routing.protection == "fast-failover")


def link_weights(policy: Policy | None, snapshot: Snapshot) -> dict[frozenset[int], float]:
    """Weight of every known link under the policy's metric; explicit weights win."""
    if policy is None:
        return {}
    configured = {}
    for link in policy.topology.links:
        a, b = (policy.dpid_of(name) for name in link.between)
        if a is not None and b is not None:
            configured[frozenset((a, b))] = link
    metric = policy.routing.metric
    weights = {}
    for lk in snapshot.links:
        pair = frozenset((lk.a, lk.b))
        attrs = configured.get(pair)
        if attrs is not None and attrs.weight is not None:
            weights[pair] = float(attrs.weight)
        elif metric == "latency":
            latency = attrs.latency if attrs and attrs.latency else DEFAULT_LATENCY_SECONDS
            weights[pair] = latency * 1000.0
        elif metric == "capacity":
            capacity = attrs.capacity if attrs and attrs.capacity else DEFAULT_CAPACITY_BPS
            weights[pair] = 1e9 / capacity
        else:
            weights[pair] = 1.0
    return weights


class DesiredCache:
    """What `desired_rules` keeps between calls: the incremental route compilers, and each
    switch's last desired rules with the rest (meters, classes, answers, chains) they were
    built from. A switch whose routes did not change and whose rest is equal gets the very
    same `SwitchRules` object again: `push` need not diff a switch that is in step with it
    (`SwitchConnection.in_step_with`), so a change costs work where it changes rules. The
    objects handed out are shared between calls: callers must not change them.

    `deltas` says, for the switches the last call gave new objects whose routes alone
    changed, where those differ from the objects before, so a switch in step with the
    object before is diffed at those keys only."""

    def __init__(self) -> None:
        self.compilers = CompilerCache()
        self.deltas: dict[int, RulesDelta] = {}
        self._last: dict[int, tuple[Options, SwitchRules, SwitchRules]] = {}

    def merge(self, options: Options, snapshot: Snapshot,
              rest: dict[int, SwitchRules]) -> dict[int, SwitchRules]:
        """Every switch of `rest`: its routes (recompiled incrementally for `snapshot`) with
        its rest, or the last object where neither changed."""
        compiler = self.compilers.get(options)
        routes = compiler.update(snapshot)  # only the switches whose routes changed
        touched = compiler.touched
        merged: dict[int, SwitchRules] = {}
        self.deltas = {}
        for dpid, extra in rest.items():
            last = self._last.get(dpid)
            same_rest = last is not None and last[0] == options and last[1] == extra
            if dpid not in routes and same_rest:
                merged[dpid] = last[2]
                continue
            switch_routes = routes[dpid] if dpid in routes else compiler.rules(dpid)
            merged[dpid] = _with(switch_routes, extra)
            if same_rest and touched is not None:
                self.deltas[dpid] = RulesDelta(last[2], merged[dpid],
                                               frozenset(touched.get(dpid, ())))
            self._last[dpid] = (options, extra, merged[dpid])
        for gone in self._last.keys() - rest.keys():
            del self._last[gone]
        return merged


def desired_rules(
    policy: Policy | None, snapshot: Snapshot, instances: Sequence[VnfInstance] = (),
    settled: Iterable[SettledFlow] = (), cache: DesiredCache | None = None,
) -> dict[int, SwitchRules]:
    """`snapshot` leaves VNF arms out (routing and flooding must never use them); chain
    steering sees them, for the instances that are placed. With a `cache` the routes are
    recompiled incrementally and unchanged switches keep their objects (`DesiredCache`)."""
    weighted = replace(snapshot, weights=link_weights(policy, snapshot))
    options = options_for(policy)
    rest = {dpid: SwitchRules(meters={m.meter_id: m for m in packet_in_meters(dpid)})
            for dpid in snapshot.switches}
    add_class_rules(rest, policy, snapshot)
    add_virtual_ip_answers(rest, policy, snapshot)
    arms = vnf_ports(instances)
    with_arms = replace(weighted, switches={
        dpid: ports | arms.get(dpid, frozenset()) for dpid, ports in weighted.switches.items()})
    for dpid, extra in compile_chains(policy, with_arms, instances, settled).items():
        if dpid in rest:
            rest[dpid].add_flows(extra)
    if cache is None:
        routes = compile_network(weighted, options)
        return {dpid: _with(routes[dpid], extra) for dpid, extra in rest.items()}
    return cache.merge(options, weighted, rest)


def _with(routes: SwitchRules, rest: SwitchRules) -> SwitchRules:
    """`routes` (a fresh object of the compiler's) with `rest` laid over it."""
    routes.flows.update(rest.flows)
    routes.groups.update(rest.groups)
    routes.meters.update(rest.meters)
    return routes


def add_virtual_ip_answers(rules: dict[int, SwitchRules], policy: Policy | None,
                           snapshot: Snapshot) -> None:
    """Switches answer ARP for load balancers' virtual IPs as for hosts (sdn.compile.routes);
    no host owns a VIP, so no request goes on."""
    if policy is None:
        return
    vips = policy.virtual_ips()
    for dpid in {h.dpid for h in snapshot.hosts} & rules.keys():
        rules[dpid].add_flows(answer_rule(dpid, ip, mac, tell_owner=False)
                              for ip, mac in vips.items())
