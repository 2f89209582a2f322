"""The policy schema (v1) and its validation.

An operator's mistake must come back as ``FILE:LINE:COL: FIELD: MESSAGE`` so they can fix
it without guessing, and all mistakes at once so one apply is enough to see them. So the
YAML is composed into a node tree by hand (keeping each node's line and catching duplicate
keys that PyYAML would silently overwrite), validated by pydantic models (types, units,
names), then checked for meaning (references, overlaps, impossible combinations). Every
problem carries a field path such as ``vnfs.fw.rules[2].dst_port`` that is mapped back to
the line of that field. The module is pure: no network or file I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from common.contract import MAGLEV_DEFAULT_TABLE_SIZE, vip_mac
from sdn.policy.canonical import canonical_json, object_id, policy_objects, sorted_deep
from sdn.policy.fields import (
    PROTO_NUMBERS,
    Address,
    Dpid,
    Duration,
    Name,
    Port,
    PortRange,
    Proto,
    Rate,
    Size,
    UnicastIPv4,
    UnicastMac,
    check_version,
    parse_backend,
)

DEFAULT_SWITCH_NAME = re.compile(r"s([1-9][0-9]*)")
PRIORITY_DSCP: dict[str, int] = {"high": 46, "medium": 26, "low": 10}
MAX_TABLE_SIZE = 1 << 24
MIN_SLOTS_PER_BACKEND = 10

Resolver = Callable[[str], "ipaddress.IPv4Network | None"]


# --------------------------------------------------------------------------- problems


# --------------------------------------------------------------------------- field types


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- models


class Link(_Model):
    """Attributes of the link between two switches (links themselves are discovered)."""

    between: tuple[Name, Name]
    weight: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] | None = None
    capacity: Rate | None = None
    latency: Duration | None = None


class Topology(_Model):
    switches: dict[Name, Dpid] = {}
    links: tuple[Link, ...] = ()

    def dpid_of(self, name: str) -> int | None:
        """The dpid a switch name stands for: declared here, else Mininet's ``s<N>``."""
        if name in self.switches:
            return self.switches[name]
        m = DEFAULT_SWITCH_NAME.fullmatch(name)
        return int(m.group(1)) if m else None


class Host(_Model):
    mac: UnicastMac | None = None
    ip: UnicastIPv4 | None = None

    @model_validator(mode="after")
    def _needs_an_address(self) -> Host:
        if self.mac is None and self.ip is None:
            raise ValueError("a host needs at least one of mac, ip")
        return self


class Routing(_Model):
    metric: Literal["hops", "latency", "capacity"] = "hops"
    ecmp: StrictBool = True
    protection: Literal["fast-failover", "none"] = "fast-failover"


class FiveTuple(_Model):
    """The L3/L4 fields that classes, chains and firewall rules all match on."""

    proto: Proto = None
    src: Address | None = None
    dst: Address | None = None
    src_port: PortRange | None = None
    dst_port: PortRange | None = None

    @property
    def ip_proto(self) -> int | None:
        """The IP protocol number (OpenFlow ``ip_proto``), ``None`` for any."""
        return PROTO_NUMBERS.get(self.proto, self.proto)  # type: ignore[arg-type]


class Match(FiveTuple):
    """A traffic selector; every field is optional and an empty match selects everything."""

    dscp: Annotated[StrictInt, Field(ge=0, le=63)] | None = None
    in_host: Name | None = None

    def covers(self, other: Match, resolve: Resolver) -> bool:
        """Whether every packet ``other`` selects is also selected by ``self``.

        ``resolve`` turns host names into networks; unresolvable names only cover
        themselves. Used to find classes and chains that can never match.
        """
        if self.proto is not None and self.proto != other.proto:
            return False
        for mine, theirs in ((self.src, other.src), (self.dst, other.dst)):
            if mine is None:
                continue
            if theirs is None:
                return False
            a, b = _network(mine, resolve), _network(theirs, resolve)
            if not (b.subnet_of(a) if a is not None and b is not None else mine == theirs):
                return False
        for mine_p, theirs_p in ((self.src_port, other.src_port), (self.dst_port, other.dst_port)):
            if mine_p is None:
                continue
            if theirs_p is None or not (mine_p[0] <= theirs_p[0] and theirs_p[1] <= mine_p[1]):
                return False
        return all(
            mine is None or mine == theirs
            for mine, theirs in ((self.dscp, other.dscp), (self.in_host, other.in_host))
        )


def _network(address: str, resolve: Resolver) -> ipaddress.IPv4Network | None:
    return ipaddress.IPv4Network(address) if "/" in address else resolve(address)


