"""How a chain's traffic is steered: each chain's hops through its VNF instances, the tag
that names the next VNF arm, and the rules on every switch that carry it there and back."""

from __future__ import annotations

import ipaddress
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import networkx as nx

from common.contract import probe_ports
from sdn.compile import routing
from sdn.compile.chain_model import (
    BYPASS_IDLE_TIMEOUT,
    EGRESS,
    ETH_TYPE_IPV4,
    ETH_TYPE_VLAN,
    FORWARD,
    FROM_VNF,
    HOST_ONLY,
    INGRESS,
    LINK_ONLY,
    MAX_INSTANCES,
    MULTICAST_BIT,
    PRIO_BYPASS,
    PRIO_CHAIN_TOP,
    PRIO_HEALTH,
    PRIO_PORT,
    PRIO_TAG,
    PRIO_TAG_DROP,
    REVERSE,
    VLAN_PRESENT,
    ChainError,
    Fields,
    Five,
    SettledFlow,
    Spec,
    VnfInstance,
    bypass_cookie,
    five_fields,
    reply_five,
    with_bits,
)
from sdn.model.cookies import (
    CHAIN_HEALTH,
    CHAIN_PORT,
    CHAIN_STEER,
    CHAIN_TAG,
    chain_cookie,
)
from sdn.model.pipeline import (
    TABLE_CHAIN,
    TABLE_FORWARD,
    TABLE_INGRESS,
    TABLE_POLICY,
)
from sdn.model.rules import FlowRule, match
from sdn.model.topology import Snapshot
from sdn.policy.fields import PROTO_NUMBERS
from sdn.policy.schema import Chain, LoadBalancer, Policy


@dataclass(frozen=True)
class _Hop:
    vnf: str
    instances: tuple[VnfInstance, ...]  # usable ones, by instance name
    fail_open: bool
    offload: bool
    lb: LoadBalancer | None


Target = tuple[str, int]  # ("hop", index) | ("dest", 0) | ("drop", 0)


DEST: Target = ("dest", 0)


DROP: Target = ("drop", 0)


@dataclass(frozen=True)
class _Chain:
    index: int
    chain: Chain
    hops: tuple[_Hop, ...]
    views: tuple[tuple[Spec, ...], ...]  # views[k]: the traffic just before hop k
    lb_at: int | None

    @property
    def n(self) -> int:
        return len(self.hops)

    def target(self, direction: int, point: int, skipped: frozenset[int] = frozenset()
               ) -> Target:
        """Where traffic goes from decision point `point`: forward point k is the
        classifier (k = 0) or the return from hop k-1; reverse point k is the reply
        classifier (k = n) or the return from hop k (by its ingress arm)."""
        order = range(point, self.n) if direction == FORWARD else range(point - 1, -1, -1)
        for j in order:
            hop = self.hops[j]
            if j in skipped:
                continue
            if hop.instances:
                return ("hop", j)
            if not hop.fail_open:
                return DROP
        return DEST

    def view(self, direction: int, point: int) -> tuple[Spec, ...]:
        specs = self.views[point]
        return specs if direction == FORWARD else tuple(s.reversed() for s in specs)


def _nat(spec: Spec, lb: LoadBalancer) -> list[Spec]:
    """What `spec` traffic looks like after the load balancer translated it."""
    proto = PROTO_NUMBERS[lb.proto]
    vip = ipaddress.IPv4Address(lb.vip)
    if spec.proto not in (None, proto) or (spec.dst is not None and vip not in spec.dst):
        return []
    if lb.port is not None and spec.dport is not None and not (
            spec.dport[0] <= lb.port <= spec.dport[1]):
        return []
    out = []
    for backend in lb.backends:
        port = lb.backend_port(backend)
        dport = (port, port) if port is not None else spec.dport
        nat = replace(spec, proto=proto, dst=ipaddress.IPv4Network(f"{backend.ip}/32"),
                      dport=dport)
        if nat not in out:
            out.append(nat)
    return out


def _endpoint(policy: Policy, snapshot: Snapshot, value: str | None, path: tuple
              ) -> tuple[ipaddress.IPv4Network | None, str | None]:
    """A match's src/dst: (network, None), or (None, MAC) for a host known only by MAC."""
    if value is None:
        return None, None
    net = policy.resolve_address(value)
    if net is not None:
        return net, None
    for host in snapshot.hosts:
        if host.name == value and host.ips:
            return ipaddress.IPv4Network(f"{host.ips[0]}/32"), None
    declared = policy.hosts.get(value)
    if declared is not None and declared.mac:
        return None, declared.mac
    raise ChainError(path, f"host {value!r} has no known IP or MAC to match on")


