"""Egress queues for traffic classes: an HTB tree per switch port, planned here (pure) and
applied by the netlink helper process `sdn.controller.tc_helper`.

The class rules (`sdn.compile.classes`) mark each class's packets with its priority's DSCP at the
ingress edge. Every switch port then sorts what it sends by that mark into one HTB class
per priority level: the level's `rate` is the sum of its classes' `min_rate` (what they
are guaranteed), its `ceil` the link's capacity (what it may borrow), and higher levels
borrow first. Unmarked traffic (ARP, LLDP, anything no class selects) has a class of its
own with a small guarantee, so discovery survives a saturated link.

On Open vSwitch's userspace datapath `set_queue` does not pick an HTB class, so the HTB
filters classify by the DSCP in the IP header (u32 on the TOS byte), which works on the
kernel datapath and on hardware alike.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass

from sdn.compile.desired import DEFAULT_CAPACITY_BPS
from sdn.model.topology import Snapshot
from sdn.policy.schema import PRIORITY_DSCP, Policy

HANDLE_MAJOR = 0x5D  # our root qdisc is 5d: (Mininet's TCLink uses 5:, tc's examples 1:)
ROOT_MINOR = 0x1
LEVELS = ("high", "medium", "low")  # served in this order
UNMARKED_MINOR = 0x40
MIN_SHARE = 0.01  # guarantee of a level without min_rates, and of unmarked traffic
MIN_RATE_BPS = 100_000


@dataclass(frozen=True)
class HtbClass:
    minor: int  # class 5d:<minor>
    rate: int  # bit/s guaranteed
    ceil: int  # bit/s at most
    prio: int  # 0 borrows first
    dscp: tuple[int, ...]  # DSCP values filtered into it; () for the default class


@dataclass(frozen=True)
class PortQueues:
    capacity: int  # bit/s
    classes: tuple[HtbClass, ...]
    default: int = UNMARKED_MINOR


@dataclass(frozen=True)
class QueuePlan:
    """What every port (by netdev name) should have; `remove` lists ports whose HTB tree
    of ours goes (the policy has no classes)."""

    ports: dict[str, PortQueues]
    remove: tuple[str, ...] = ()

    def changes_since(self, applied: QueuePlan) -> QueuePlan:
        """Only what `applied` does not already hold: ports that are new or whose queues
        changed, removals not yet done (a change at one port of 600 touches one)."""
        return QueuePlan({name: q for name, q in self.ports.items()
                          if applied.ports.get(name) != q},
                         tuple(name for name in self.remove if name not in applied.remove))

    def without(self, names: Collection[str]) -> QueuePlan:
        """This plan less `names` (ports that were not there to apply to)."""
        return QueuePlan({name: q for name, q in self.ports.items() if name not in names},
                         tuple(name for name in self.remove if name not in names))

    def __bool__(self) -> bool:
        return bool(self.ports or self.remove)

    def to_json(self) -> dict:
        return {"ports": {name: asdict(q) for name, q in sorted(self.ports.items())},
                "remove": sorted(self.remove)}

    @staticmethod
    def from_json(data: Mapping) -> QueuePlan:
        ports = {
            name: PortQueues(q["capacity"],
                             tuple(HtbClass(**{**c, "dscp": tuple(c["dscp"])})
                                   for c in q["classes"]),
                             q["default"])
            for name, q in data["ports"].items()
        }
        return QueuePlan(ports, tuple(data["remove"]))


def port_queues(policy: Policy, capacity: int) -> PortQueues:
    """The HTB classes of one port of `capacity` bit/s under the policy's classes.

    Guarantees that add up to more than the link are scaled down to fit: HTB would
    otherwise promise more than the wire carries."""
    floor = max(MIN_RATE_BPS, round(capacity * MIN_SHARE))
    wanted = {level: sum(tc.min_rate or 0 for tc in policy.classes if tc.priority == level)
              for level in LEVELS}
    rates = {level: wanted[level] or floor for level in LEVELS}
    rates["unmarked"] = floor
    total = sum(rates.values())
    scale = min(1.0, capacity / total)
    classes = [
        HtbClass(0x10 * (i + 1), _bits(rates[level] * scale), capacity, i,
                 (PRIORITY_DSCP[level],))
        for i, level in enumerate(LEVELS)
    ]
    classes.append(HtbClass(UNMARKED_MINOR, _bits(rates["unmarked"] * scale), capacity,
                            len(LEVELS), ()))
    return PortQueues(capacity, tuple(classes))


def _bits(rate: float) -> int:
    """A rate in whole bytes per second (what the kernel keeps), as bit/s."""
    return max(8, int(rate) // 8 * 8)


def plan_queues(policy: Policy | None, ports: Mapping[str, int]) -> QueuePlan:
    """The queues of `ports` ({netdev name: capacity in bit/s}) under the policy."""
    if policy is None or not policy.classes:
        return QueuePlan({}, tuple(sorted(ports)))
    return QueuePlan({name: port_queues(policy, cap) for name, cap in sorted(ports.items())})


def port_capacities(policy: Policy | None, snapshot: Snapshot,
                    names: Mapping[tuple[int, int], str]) -> dict[str, int]:
    """Capacity of each named switch port ({(dpid, port): netdev name}): the policy's
    `topology.links[].capacity` for an inter-switch link that has one, else 1 Gbit/s."""
    configured: dict[frozenset[int], int] = {}
    if policy is not None:
        for link in policy.topology.links:
            a, b = (policy.dpid_of(n) for n in link.between)
            if a is not None and b is not None and link.capacity:
                configured[frozenset((a, b))] = link.capacity
    at: dict[tuple[int, int], int] = {}
    for lk in snapshot.links:
        capacity = configured.get(frozenset((lk.a, lk.b)))
        if capacity:
            at[(lk.a, lk.a_port)] = at[(lk.b, lk.b_port)] = capacity
    return {name: at.get(where, DEFAULT_CAPACITY_BPS) for where, name in names.items()}


