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

import difflib
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from common.contract import MAGLEV_DEFAULT_TABLE_SIZE, is_prime, vip_mac
from common.units import format_port_range, parse_duration, parse_port_range, parse_rate, parse_size

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
DEFAULT_SWITCH_NAME = re.compile(r"s([1-9][0-9]*)")
PROTO_NUMBERS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17}
PRIORITY_DSCP: dict[str, int] = {"high": 46, "medium": 26, "low": 10}
MAX_TABLE_SIZE = 1 << 24
MIN_SLOTS_PER_BACKEND = 10
MAX_YAML_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"

Path = tuple[str | int, ...]
Resolver = Callable[[str], "ipaddress.IPv4Network | None"]


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One mistake in a policy, located precisely enough for an editor to jump to it."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyError(ValueError):
    """A policy was rejected; ``problems`` lists every mistake found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: Path) -> str:
    """``('vnfs', 'fw', 'rules', 2, 'dst_port')`` -> ``'vnfs.fw.rules[2].dst_port'``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- field types


def _name(value: object) -> object:
    if isinstance(value, str) and not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return value


def _proto(value: object) -> object:
    """Normalise protocols: names stay names (``6`` -> ``'tcp'``), ``'any'`` -> ``None``."""
    if value is None or value == "any":
        return None
    if isinstance(value, str) and value.lower() in PROTO_NUMBERS:
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        names = {n: p for p, n in PROTO_NUMBERS.items()}
        return names.get(value, value)
    raise ValueError(f"invalid proto {value!r}: use tcp, udp, icmp, any or a number 0-255")


def _address(value: object) -> object:
    """A CIDR or bare IPv4 address (normalised to ``a.b.c.d/len``), or a host name."""
    if not isinstance(value, str):
        raise ValueError(f"invalid address {value!r}: use a CIDR, an IPv4 address or a host name")
    if NAME_PATTERN.fullmatch(value):
        return value
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"invalid address {value!r}: not a CIDR, an IPv4 address or a host name"
        ) from None
    if net.version != 4:
        raise ValueError(f"invalid address {value!r}: only IPv4 is supported")
    if str(net.network_address) != value.split("/")[0]:
        raise ValueError(f"invalid CIDR {value!r}: host bits are set (did you mean {net}?)")
    return str(net)


def _ipv4(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"invalid IPv4 address {value!r}: write it as a string like 10.0.0.1")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"invalid IPv4 address {value!r}") from None


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _mac(value: object) -> object:
    if not isinstance(value, str):
        # Unquoted 10:00:00:00:00:01 is a YAML 1.1 base-60 integer.
        raise ValueError(
            f"invalid MAC address: YAML read it as {value!r}; quote it, like '00:00:00:00:00:01'"
        )
    if not _MAC.fullmatch(value.lower()):
        raise ValueError(
            f"invalid MAC address {value!r}: expected 6 hex pairs, like 02:00:00:00:00:01"
        )
    return value.lower()


def _single_port(value: object) -> object:
    lo, hi = parse_port_range(value)  # type: ignore[arg-type]
    if lo != hi:
        raise ValueError(f"expected a single port, not the range {value!r}")
    return lo


def _backend(value: object) -> object:
    """Backends may be written as plain IPs; they mean ``{ip: IP}``."""
    return {"ip": value} if isinstance(value, str) else value


def _version(value: object) -> object:
    if isinstance(value, bool) or value != SCHEMA_VERSION:
        raise ValueError(
            f"unsupported policy version {value!r}: this controller understands "
            f"version {SCHEMA_VERSION}"
        )
    return value


