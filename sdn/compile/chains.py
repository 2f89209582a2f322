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

from collections.abc import Iterable, Sequence
from dataclasses import replace

from sdn.compile.chain_model import (
    MAX_CHAINS,
    Bypass,
    ChainError,
    Five,
    SettledFlow,
    VnfInstance,
)
from sdn.compile.chain_steering import (
    SteeringBuilder,
    build_chain,
    settled_groups,
    tag_vids,
    usable_instances,
)
from sdn.model.rules import FlowRule
from sdn.model.topology import Snapshot
from sdn.policy.schema import LoadBalancer, Policy

# --------------------------------------------------------------------------- matches


# --------------------------------------------------------------------------- chains


# --------------------------------------------------------------------------- tags


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
    builder = SteeringBuilder(snapshot, tag_vids(placed))
    builder.tag_drop()
    for inst in placed:
        builder.arm_rules(inst)
    usable = usable_instances(snapshot, placed)
    for name, found in usable.items():
        vnf = policy.vnfs.get(name) if policy is not None else None
        if isinstance(vnf, LoadBalancer):
            for inst in found:
                builder.health_rules(inst, vnf)
    chains = [build_chain(policy, snapshot, i, c, usable) for i, c in enumerate(chains_in)]
    for chain in chains:
        builder.chain_rules(chain)
    for (index, pre), (skipped, post) in sorted(
            settled_groups(policy, chains, settled).items(), key=lambda kv: kv[0]):
        builder.bypass_rules(chains[index], pre, post, frozenset(skipped))
    return {dpid: list(rules.values()) for dpid, rules in builder.rules.items()}


def bypasses(policy: Policy | None, snapshot: Snapshot, settled: Iterable[SettledFlow]
             ) -> list[Bypass]:
    """The bypasses `compile_chains` derives from `settled`, grouped as it groups them: what
    a switch's bypass rule (known by its cookie) stands for. A flow whose skipped hop has no
    live instance may have no rule on any switch."""
    settled = tuple(settled)
    if policy is None or not settled:
        return []
    chains = [build_chain(policy, snapshot, i, c, {}) for i, c in enumerate(policy.chains)]
    groups: dict[tuple[int, Five], set[SettledFlow]] = {}
    for flow in settled:
        for key in settled_groups(policy, chains, (flow,)):
            groups.setdefault(key, set()).add(flow)
    return [Bypass(chains[index].chain.name, pre, frozenset(flows))
            for (index, pre), flows in sorted(groups.items(), key=lambda kv: kv[0])]


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