def _in_host_mac(policy: Policy, snapshot: Snapshot, name: str, path: tuple) -> str:
    declared = policy.hosts.get(name)
    if declared is not None and declared.mac:
        return declared.mac
    for host in snapshot.hosts:
        if host.name == name or (declared is not None and declared.ip in host.ips):
            return host.mac
    raise ChainError(path, f"in_host {name!r}: the host's MAC is not known yet")


def _chain_spec(policy: Policy, snapshot: Snapshot, i: int, chain: Chain) -> Spec:
    m = chain.match
    path = ("chains", i, "match")
    src, src_mac = _endpoint(policy, snapshot, m.src, (*path, "src"))
    dst, dst_mac = _endpoint(policy, snapshot, m.dst, (*path, "dst"))
    if m.in_host is not None:
        src_mac = _in_host_mac(policy, snapshot, m.in_host, (*path, "in_host"))
    return Spec(m.ip_proto, src, dst, m.src_port, m.dst_port, m.dscp, src_mac, dst_mac)


def build_chain(policy: Policy, snapshot: Snapshot, i: int, chain: Chain,
                 usable: Mapping[str, tuple[VnfInstance, ...]]) -> _Chain:
    hops, lb_at = [], None
    for j, name in enumerate(chain.through):
        vnf = policy.vnfs[name]
        lb = vnf if isinstance(vnf, LoadBalancer) else None
        if lb is not None:
            if lb_at is not None:
                raise ChainError(("chains", i, "through", j),
                                 "a chain can go through one load balancer only")
            lb_at = j
        hops.append(_Hop(name, usable.get(name, ()), vnf.failure_mode == "open",
                         vnf.offload and lb is None, lb))
    views = [(_chain_spec(policy, snapshot, i, chain),)]
    for hop in hops:
        before = views[-1]
        after = list(before)
        if hop.lb is not None:
            after += [s for spec in before for s in _nat(spec, hop.lb) if s not in after]
        views.append(tuple(after))
    return _Chain(i, chain, tuple(hops), tuple(views), lb_at)


def tag_vids(instances: Iterable[VnfInstance]) -> dict[str, int]:
    """Instance key -> its ingress arm's vid (the egress arm's is one more)."""
    keys = sorted({inst.key for inst in instances},
                  key=lambda k: (zlib.crc32(k.encode()) % MAX_INSTANCES, k))
    if len(keys) > MAX_INSTANCES:
        raise ChainError(("vnfs",), f"{len(keys)} VNF instances: the VLAN steering tags "
                         f"can name at most {MAX_INSTANCES}")
    used: set[int] = set()
    vids = {}
    for key in keys:
        slot = zlib.crc32(key.encode()) % MAX_INSTANCES
        while slot in used:
            slot = (slot + 1) % MAX_INSTANCES
        used.add(slot)
        vids[key] = 2 * (slot + 1)
    return vids


class _Paths:
    """Next hop (one shortest path, no ECMP) from any switch toward a switch; cached."""

    def __init__(self, graph: nx.Graph) -> None:
        self.graph = graph
        self._hops: dict[int, dict[int, routing.Hops]] = {}

    def port_toward(self, here: int, target: int) -> int | None:
        if target not in self.graph or here not in self.graph:
            return None
        hops = self._hops.get(target)
        if hops is None:
            hops = self._hops[target] = routing.next_hops(self.graph, target, ecmp=False)
        hop = hops.get(here)
        if hop is None:
            return None
        return self.graph[here][hop.primary[0]]["link"].port_at(here)

    def switches_toward(self, target: int) -> list[int]:
        self.port_toward(target, target)
        return sorted(self._hops.get(target, {}))


