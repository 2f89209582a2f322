"""What the controller and the network functions must agree on, in one place.

The controller compiles rules that only work if a VNF behaves as they assume (which source
ports a load-balancer replica probes from, which MAC answers for a VIP, which table sizes
Maglev accepts); the VNF implements the same assumption. Both import it from here, so
neither half imports the other.
"""

from __future__ import annotations

import hashlib

# Keys of a policy's VNF entry that say where and how a VNF runs, not what it does: the
# controller strips them from the function's config, `sdnctl vnf run` likewise.
PLACEMENT_KEYS = frozenset(("type", "switch", "replicas", "failure_mode", "cpu", "memory"))

# The network functions a VNF host can run (the policy's `type`, the worker's `--kind`).
VNF_KINDS = ("forward", "firewall", "loadbalancer", "analyzer")

# Maglev's lookup table: the policy accepts prime sizes, the load balancer builds them.
MAGLEV_DEFAULT_TABLE_SIZE = 65537


def is_prime(n: int) -> bool:
    """Trial division; table sizes are small enough that this is instant."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def probe_ports(replica: int, replicas: int) -> tuple[int, int]:
    """(value, mask): the health-check source ports of replica `replica` of `replicas` are
    the ports whose low bits under mask equal value, so the switches can steer each answer
    back to the replica that asked."""
    return replica, (1 << (replicas - 1).bit_length()) - 1


def vip_mac(vnf_name: str) -> str:
    """A stable locally administered unicast MAC for a load balancer's VIP when the policy
    names none: the switches answer ARP with it and the VNF owns it."""
    digest = hashlib.blake2b(f"vip:{vnf_name}".encode(), digest_size=5).digest()
    return ":".join(f"{b:02x}" for b in b"\x02" + digest)

# Where the controller and the host agents meet in etcd (a cluster): the leader writes
# `ASSIGNMENTS/<host>/<instance>` (a VNF spec); the agent on <host> publishes
# `AGENTS/<host>` (its bridges) and `VNF_STATUS/<instance>`, both bound to its lease.
AGENTS_PREFIX = "/sdn/agents/"
ASSIGNMENTS_PREFIX = "/sdn/assignments/"
VNF_STATUS_PREFIX = "/sdn/vnfs/"
