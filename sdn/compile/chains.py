"""Service chains -> steering rules. Pure: the caller says where each VNF instance is
plugged in and whether it is alive; this module says what every switch should hold.

How a chained packet travels (tables as in `sdn.model.rules`):

- Classifier (table 2, every switch): IPv4 traffic from a host port (metadata
  FROM_LINK clear) that matches a chain's match is sent to the first live hop. Chain list
  order is precedence: chain i gets priority PRIO_CHAIN_TOP - 2i (forward) and one less
  (reverse), so the first matching chain wins as the policy says.
- Steering tag: to reach a VNF arm on another switch the packet gets a VLAN tag naming
  that arm, and every switch on the shortest path forwards the tag; the arm's switch pops
  it and outputs to the arm. The tag names the *target arm* (VNF instance and side), not
  (chain, hop): the VNF gets the packet untagged, so the chain is re-derived from the
  5-tuple when the packet comes back (below) and a chain/hop tag would carry nothing more.
  Naming the arm means tag rules do not depend on chains at all: adding, removing or
  reordering a chain's hops never touches them, or any other chain's rules.
- Return (table 2 at the VNF's switch): what leaves an arm (table 0 marks it FROM_LINK |
  FROM_VNF, so it is never classified again, never learned as a host) is matched against
  the 5-tuples of the chains through that VNF, as they look at that point of the chain,
  and steered to the next live hop, or to normal forwarding (table 3) after the last.
  After a load balancer hop the destination is a backend: the view then adds, per
  backend, the match with dst = backend IP and dst_port = backend port.
- Symmetric chains: the reply 5-tuple (src/dst and ports swapped; after a load balancer
  src = a backend) is classified at whatever switch it enters and walks the hops in
  reverse, entering each VNF by its egress arm and leaving by its ingress arm.
- Replicas: a hop with n live instances is split on the low b = ceil(log2 n) bits of the
  client address (forward ipv4_src, reverse ipv4_dst; NAT rewrites neither), bucket j
  going to instance j mod n. Both directions of a flow, and every flow of one client, thus
  use one instance; with n not a power of two the first instances get more buckets.
- Failure: an instance is usable when alive and both its ports are up. A hop with no
  usable instance is skipped when its VNF is `failure_mode: open`, and the chain's traffic
  is dropped where it would enter it when `closed`.
- Offload: a flow a VNF with `offload: true` declared settled (`SettledFlow`) skips that
  VNF: exact-match rules above the chain rules, at the points where its next hop differs,
  with a CHAIN_BYPASS cookie per flow whose stats are the flow's, and an idle timeout
  (BYPASS_IDLE_TIMEOUT): the switch removes a bypass its flow no longer uses and tells the
  controller, which then stops asking for it (sdn.controller.offload). Never for a load
  balancer (its
  NAT must keep running).
- Safety: a tagged packet is only honoured when it came over an inter-switch link; any
  other 802.1Q frame is dropped in table 2 (a host could otherwise forge a tag and reach a
  VNF arm past the earlier hops). Multicast from a VNF arm is dropped (a transparent VNF
  would echo floods back). Traffic that matches no chain never reaches a VNF arm.

Tag encoding: vid = 2 * slot + side (side 0 ingress arm, 1 egress arm), slot in
1..MAX_INSTANCES derived from a hash of "vnf/instance" (collisions move the later key,
in sorted order, to the next free slot), so vids are 2..4093 and stay put while the
instance does. Limits: MAX_INSTANCES (2046) instances, MAX_CHAINS chains, one load
balancer per chain; beyond them `ChainError`.
"""

from __future__ import annotations

import ipaddress
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import networkx as nx