class SteeringBuilder:
    def __init__(self, snapshot: Snapshot, vids: Mapping[str, int]) -> None:
        self.snapshot = snapshot
        self.vids = vids
        self.paths = _Paths(snapshot.graph())
        self.rules: dict[int, dict[tuple, FlowRule]] = {d: {} for d in snapshot.switches}

    def add(self, rule: FlowRule) -> None:
        """Equal keys come from overlapping views of one chain and agree; a settled flow
        listed twice keeps its first rule."""
        self.rules[rule.dpid].setdefault(rule.key, rule)

    def steer(self, here: int, inst: VnfInstance, side: int) -> tuple:
        """Actions that take a packet at switch `here` to an arm of `inst`."""
        port = inst.port(side)
        if here == inst.dpid:
            return (("output", port),)
        link_port = self.paths.port_toward(here, inst.dpid)
        if link_port is None:
            return ()
        vid = self.vids[inst.key] + side
        return (("push_vlan", ETH_TYPE_VLAN), ("set_field", "vlan_vid", VLAN_PRESENT | vid),
                ("output", link_port))

    def decide(self, here: int, fields: Fields, priority: int, cookie: int, target: Target,
               chain: _Chain, direction: int, idle_timeout: int = 0) -> None:
        """Rules at `here` sending `fields` traffic to `target`, split over replicas."""
        kind, j = target
        if kind != "hop":
            goto = TABLE_FORWARD if kind == "dest" else None
            self.add(FlowRule(here, TABLE_CHAIN, priority, match(**fields), goto=goto,
                              cookie=cookie, idle_timeout=idle_timeout))
            return
        instances = chain.hops[j].instances
        side = INGRESS if direction == FORWARD else EGRESS
        client = "ipv4_src" if direction == FORWARD else "ipv4_dst"
        bits = math.ceil(math.log2(len(instances)))
        for bucket in range(1 << bits):
            split = with_bits(fields, client, bucket, (1 << bits) - 1)
            if split is None:
                continue
            inst = instances[bucket % len(instances)]
            self.add(FlowRule(here, TABLE_CHAIN, priority, match(**split),
                              self.steer(here, inst, side), cookie=cookie,
                              idle_timeout=idle_timeout))

    # rules independent of chains

    def arm_rules(self, inst: VnfInstance) -> None:
        """Table 0 marks the arm's packets; table 2 drops multicast from it; tagged
        packets for the arm travel to its switch and lose the tag there."""
        cookie = chain_cookie(CHAIN_PORT, inst.key)
        for side in (INGRESS, EGRESS):
            port = inst.port(side)
            self.add(FlowRule(inst.dpid, TABLE_INGRESS, PRIO_PORT, match(in_port=port),
                              goto=TABLE_POLICY, cookie=cookie,
                              write_metadata=(FROM_VNF, FROM_VNF)))
            self.add(FlowRule(inst.dpid, TABLE_CHAIN, PRIO_TAG_DROP,
                              match(in_port=port, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)),
                              cookie=cookie))
            tag = chain_cookie(CHAIN_TAG, f"{inst.key}/{side}")
            vid = match(vlan_vid=VLAN_PRESENT | (self.vids[inst.key] + side),
                        metadata=LINK_ONLY)
            for here in self.paths.switches_toward(inst.dpid):
                self.add(FlowRule(here, TABLE_CHAIN, PRIO_TAG, vid,
                                  (("output", self.paths.port_toward(here, inst.dpid)),),
                                  cookie=tag))
            self.add(FlowRule(inst.dpid, TABLE_CHAIN, PRIO_TAG, vid,
                              (("pop_vlan",), ("output", port)), cookie=tag))

    def health_rules(self, inst: VnfInstance, lb: LoadBalancer) -> None:
        """Answers to the health checks of load balancer `inst` go to its egress arm from
        wherever the backends are: no chain has to cover them (a chain's `src` need not
        include the VIP). Replicas check from disjoint source ports (`probe_ports`), so
        each answer reaches the replica that asked."""
        if lb.health_check is None and lb.proto != "tcp":
            return
        value, mask = probe_ports(inst.replica, lb.replicas)
        probe = {"tcp_dst": (value, mask)} if mask else {}
        cookie = chain_cookie(CHAIN_HEALTH, inst.key)
        for backend in lb.backends:
            port = lb.backend_port(backend)
            if port is None:
                continue
            fields = match(eth_type=ETH_TYPE_IPV4, ip_proto=PROTO_NUMBERS["tcp"],
                           ipv4_src=str(backend.ip), tcp_src=port, ipv4_dst=str(lb.vip),
                           metadata=HOST_ONLY, **probe)
            for dpid in self.snapshot.switches:
                self.add(FlowRule(dpid, TABLE_CHAIN, PRIO_HEALTH, fields,
                                  self.steer(dpid, inst, EGRESS), cookie=cookie))

    def tag_drop(self) -> None:
        cookie = chain_cookie(CHAIN_TAG, "foreign")
        for dpid in self.snapshot.switches:
            self.add(FlowRule(dpid, TABLE_CHAIN, PRIO_TAG_DROP,
                              match(vlan_vid=(VLAN_PRESENT, VLAN_PRESENT)), cookie=cookie))

    # one chain

    def chain_rules(self, chain: _Chain) -> None:
        cookie = chain_cookie(CHAIN_STEER, chain.chain.name)
        directions = (FORWARD, REVERSE) if chain.chain.symmetric else (FORWARD,)
        for direction in directions:
            priority = PRIO_CHAIN_TOP - 2 * chain.index - direction
            start = 0 if direction == FORWARD else chain.n
            target = chain.target(direction, start)
            for spec in chain.view(direction, start):
                for fields in spec.fields():
                    for dpid in self.snapshot.switches:
                        self.decide(dpid, fields | {"metadata": HOST_ONLY}, priority, cookie,
                                    target, chain, direction)
            for j, hop in enumerate(chain.hops):
                # Forward traffic leaves hop j by its egress arm, replies by its ingress arm.
                point = j + 1 if direction == FORWARD else j
                side = EGRESS if direction == FORWARD else INGRESS
                target = chain.target(direction, point)
                for inst in hop.instances:
                    for spec in chain.view(direction, point):
                        for fields in spec.fields():
                            self.decide(inst.dpid, fields | {"in_port": inst.port(side)},
                                        priority, cookie, target, chain, direction)

    # offloaded flows

    def bypass_rules(self, chain: _Chain, pre: Five, post: Five | None,
                     skipped: frozenset[int]) -> None:
        """Exact rules for one settled flow of `chain` wherever skipping `skipped`
        changes its next hop. `pre`/`post`: the flow before / after the load balancer
        (None: not known, then no bypass where it would be needed)."""
        cookie = bypass_cookie(chain.chain.name, pre)
        directions = (FORWARD, REVERSE) if chain.chain.symmetric else (FORWARD,)
        for direction in directions:
            points = range(chain.n + 1) if direction == FORWARD else range(chain.n, -1, -1)
            for point in points:
                target = chain.target(direction, point, skipped)
                if target == chain.target(direction, point):
                    continue
                five = pre if chain.lb_at is None or point <= chain.lb_at else post
                if five is None:
                    continue
                if direction == REVERSE:
                    five = reply_five(five)
                fields = five_fields(five)
                places = self._bypass_places(chain, direction, point, five, skipped)
                for here, where in places:
                    self.decide(here, fields | where, PRIO_BYPASS, cookie, target, chain,
                                direction, BYPASS_IDLE_TIMEOUT)

    def _bypass_places(self, chain: _Chain, direction: int, point: int, five: Five,
                       skipped: frozenset[int]) -> list[tuple[int, Fields]]:
        classifier = 0 if direction == FORWARD else chain.n
        if point == classifier:
            src = five[1]
            dpids = [h.dpid for h in self.snapshot.hosts if src in h.ips] or sorted(
                self.snapshot.switches)
            return [(d, {"metadata": HOST_ONLY}) for d in dpids]
        j = point - 1 if direction == FORWARD else point
        instances = chain.hops[j].instances
        if not instances or j in skipped:
            return []  # the flow never comes back from there
        client = five[1] if direction == FORWARD else five[3]
        bits = math.ceil(math.log2(len(instances)))
        bucket = int(ipaddress.IPv4Address(client)) & ((1 << bits) - 1)
        inst = instances[bucket % len(instances)]
        side = EGRESS if direction == FORWARD else INGRESS
        return [(inst.dpid, {"in_port": inst.port(side)})]


