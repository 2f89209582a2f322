"""The values chain compilation works with: VNF instances, settled flows, the tags and
priorities on the switches, and `Spec`, a chain's match as OpenFlow fields, reversible for
replies. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from itertools import product
from typing import Any

from sdn.compile.classes import port_masks
from sdn.model.cookies import (
    CHAIN_BYPASS,
    chain_cookie,
)
from sdn.model.pipeline import (
    METADATA_FROM_LINK,
    METADATA_FROM_VNF,
)
from sdn.policy.fields import PROTO_NUMBERS

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


def with_bits(fields: Fields, name: str, value: int, mask: int) -> Fields | None:
    """`fields` further restricted to addresses with `value` under `mask` in `name`;
    None when no address can satisfy both."""
    if not mask:
        return fields
    held_value, held_mask = _address_bits(fields, name)
    if (held_value ^ value) & held_mask & mask:
        return None
    both = held_mask | mask
    return fields | {name: _ipv4_field((held_value & held_mask) | (value & mask), both)}


def five_fields(five: Five) -> Fields:
    proto, src, sport, dst, dport = five
    fields: Fields = {"eth_type": ETH_TYPE_IPV4, "ip_proto": proto,
                      "ipv4_src": src, "ipv4_dst": dst}
    l4 = L4_PROTOS.get(proto)
    if l4 is not None:
        fields |= {f"{l4}_src": sport, f"{l4}_dst": dport}
    return fields


def reply_five(five: Five) -> Five:
    proto, src, sport, dst, dport = five
    return (proto, dst, dport, src, sport)


@dataclass(frozen=True)
class Bypass:
    """The bypass of one offloaded flow: every rule of it carries `cookie`."""

    chain: str
    flow: Five  # as the chain's classifier sees it (before any load balancer)
    settled: frozenset[SettledFlow]  # the reports it comes from (one per settling VNF)

    @property
    def cookie(self) -> int:
        return bypass_cookie(self.chain, self.flow)


def bypass_cookie(chain: str, flow: Five) -> int:
    """The cookie of every bypass rule of one settled flow of `chain`, `flow` as the
    classifier saw it (before any load balancer): read the flow's counts with it."""
    return chain_cookie(CHAIN_BYPASS, f"{chain}|{flow}")