from common.contract import probe_ports
from sdn.compile import routing
from sdn.compile.classes import port_masks
from sdn.model.cookies import (
    CHAIN_BYPASS,
    CHAIN_HEALTH,
    CHAIN_PORT,
    CHAIN_STEER,
    CHAIN_TAG,
    chain_cookie,
)
from sdn.model.pipeline import (
    METADATA_FROM_LINK,
    METADATA_FROM_VNF,
    TABLE_CHAIN,
    TABLE_FORWARD,
    TABLE_INGRESS,
    TABLE_POLICY,
)
from sdn.model.rules import FlowRule, match
from sdn.model.topology import Snapshot
from sdn.policy.schema import PROTO_NUMBERS, Chain, LoadBalancer, Policy

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_VLAN = 0x8100
VLAN_PRESENT = 0x1000  # OFPVID_PRESENT
MULTICAST_BIT = "01:00:00:00:00:00"
MAX_INSTANCES = 2046
MAX_CHAINS = 10000
L4_PROTOS = {PROTO_NUMBERS["tcp"]: "tcp", PROTO_NUMBERS["udp"]: "udp"}
ALL_PORTS = (0, 65535)

PRIO_PORT = 150  # table 0, above known hosts (100) and the learning miss, below ARP (900)
PRIO_TAG = 60000
PRIO_TAG_DROP = 59000
PRIO_BYPASS = 50000
# A load balancer's health-check answers (backend:port -> VIP:probe port) are its own
# traffic, whatever chain would otherwise classify them.
PRIO_HEALTH = 45000
# Seconds a bypass outlives the last packet of its flow in either direction: the switch then
# removes it (and says so), and the flow's next packet goes through the chain again.
BYPASS_IDLE_TIMEOUT = 10
PRIO_CHAIN_TOP = 40000

FROM_VNF = METADATA_FROM_LINK | METADATA_FROM_VNF
HOST_ONLY = (0, METADATA_FROM_LINK)  # neither a link nor a VNF arm
LINK_ONLY = (METADATA_FROM_LINK, FROM_VNF)  # a link, not a VNF arm

INGRESS, EGRESS = 0, 1
FORWARD, REVERSE = 0, 1