class TrafficClass(_Model):
    name: Name
    match: Match = Match()
    priority: Literal["high", "medium", "low"] = "medium"
    min_rate: Rate | None = None
    max_rate: Rate | None = None

    @property
    def dscp_mark(self) -> int:
        """The DSCP value packets of this class are marked with (EF / AF31 / AF11)."""
        return PRIORITY_DSCP[self.priority]


class FirewallRule(FiveTuple):
    action: Literal["allow", "drop", "reject"]
    icmp_type: Annotated[StrictInt, Field(ge=0, le=255)] | None = None


class _VnfBase(_Model):
    switch: Name
    replicas: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    failure_mode: Literal["open", "closed"] = "closed"
    cpu: Annotated[StrictFloat, Field(gt=0)] | None = None
    memory: Size | None = None
    offload: StrictBool = False


class Firewall(_VnfBase):
    type: Literal["firewall"]
    default: Literal["allow", "drop"] = "drop"
    rules: tuple[FirewallRule, ...] = ()
    new_conn_rate: Annotated[StrictInt, Field(ge=1)] | None = None


class Backend(_Model):
    ip: UnicastIPv4
    port: Port | None = None
    weight: Annotated[StrictInt, Field(ge=0)] = 1


class HealthCheck(_Model):
    interval: Duration = 1.0
    timeout: Duration = 1.0
    fall: Annotated[StrictInt, Field(ge=1)] = 3
    rise: Annotated[StrictInt, Field(ge=1)] = 2


class LoadBalancer(_VnfBase):
    type: Literal["loadbalancer"]
    vip: UnicastIPv4
    vip_mac: UnicastMac | None = None
    port: Port | None = None
    proto: Literal["tcp", "udp"] = "tcp"
    backends: Annotated[
        tuple[Annotated[Backend, BeforeValidator(parse_backend)], ...], Field(min_length=1)
    ]
    health_check: HealthCheck | None = None
    table_size: Annotated[StrictInt, Field(ge=2, le=MAX_TABLE_SIZE)] = MAGLEV_DEFAULT_TABLE_SIZE

    def mac_for(self, name: str) -> str:
        """The VIP's MAC: as configured, else derived from the VNF's name."""
        return self.vip_mac or vip_mac(name)

    def backend_port(self, backend: Backend) -> int | None:
        """Where a backend listens: its own port, else the VIP port (None = same as client's)."""
        return backend.port if backend.port is not None else self.port


class Analyzer(_VnfBase):
    type: Literal["analyzer"]
    idle_timeout: Duration = 15.0
    active_timeout: Duration = 60.0


Vnf = Annotated[Firewall | LoadBalancer | Analyzer, Field(discriminator="type")]


class Chain(_Model):
    name: Name
    match: Match = Match()
    through: Annotated[tuple[Name, ...], Field(min_length=1)]
    symmetric: StrictBool = True


class Policy(_Model):
    """A validated policy. Build it with :func:`load_policy`, not directly."""

    version: Annotated[int, BeforeValidator(check_version)]
    topology: Topology = Topology()
    hosts: dict[Name, Host] = {}
    routing: Routing = Routing()
    classes: tuple[TrafficClass, ...] = ()
    vnfs: dict[Name, Vnf] = {}
    chains: tuple[Chain, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `vnfs:` with all its entries commented out is YAML null: read it as empty.
        if isinstance(data, dict):
            return {k: v for k, v in data.items()
                    if v is not None or k == "version" or k not in cls.model_fields}
        return data

    def dpid_of(self, switch: str) -> int | None:
        """The dpid of a switch name (topology.switches, else ``s<N>``)."""
        return self.topology.dpid_of(switch)

    def resolve_address(self, value: str) -> ipaddress.IPv4Network | None:
        """A match's ``src``/``dst`` as a network; a host name via ``hosts``, else None."""
        if "/" in value:
            return ipaddress.IPv4Network(value)
        host = self.hosts.get(value)
        return ipaddress.IPv4Network(f"{host.ip}/32") if host and host.ip else None

    def virtual_ips(self) -> dict[str, str]:
        """Load balancers' virtual IPs -> the MAC ARP answers with for each."""
        return {str(vnf.vip): vnf.mac_for(name) for name, vnf in self.vnfs.items()
                if isinstance(vnf, LoadBalancer)}

    def canonical(self) -> dict[str, Any]:
        """Everything, defaults included, with sorted keys: equal policies, equal dicts."""
        return sorted_deep(self.model_dump(mode="json"))

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: tells whether two policies differ at all."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def objects(self) -> dict[str, Any]:
        """Canonical form of each named object (see :func:`policy_objects`)."""
        return policy_objects(self.canonical())

    def object_ids(self) -> dict[str, int]:
        """Object key -> stable 64-bit id, for OpenFlow cookies (unchanged object, same id)."""
        return {key: object_id(key, obj) for key, obj in self.objects().items()}
