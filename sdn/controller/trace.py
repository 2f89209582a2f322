"""`sdnctl trace` against the live controller: the packet built from the hosts it knows,
the rules compiled for the policy in force or read back from the switches, the VNF arms
where they are, names for everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdn.controller.state import ControllerState
from sdn.controller.verify import object_names, read_all
from sdn.explain.behaviour import cases, changes
from sdn.explain.trace import PROTOCOLS, Context, Probe, trace
from sdn.model.rules import FlowRule, SwitchRules
from sdn.model.topology import Host, Snapshot
from sdn.policy.schema import LoadBalancer, Policy
from sdn.reconcile.drift import describe


class TraceError(LookupError):
    """The request names something the controller does not know."""


def find_host(state: ControllerState, key: str) -> Host | None:
    """A known host by MAC, IP address or name."""
    topology = state.topology
    return (topology.hosts.get(key.lower()) or topology.host_by_ip(key)
            or next((h for h in topology.hosts.values() if h.name == key), None))


def probe_for(state: ControllerState, src: str, dst: str, proto: str | None,
              sport: int | None, dport: int | None, reply: bool = False) -> Probe:
    """The packet from `src` to `dst`; with `reply`, the answer to it (for a virtual IP:
    from the load balancer's first backend the controller knows)."""
    if proto is not None and proto not in PROTOCOLS:
        raise TraceError(f"proto: one of {', '.join(PROTOCOLS)}")
    source = find_host(state, src)
    if source is None or not source.ips:
        raise TraceError(f"no host {src!r} with an address is known (name, IP or MAC)")
    target = find_host(state, dst)
    vips = state.policy.virtual_ips() if state.policy is not None else {}
    if target is not None and target.ips:
        dst_ip, dst_mac = (dst if dst in target.ips else target.ips[0]), target.mac
    elif dst in vips:
        dst_ip, dst_mac = dst, vips[dst]
        if reply:
            target, dst_ip, sport_back = _backend_of(state, dst, dport)
            dport, dst_mac = sport_back, target.mac
    else:
        raise TraceError(f"no host or virtual IP {dst!r} is known")
    if reply:
        return Probe(target.mac, dst_ip, target.dpid, target.port, source.mac,
                     source.ips[0], proto, dport, sport)
    return Probe(source.mac, source.ips[0], source.dpid, source.port, dst_mac, dst_ip, proto,
                 sport, dport)


def _backend_of(state: ControllerState, vip: str, dport: int | None
                ) -> tuple[Host, str, int | None]:
    """The first backend of the load balancer owning `vip` that is a known host: (host,
    its address, the port it answers from)."""
    for vnf in state.policy.vnfs.values():
        if isinstance(vnf, LoadBalancer) and vnf.vip == vip:
            for backend in vnf.backends:
                host = state.topology.host_by_ip(backend.ip)
                if host is not None:
                    return host, backend.ip, backend.port or vnf.port or dport
    raise TraceError(f"no backend of {vip} is a known host: its answer cannot be traced")


def _context(state: ControllerState, snapshot: Snapshot, policy: Policy | None) -> Context:
    topology = state.topology
    names = object_names(state, policy)
    instances = state.vnfs.instances() if state.vnfs is not None else []
    return Context(
        switch_name=lambda dpid: topology.bridge_names.get(dpid) or f"{dpid:016x}",
        port_name=lambda dpid, port: topology.port_names.get(dpid, {}).get(port) or str(port),
        hosts_at={(h.dpid, h.port): h.name or h.mac for h in snapshot.hosts},
        object_of=lambda cookie: describe(cookie, names),
        vnfs=tuple((i.vnf, i.instance, i.dpid, i.ingress_port, i.egress_port)
                   for i in instances if i.alive),
        mac_of=lambda ip: host.mac if (host := topology.host_by_ip(ip)) else None)


def trace_in(state: ControllerState, probe: Probe, installed: bool,
             rule_text: Callable[[FlowRule], dict[str, Any]]) -> dict[str, Any]:
    """Trace `probe` through the compiled rules, or (`installed`) the switches' own."""
    with state.lock:
        snapshot = state.topology.snapshot()
        rules = ({dpid: read.rules for dpid, read in read_all(state).items()} if installed
                 else state.desired(state.policy, snapshot))
    try:
        result = trace(snapshot, rules, probe, _context(state, snapshot, state.policy),
                       rule_text, state.policy)
    except LookupError as exc:
        raise TraceError(str(exc)) from exc
    return {"packet": probe.packet(), "rules": "installed" if installed else "compiled",
            **result}


def behaviour_changes(state: ControllerState, policy: Policy,
                      after: dict[int, SwitchRules]) -> list[dict[str, str]]:
    """Which traffic `policy` (compiled as `after`) treats otherwise than the policy in
    force: the behavioural half of `policy diff`. Call under the state's lock."""
    snapshot = state.topology.snapshot()
    before = state.desired(state.policy, snapshot)
    contexts = {False: _context(state, snapshot, state.policy),
                True: _context(state, snapshot, policy)}
    policies = {False: state.policy, True: policy}

    def run(probe: Probe, changed: bool) -> dict[str, Any]:
        return trace(snapshot, after if changed else before, probe, contexts[changed],
                     lambda rule: {"table": rule.table}, policies[changed])

    traceable = [case for case in cases([state.policy, policy], list(snapshot.hosts))
                 if case.probe.dpid in before and case.probe.dpid in after]
    return changes(traceable, run)