def usable_instances(snapshot: Snapshot, instances: Sequence[VnfInstance]
            ) -> dict[str, tuple[VnfInstance, ...]]:
    """Per VNF, its instances that are alive with both arms up, by instance name."""
    out: dict[str, list[VnfInstance]] = {}
    for inst in sorted(instances, key=lambda x: x.instance):
        ports = snapshot.switches.get(inst.dpid, frozenset())
        if inst.alive and inst.ingress_port in ports and inst.egress_port in ports:
            out.setdefault(inst.vnf, []).append(inst)
    return {name: tuple(found) for name, found in out.items()}


def settled_groups(policy: Policy, chains: Sequence[_Chain],
                    settled: Iterable[SettledFlow]
                    ) -> dict[tuple[int, Five], tuple[set[int], Five | None]]:
    """(chain index, flow as classified) -> (hops it may skip, flow after the LB)."""
    groups: dict[tuple[int, Five], tuple[set[int], Five | None]] = {}
    for flow in settled:
        for chain in chains:
            hop_at = next((j for j, h in enumerate(chain.hops) if h.vnf == flow.vnf), None)
            if hop_at is None or not chain.hops[hop_at].offload:
                continue
            pre, post = _around_lb(chain, hop_at, flow.five)
            first = next((c for c in chains if any(s.contains(pre) for s in c.views[0])), None)
            if first is not chain:
                continue
            skipped, known = groups.setdefault((chain.index, pre), (set(), None))
            groups[(chain.index, pre)] = (skipped | {hop_at}, known or post)
    return groups


def _around_lb(chain: _Chain, hop_at: int, five: Five) -> tuple[Five, Five | None]:
    """A flow seen at hop `hop_at`, before and after the chain's load balancer."""
    if chain.lb_at is None:
        return five, five
    lb = chain.hops[chain.lb_at].lb
    proto, src, sport, dst, dport = five
    if hop_at < chain.lb_at:
        return five, (None if dst == lb.vip else five)
    backend = next((b for b in lb.backends if b.ip == dst
                    and lb.backend_port(b) in (None, dport)), None)
    if backend is None:
        return five, five
    return (proto, src, sport, lb.vip, lb.port if lb.port is not None else dport), five