class ChainError(ValueError):
    """A policy the steering cannot express; `path` names the policy field (as in
    `sdn.policy.schema.Problem`) so the caller can report it like a validation problem."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{'.'.join(map(str, path))}: {message}")


@dataclass(frozen=True)
class VnfInstance:
    """One running copy of a policy VNF, as the runtime attached it."""

    vnf: str  # policy VNF name
    instance: str  # "fw", or "fw-1" ... for replicas
    dpid: int  # the switch both arms are plugged into
    ingress_port: int  # ofport of the arm facing the chain's source
    egress_port: int  # ofport of the arm facing the destination
    alive: bool = True
    replica: int = 0  # which of its VNF's replicas

    @property
    def key(self) -> str:
        return f"{self.vnf}/{self.instance}"

    def port(self, side: int) -> int:
        return self.ingress_port if side == INGRESS else self.egress_port


@dataclass(frozen=True)
class SettledFlow:
    """A flow VNF `vnf` declared settled, as that VNF saw its first packet
    (`nfv` drain_settled: (proto, src, sport, dst, dport))."""

    vnf: str
    proto: int
    src: str
    sport: int
    dst: str
    dport: int

    @property
    def five(self) -> Five:
        return (self.proto, self.src, self.sport, self.dst, self.dport)


Five = tuple[int, str, int, str, int]
Fields = dict[str, Any]


# --------------------------------------------------------------------------- matches


@dataclass(frozen=True)
class Spec:
    """A set of IPv4 packets, in the terms of a chain match."""

    proto: int | None = None
    src: ipaddress.IPv4Network | None = None
    dst: ipaddress.IPv4Network | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    dscp: int | None = None
    eth_src: str | None = None
    eth_dst: str | None = None

    def reversed(self) -> Spec:
        """The replies: addresses and ports swapped (a reply's DSCP is its own)."""
        return Spec(self.proto, self.dst, self.src, self.dport, self.sport, None,
                    self.eth_dst, self.eth_src)

    def contains(self, five: Five) -> bool:
        """Whether a flow can be in this set (MAC and DSCP conditions are not checked)."""
        proto, src, sport, dst, dport = five
        if self.proto is not None and proto != self.proto:
            return False
        for net, addr in ((self.src, src), (self.dst, dst)):
            if net is not None and ipaddress.IPv4Address(addr) not in net:
                return False
        return all(rng is None or rng[0] <= port <= rng[1]
                   for rng, port in ((self.sport, sport), (self.dport, dport)))

    def fields(self) -> list[Fields]:
        """OpenFlow matches whose union is this set (port ranges become value/mask pairs)."""
        base: Fields = {"eth_type": ETH_TYPE_IPV4}
        if self.proto is not None:
            base["ip_proto"] = self.proto
        if self.dscp is not None:
            base["ip_dscp"] = self.dscp
        for name, value in (("eth_src", self.eth_src), ("eth_dst", self.eth_dst)):
            if value is not None:
                base[name] = value
        for name, net in (("ipv4_src", self.src), ("ipv4_dst", self.dst)):
            if net is not None and net.prefixlen:
                base[name] = _ipv4_field(int(net.network_address), int(net.netmask))
        l4 = L4_PROTOS.get(self.proto or -1)
        if l4 is None:
            return [base]
        ports = [_port_options(f"{l4}_{side}", rng)
                 for side, rng in (("src", self.sport), ("dst", self.dport))]
        return [base | s | d for s, d in product(*ports)]


def _port_options(name: str, rng: tuple[int, int] | None) -> list[Fields]:
    if rng is None or (rng[0] <= 1 and rng[1] == ALL_PORTS[1]):
        return [{}]
    return [{name: value if mask == 0xFFFF else (value, mask)}
            for value, mask in port_masks(*rng)]


def _ipv4_field(value: int, mask: int) -> Any:
    """An address match as Open vSwitch reads it back: exact when the mask is full."""
    addr = str(ipaddress.IPv4Address(value & mask))
    return addr if mask == 0xFFFFFFFF else (addr, str(ipaddress.IPv4Address(mask)))


def _address_bits(fields: Fields, name: str) -> tuple[int, int]:
    held = fields.get(name)
    if held is None:
        return 0, 0
    if isinstance(held, tuple):
        return int(ipaddress.IPv4Address(held[0])), int(ipaddress.IPv4Address(held[1]))
    return int(ipaddress.IPv4Address(held)), 0xFFFFFFFF


def _with_bits(fields: Fields, name: str, value: int, mask: int) -> Fields | None:
    """`fields` further restricted to addresses with `value` under `mask` in `name`;
    None when no address can satisfy both."""
    if not mask:
        return fields
    held_value, held_mask = _address_bits(fields, name)
    if (held_value ^ value) & held_mask & mask:
        return None
    both = held_mask | mask
    return fields | {name: _ipv4_field((held_value & held_mask) | (value & mask), both)}


def _five_fields(five: Five) -> Fields:
    proto, src, sport, dst, dport = five
    fields: Fields = {"eth_type": ETH_TYPE_IPV4, "ip_proto": proto,
                      "ipv4_src": src, "ipv4_dst": dst}
    l4 = L4_PROTOS.get(proto)
    if l4 is not None:
        fields |= {f"{l4}_src": sport, f"{l4}_dst": dport}
    return fields


def _reply(five: Five) -> Five:
    proto, src, sport, dst, dport = five
    return (proto, dst, dport, src, sport)


# --------------------------------------------------------------------------- chains


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


def _build_chain(policy: Policy, snapshot: Snapshot, i: int, chain: Chain,
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


# --------------------------------------------------------------------------- tags


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


class _Builder:
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
            split = _with_bits(fields, client, bucket, (1 << bits) - 1)
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
                    five = _reply(five)
                fields = _five_fields(five)
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


def _usable(snapshot: Snapshot, instances: Sequence[VnfInstance]
            ) -> dict[str, tuple[VnfInstance, ...]]:
    """Per VNF, its instances that are alive with both arms up, by instance name."""
    out: dict[str, list[VnfInstance]] = {}
    for inst in sorted(instances, key=lambda x: x.instance):
        ports = snapshot.switches.get(inst.dpid, frozenset())
        if inst.alive and inst.ingress_port in ports and inst.egress_port in ports:
            out.setdefault(inst.vnf, []).append(inst)
    return {name: tuple(found) for name, found in out.items()}


def _settled_groups(policy: Policy, chains: Sequence[_Chain],
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


# --------------------------------------------------------------------------- entry points


def compile_chains(policy: Policy | None, snapshot: Snapshot,
                   instances: Sequence[VnfInstance],
                   settled: Iterable[SettledFlow] = ()) -> dict[int, list[FlowRule]]:
    """The chain rules of every switch in `snapshot` (tables 0 and 2), to be added to what
    `sdn.compile.routes` compiles. `snapshot` is the full one, VNF ports included, with the
    policy's link weights; `instances` every VNF instance the runtime has attached (dead
    ones included, `alive=False`); `settled` the flows offloading VNFs declared settled
    and still active. Raises `ChainError` for what the tags cannot express."""
    chains_in = policy.chains if policy is not None else ()
    if not chains_in and not instances:
        return {dpid: [] for dpid in snapshot.switches}
    if len(chains_in) > MAX_CHAINS:
        raise ChainError(("chains",), f"{len(chains_in)} chains: at most {MAX_CHAINS}")
    placed = [inst for inst in instances if inst.dpid in snapshot.switches]
    builder = _Builder(snapshot, tag_vids(placed))
    builder.tag_drop()
    for inst in placed:
        builder.arm_rules(inst)
    usable = _usable(snapshot, placed)
    for name, found in usable.items():
        vnf = policy.vnfs.get(name) if policy is not None else None
        if isinstance(vnf, LoadBalancer):
            for inst in found:
                builder.health_rules(inst, vnf)
    chains = [_build_chain(policy, snapshot, i, c, usable) for i, c in enumerate(chains_in)]
    for chain in chains:
        builder.chain_rules(chain)
    for (index, pre), (skipped, post) in sorted(
            _settled_groups(policy, chains, settled).items(), key=lambda kv: kv[0]):
        builder.bypass_rules(chains[index], pre, post, frozenset(skipped))
    return {dpid: list(rules.values()) for dpid, rules in builder.rules.items()}


@dataclass(frozen=True)
class Bypass:
    """The bypass of one offloaded flow: every rule of it carries `cookie`."""

    chain: str
    flow: Five  # as the chain's classifier sees it (before any load balancer)
    settled: frozenset[SettledFlow]  # the reports it comes from (one per settling VNF)

    @property
    def cookie(self) -> int:
        return bypass_cookie(self.chain, self.flow)


def bypasses(policy: Policy | None, snapshot: Snapshot, settled: Iterable[SettledFlow]
             ) -> list[Bypass]:
    """The bypasses `compile_chains` derives from `settled`, grouped as it groups them: what
    a switch's bypass rule (known by its cookie) stands for. A flow whose skipped hop has no
    live instance may have no rule on any switch."""
    settled = tuple(settled)
    if policy is None or not settled:
        return []
    chains = [_build_chain(policy, snapshot, i, c, {}) for i, c in enumerate(policy.chains)]
    groups: dict[tuple[int, Five], set[SettledFlow]] = {}
    for flow in settled:
        for key in _settled_groups(policy, chains, (flow,)):
            groups.setdefault(key, set()).add(flow)
    return [Bypass(chains[index].chain.name, pre, frozenset(flows))
            for (index, pre), flows in sorted(groups.items(), key=lambda kv: kv[0])]


def bypass_cookie(chain: str, flow: Five) -> int:
    """The cookie of every bypass rule of one settled flow of `chain`, `flow` as the
    classifier saw it (before any load balancer): read the flow's counts with it."""
    return chain_cookie(CHAIN_BYPASS, f"{chain}|{flow}")


def vnf_ports(instances: Iterable[VnfInstance]) -> dict[int, frozenset[int]]:
    """dpid -> the ofports VNF arms use there."""
    out: dict[int, set[int]] = {}
    for inst in instances:
        out.setdefault(inst.dpid, set()).update((inst.ingress_port, inst.egress_port))
    return {dpid: frozenset(ports) for dpid, ports in out.items()}


def without_vnf_ports(snapshot: Snapshot, instances: Iterable[VnfInstance]) -> Snapshot:
    """The snapshot the routing compiler should see: VNF arms are not host ports, so
    floods must not reach them (a transparent VNF would send a flood back in)."""
    arms = vnf_ports(instances)
    if not arms:
        return snapshot
    switches = {d: ports - arms.get(d, frozenset()) for d, ports in snapshot.switches.items()}
    hosts = tuple(h for h in snapshot.hosts if h.port not in arms.get(h.dpid, frozenset()))
    return replace(snapshot, switches=switches, hosts=hosts)