Name = Annotated[str, BeforeValidator(_name)]
Proto = Annotated[Literal["tcp", "udp", "icmp"] | StrictInt | None, BeforeValidator(_proto)]
Address = Annotated[str, BeforeValidator(_address)]
IPv4 = Annotated[str, BeforeValidator(_ipv4)]
Mac = Annotated[str, BeforeValidator(_mac)]
Rate = Annotated[int, BeforeValidator(parse_rate)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
PortRange = Annotated[
    tuple[int, int],
    BeforeValidator(parse_port_range),
    PlainSerializer(lambda ports: ports[0] if ports[0] == ports[1] else format_port_range(ports)),
]
Port = Annotated[int, BeforeValidator(_single_port)]
Dpid = Annotated[StrictInt, Field(ge=0, lt=1 << 64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- models


class Link(_Model):
    """Attributes of the link between two switches (links themselves are discovered)."""

    between: tuple[Name, Name]
    weight: Annotated[StrictFloat, Field(gt=0)] | None = None
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
    mac: Mac | None = None
    ip: IPv4 | None = None

    @model_validator(mode="after")
    def _needs_an_address(self) -> Host:
        if self.mac is None and self.ip is None:
            raise ValueError("a host needs at least one of mac, ip")
        return self


class Routing(_Model):
    metric: Literal["hops", "latency", "capacity"] = "hops"
    ecmp: StrictBool = True
    protection: Literal["fast-failover", "none"] = "fast-failover"


class _FiveTuple(_Model):
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


class Match(_FiveTuple):
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


class FirewallRule(_FiveTuple):
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
    ip: IPv4
    port: Port | None = None
    weight: Annotated[StrictInt, Field(ge=0)] = 1


class HealthCheck(_Model):
    interval: Duration = 1.0
    timeout: Duration = 1.0
    fall: Annotated[StrictInt, Field(ge=1)] = 3
    rise: Annotated[StrictInt, Field(ge=1)] = 2


class LoadBalancer(_VnfBase):
    type: Literal["loadbalancer"]
    vip: IPv4
    vip_mac: Mac | None = None
    port: Port | None = None
    proto: Literal["tcp", "udp"] = "tcp"
    backends: Annotated[
        tuple[Annotated[Backend, BeforeValidator(_backend)], ...], Field(min_length=1)
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

    version: Annotated[int, BeforeValidator(_version)]
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
            return {k: v for k, v in data.items() if v is not None or k == "version"}
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
        return _sorted(self.model_dump(mode="json"))

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


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def canonical_json(canonical: Mapping[str, Any]) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


def policy_objects(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """Split a canonical policy into objects keyed ``routing``, ``topology``, ``host:h1``,
    ``class:voice``, ``vnf:fw``, ``chain:web``, in that order.

    Works on the canonical dict (not a :class:`Policy`) so stored revisions can be compared
    without re-parsing their source.
    """
    objects: dict[str, Any] = {
        "routing": canonical["routing"],
        "topology": canonical["topology"],
    }
    objects.update({f"host:{name}": host for name, host in canonical["hosts"].items()})
    objects.update({f"class:{c['name']}": c for c in canonical["classes"]})
    objects.update({f"vnf:{name}": vnf for name, vnf in canonical["vnfs"].items()})
    objects.update({f"chain:{c['name']}": c for c in canonical["chains"]})
    return objects


def object_id(key: str, obj: Any) -> int:
    """A 64-bit hash of an object's key and canonical form, never 0 nor all-ones
    (cookie 0 marks unmanaged flows and ``0xffff...`` is OpenFlow's wildcard)."""
    data = f"{key}\n{json.dumps(obj, sort_keys=True, separators=(',', ':'))}".encode()
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return h % ((1 << 64) - 2) + 1


# --------------------------------------------------------------------------- YAML with lines


class _Source:
    """YAML text turned into plain data plus the (line, column) of every field path."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.positions: dict[Path, tuple[int, int]] = {(): (1, 1)}
        self.problems: list[Problem] = []
        self.data: Any = None
        self._nodes = 0
        self._loader = yaml.SafeLoader(text)
        try:
            root = self._loader.get_single_node()
            if root is not None:
                self.positions[()] = _mark(root)
                self.data = self._build(root, ())
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            msg = " ".join(str(x) for x in (e.context, e.problem) if x) or str(e)
            self.problems.append(Problem(filename, line, col, "", f"YAML syntax error: {msg}"))
        except yaml.YAMLError as e:
            self.problems.append(Problem(filename, 1, 1, "", f"YAML error: {e}"))
        except _TooLarge:
            self.problems.append(
                Problem(filename, 1, 1, "", f"document too large (over {MAX_YAML_NODES} nodes)")
            )
        finally:
            self._loader.dispose()

    def problem(self, path: Path, message: str) -> None:
        self._add(*self.locate(path), path, message)

    def _add(self, line: int, col: int, path: Path, message: str) -> None:
        self.problems.append(Problem(self.filename, line, col, format_path(path), message))

    def locate(self, path: Path) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor present in the file."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return 1, 1

    def _build(self, node: yaml.Node, path: Path) -> Any:
        # Aliases share nodes, so a "billion laughs" document is small text but a huge tree.
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _TooLarge
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag not in (MAP_TAG, SEQ_TAG):
            self._add(*_mark(node), path, f"unsupported YAML tag {node.tag!r}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path)
        items = []
        for i, item in enumerate(node.value):
            self.positions[(*path, i)] = _mark(item)
            items.append(self._build(item, (*path, i)))
        return items

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        """A plain value; tags that would construct objects are refused (safe loader)."""
        try:
            return self._loader.construct_object(node)
        except yaml.constructor.ConstructorError as e:
            self._add(*_mark(node), path, f"YAML error: {e.problem}")
            return None

    def _build_mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        pairs = [(k, v) for k, v in node.value if k.tag != MERGE_TAG]
        result = self._merged(node, path)
        explicit: dict[Any, int] = {}
        for key_node, value_node in pairs:
            line, col = _mark(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self._add(line, col, path, "mapping keys must be plain values")
                continue
            key = self._scalar(key_node, path)
            key_path = (*path, key)
            if key in explicit:
                message = f"duplicate key {key!r} (first defined at line {explicit[key]})"
                self._add(line, col, key_path, message)
                continue
            explicit[key] = line
            self.positions[key_path] = (line, col)
            result[key] = self._build(value_node, key_path)
        return result

    def _merged(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        """The keys ``<<: *anchor`` merges in; explicit keys then override them."""
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in reversed(sources):  # the first source listed wins
                if isinstance(source, yaml.MappingNode):
                    result.update(self._build_mapping(source, path))
                else:
                    self._add(*_mark(source), path, "'<<' must merge a mapping or a list of them")
        return result


class _TooLarge(Exception):
    pass


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


# --------------------------------------------------------------------------- schema errors


_MODELS: tuple[type[BaseModel], ...] = (
    Policy,
    Topology,
    Link,
    Host,
    Routing,
    Match,
    TrafficClass,
    FirewallRule,
    Firewall,
    Backend,
    HealthCheck,
    LoadBalancer,
    Analyzer,
    Chain,
)
_FIELD_NAMES: frozenset[str] = frozenset().union(*(m.model_fields for m in _MODELS))


def _schema_problems(src: _Source, error: ValidationError) -> None:
    for err in error.errors():
        path = _data_path(src.data, err["loc"])
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            msg = f"unknown field {path[-1]!r}"
            close = difflib.get_close_matches(str(path[-1]), _FIELD_NAMES, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        elif kind == "missing":
            msg = f"missing required field {path[-1]!r}"
        elif kind == "union_tag_invalid":
            path = (*path, "type")
            tag = err["input"].get("type")
            msg = f"unknown VNF type {tag!r} (use firewall, loadbalancer or analyzer)"
        elif kind == "union_tag_not_found":
            path = (*path, "type")
            msg = "missing required field 'type' (firewall, loadbalancer or analyzer)"
        elif kind == "too_short":
            msg = f"needs at least {err['ctx']['min_length']} item(s)"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"])
        src.problem(path, msg)


def _data_path(data: Any, loc: tuple[str | int, ...]) -> Path:
    """Turn a pydantic error location into a path through the document's own data.

    Pydantic adds steps that are not in the document: the discriminated union's tag
    (``vnfs.fw.firewall.rules``) and ``[key]`` for dict-key errors; they are dropped.
    """
    path: list[str | int] = []
    current = data
    for step in loc:
        if step == "[key]":
            continue
        if (isinstance(current, dict) and step in current) or (
            isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current)
        ):
            current = current[step]
        elif isinstance(current, dict) and current.get("type") == step:
            continue
        else:
            current = None
        path.append(step)
    return tuple(path)


# --------------------------------------------------------------------------- semantic checks


class _Checker:
    """Checks that need the whole (schema-valid) policy: references, overlaps, conflicts."""

    def __init__(
        self,
        policy: Policy,
        report: Callable[[Path, str], None],
        switches: Mapping[str, int] | None,
        hosts: Mapping[str, Any] | None,
    ) -> None:
        self.p = policy
        self.report = report
        self.live_switches = switches
        self.live_hosts = hosts

    def run(self) -> None:
        self.check_topology()
        self.check_hosts()
        for i, cls in enumerate(self.p.classes):
            self.check_flow(("classes", i, "match"), cls.match)
            if None not in (cls.min_rate, cls.max_rate) and cls.min_rate > cls.max_rate:
                self.report(
                    ("classes", i, "min_rate"),
                    f"min_rate {cls.min_rate} bit/s exceeds max_rate {cls.max_rate} bit/s",
                )
        self.check_unique_names("classes", "class", [c.name for c in self.p.classes])
        self.check_shadowing("classes", "class", [(c.name, c.match) for c in self.p.classes])
        for name, vnf in self.p.vnfs.items():
            self.check_vnf(name, vnf)
        self.check_vips()
        for i, chain in enumerate(self.p.chains):
            self.check_chain(i, chain)
        self.check_unique_names("chains", "chain", [c.name for c in self.p.chains])
        self.check_shadowing("chains", "chain", [(c.name, c.match) for c in self.p.chains])

    # --- references

    def check_switch(self, path: Path, name: str) -> None:
        if name in self.p.topology.switches:
            return
        dpid = self.p.dpid_of(name)
        if self.live_switches is None:
            if dpid is None:
                self.report(
                    path, f"unknown switch {name!r}: not in topology.switches and not named s<N>"
                )
        elif name not in self.live_switches and dpid not in self.live_switches.values():
            known = ", ".join(sorted(self.live_switches)) or "none"
            self.report(
                path,
                f"unknown switch {name!r}: not in the network (known: {known}) "
                "nor in topology.switches",
            )

    def host_known(self, name: str) -> bool:
        # Without live facts, a name the policy does not define may still be resolved later.
        return name in self.p.hosts or self.live_hosts is None or name in self.live_hosts

    def resolve(self, value: str) -> ipaddress.IPv4Network | None:
        net = self.p.resolve_address(value)
        if net is None and self.live_hosts is not None and value in self.live_hosts:
            fact = self.live_hosts[value]
            ip = fact.get("ip") if isinstance(fact, Mapping) else getattr(fact, "ip", None)
            if ip:
                net = ipaddress.IPv4Network(f"{ip}/32")
        return net

    # --- sections

    def check_topology(self) -> None:
        by_dpid: dict[int, str] = {}
        for name, dpid in self.p.topology.switches.items():
            if dpid in by_dpid:
                self.report(
                    ("topology", "switches", name),
                    f"dpid {dpid} is already switch {by_dpid[dpid]!r}",
                )
            by_dpid.setdefault(dpid, name)
        seen: dict[frozenset[str], int] = {}
        for i, link in enumerate(self.p.topology.links):
            path: Path = ("topology", "links", i, "between")
            a, b = link.between
            if a == b:
                self.report(path, f"a link joins two different switches, got {a!r} twice")
                continue
            for j, name in enumerate(link.between):
                self.check_switch((*path, j), name)
            pair = frozenset(link.between)
            if pair in seen:
                self.report(
                    path, f"link {a}-{b} is already described at topology.links[{seen[pair]}]"
                )
            seen.setdefault(pair, i)

    def check_hosts(self) -> None:
        for attr in ("ip", "mac"):
            owner: dict[str, str] = {}
            for name, host in self.p.hosts.items():
                value = getattr(host, attr)
                if value is None:
                    continue
                if value in owner:
                    self.report(
                        ("hosts", name, attr), f"{attr} {value} is already host {owner[value]!r}'s"
                    )
                owner.setdefault(value, name)

    def check_flow(self, path: Path, flow: _FiveTuple) -> None:
        """Checks common to class and chain matches and firewall rules."""
        for field in ("src_port", "dst_port"):
            if getattr(flow, field) is not None and flow.proto not in ("tcp", "udp"):
                self.report(
                    (*path, field),
                    f"{field} needs proto tcp or udp (proto is {flow.proto or 'any'})",
                )
        for field in ("src", "dst"):
            value = getattr(flow, field)
            if value is not None and "/" not in value and not self.host_known(value):
                self.report((*path, field), f"unknown host {value!r}")
        in_host = getattr(flow, "in_host", None)
        if in_host is not None and not self.host_known(in_host):
            self.report((*path, "in_host"), f"unknown host {in_host!r}")

    def check_unique_names(self, section: str, kind: str, names: list[str]) -> None:
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                self.report(
                    (section, i, "name"),
                    f"duplicate {kind} name {name!r} (first at {section}[{first[name]}])",
                )
            first.setdefault(name, i)

    def check_shadowing(self, section: str, kind: str, entries: list[tuple[str, Match]]) -> None:
        """List order is precedence: an entry covered by an earlier one never matches."""
        for i, (name, match) in enumerate(entries):
            for j, (earlier_name, earlier) in enumerate(entries[:i]):
                if earlier.covers(match, self.resolve):
                    self.report(
                        (section, i, "match"),
                        f"{kind} {name!r} can never match: {section}[{j}] "
                        f"({earlier_name!r}) comes first and covers all its traffic",
                    )
                    break

    def check_vnf(self, name: str, vnf: Firewall | LoadBalancer | Analyzer) -> None:
        path: Path = ("vnfs", name)
        self.check_switch((*path, "switch"), vnf.switch)
        if isinstance(vnf, Firewall):
            for i, rule in enumerate(vnf.rules):
                rule_path = (*path, "rules", i)
                self.check_flow(rule_path, rule)
                if rule.icmp_type is not None and rule.proto != "icmp":
                    self.report((*rule_path, "icmp_type"), "icmp_type needs proto icmp")
        elif isinstance(vnf, LoadBalancer):
            self.check_loadbalancer(path, vnf)
        elif vnf.idle_timeout > vnf.active_timeout:
            self.report(
                (*path, "idle_timeout"),
                f"idle_timeout ({vnf.idle_timeout:g}s) exceeds active_timeout "
                f"({vnf.active_timeout:g}s)",
            )

    def check_loadbalancer(self, path: Path, lb: LoadBalancer) -> None:
        if not is_prime(lb.table_size):
            self.report(
                (*path, "table_size"),
                f"table_size {lb.table_size} is not prime "
                f"(Maglev needs a prime, e.g. {MAGLEV_DEFAULT_TABLE_SIZE})",
            )
        elif lb.table_size < MIN_SLOTS_PER_BACKEND * len(lb.backends):
            self.report(
                (*path, "table_size"),
                f"table_size {lb.table_size} is below {MIN_SLOTS_PER_BACKEND} slots per "
                f"backend ({len(lb.backends)} backends)",
            )
        if sum(b.weight for b in lb.backends) == 0:
            self.report((*path, "backends"), "the backends' weights add up to 0")
        seen: dict[tuple[str, int | None], int] = {}
        for i, backend in enumerate(lb.backends):
            if backend.port is not None and lb.port is None:
                self.report(
                    (*path, "backends", i, "port"),
                    "a backend port needs the load balancer's port to be set",
                )
            key = (backend.ip, lb.backend_port(backend))
            if key in seen:
                self.report(
                    (*path, "backends", i),
                    f"duplicate backend {backend.ip} (same as backends[{seen[key]}])",
                )
            seen.setdefault(key, i)
            if backend.ip == lb.vip:
                self.report((*path, "backends", i, "ip"), "a backend cannot be the VIP itself")
        for host_name, host in self.p.hosts.items():
            if host.ip == lb.vip:
                self.report((*path, "vip"), f"VIP {lb.vip} is host {host_name!r}'s address")

    def check_vips(self) -> None:
        """Two load balancers may share a VIP only on different protocols or ports."""
        lbs = [(n, v) for n, v in self.p.vnfs.items() if isinstance(v, LoadBalancer)]
        for i, (name, lb) in enumerate(lbs):
            for other_name, other in lbs[:i]:
                if (lb.vip, lb.proto) == (other.vip, other.proto) and (
                    None in (lb.port, other.port) or lb.port == other.port
                ):
                    self.report(
                        ("vnfs", name, "vip"),
                        f"VIP {lb.vip} ({lb.proto} port {lb.port or 'any'}) overlaps "
                        f"load balancer {other_name!r}",
                    )
                    break

    def check_chain(self, i: int, chain: Chain) -> None:
        path: Path = ("chains", i)
        self.check_flow((*path, "match"), chain.match)
        first: dict[str, int] = {}
        for j, vnf_name in enumerate(chain.through):
            if vnf_name in first:
                self.report(
                    (*path, "through", j),
                    f"VNF {vnf_name!r} is already in this chain at through[{first[vnf_name]}]",
                )
                continue
            first[vnf_name] = j
            vnf = self.p.vnfs.get(vnf_name)
            if vnf is None:
                known = ", ".join(sorted(self.p.vnfs)) or "none defined"
                self.report((*path, "through", j), f"unknown VNF {vnf_name!r} (known: {known})")
            elif isinstance(vnf, LoadBalancer):
                self.check_reaches_vip(path, chain, vnf_name, vnf)

    def check_reaches_vip(self, path: Path, chain: Chain, name: str, lb: LoadBalancer) -> None:
        """A chain through a load balancer must carry traffic addressed to its VIP."""
        m = chain.match
        vip = ipaddress.IPv4Address(lb.vip)
        if m.dst is not None:
            net = self.resolve(m.dst)
            if net is not None and vip not in net:
                self.report(
                    (*path, "match", "dst"),
                    f"chain goes through load balancer {name!r} but its dst {m.dst} "
                    f"does not include the VIP {lb.vip}",
                )
        if m.proto is not None and m.proto != lb.proto:
            self.report(
                (*path, "match", "proto"),
                f"chain goes through load balancer {name!r} ({lb.proto}) but matches "
                f"proto {m.proto}",
            )
        if (
            lb.port is not None
            and m.dst_port is not None
            and not (m.dst_port[0] <= lb.port <= m.dst_port[1])
        ):
            self.report(
                (*path, "match", "dst_port"),
                f"chain goes through load balancer {name!r} (port {lb.port}) but matches "
                f"dst_port {format_port_range(m.dst_port)}",
            )
        if not chain.symmetric:
            self.report(
                (*path, "symmetric"),
                f"chain goes through load balancer {name!r}, whose replies must come "
                "back through it: set symmetric: true",
            )


# --------------------------------------------------------------------------- entry point


def load_policy(
    text: str,
    filename: str = "<policy>",
    *,
    switches: Mapping[str, int] | None = None,
    hosts: Mapping[str, Any] | None = None,
) -> Policy:
    """Parse, validate and check a policy; raise :class:`PolicyError` listing every problem.

    ``switches`` (name -> dpid) and ``hosts`` (name -> facts) are what the live network
    knows. When given, switch/host references must be found there or in the policy's own
    ``topology.switches``/``hosts``; when ``None`` they are not checked against the network.
    """
    src = _Source(text, filename)
    if src.problems and src.data is None:
        raise PolicyError(src.problems)
    if not isinstance(src.data, dict):
        kind = "empty" if src.data is None else f"a {type(src.data).__name__}"
        src.problem(
            (),
            f"a policy must be a mapping with version, routing, classes, vnfs, "
            f"chains...; this document is {kind}",
        )
        raise PolicyError(src.problems)
    try:
        policy = Policy.model_validate(src.data)
    except ValidationError as e:
        _schema_problems(src, e)
        raise PolicyError(src.problems) from None
    _Checker(policy, src.problem, switches, hosts).run()
    if src.problems:
        raise PolicyError(src.problems)
    return policy
