"""Firewall rules: checked from the config, compiled into an index by protocol and port so
a new connection's verdict costs a few lookups, not a scan."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from nfv.datapath.packet import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Parser,
)

ALLOW = 0
DROP = 1
REJECT = 2
ACTIONS = {"allow": ALLOW, "accept": ALLOW, "deny": DROP, "drop": DROP, "reject": REJECT}
ACTION_NAMES = ("allow", "drop", "reject")
_PROTOS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP, "icmpv6": PROTO_ICMPV6}
_RULE_KEYS = frozenset(("action", "proto", "src", "dst", "src_port", "dst_port", "icmp_type"))
_ANY = -1


@dataclass(frozen=True)
class Rule:
    """One compiled rule. Address ranges are (version, network, mask); 0 version = any."""

    index: int
    action: int
    protos: tuple[int, ...]  # empty = any protocol
    src: tuple[int, int, int]
    dst: tuple[int, int, int]
    sport: tuple[int, int]
    dport: tuple[int, int]
    icmp_type: int

    def describe(self) -> str:
        return f"#{self.index} {ACTION_NAMES[self.action]}"


def _net(value: Any, field: str) -> tuple[int, int, int]:
    if value is None:
        return (0, 0, 0)
    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError as exc:
        raise ValueError(f"{field}: {value!r} is not an IP address or CIDR") from exc
    return (net.version, int(net.network_address), int(net.netmask))


def _ports(value: Any, field: str) -> tuple[int, int]:
    if value is None:
        return (0, 65535)
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a port")
    if isinstance(value, int):
        lo = hi = value
    else:
        text = str(value).strip()
        lo_s, sep, hi_s = text.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError as exc:
            raise ValueError(f"{field}: {value!r} is not a port or port range") from exc
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"{field}: {value!r} is not within 1-65535 (low-high)")
    return (lo, hi)


def compile_rule(index: int, spec: dict[str, Any]) -> Rule:
    """Check one rule of the config and turn it into integer ranges."""
    where = f"rules[{index}]"
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a rule must be a mapping")
    unknown = set(spec) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    action = ACTIONS.get(str(spec.get("action", "")).lower())
    if action is None:
        raise ValueError(f"{where}.action: must be one of allow, deny, drop, reject")
    proto = spec.get("proto", "any")
    if isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 255:
        protos: tuple[int, ...] = (proto,)
    elif str(proto).lower() == "any":
        protos = ()
    elif str(proto).lower() == "icmp":
        protos = (PROTO_ICMP, PROTO_ICMPV6)
    elif str(proto).lower() in _PROTOS:
        protos = (_PROTOS[str(proto).lower()],)
    else:
        raise ValueError(f"{where}.proto: {proto!r} is not tcp, udp, icmp, any or 0-255")
    has_ports = "src_port" in spec or "dst_port" in spec
    if has_ports and not (protos and set(protos) <= {PROTO_TCP, PROTO_UDP}):
        raise ValueError(f"{where}: src_port/dst_port need proto tcp or udp")
    icmp_type = spec.get("icmp_type")
    if icmp_type is not None:
        if not (protos and set(protos) <= {PROTO_ICMP, PROTO_ICMPV6}):
            raise ValueError(f"{where}.icmp_type: needs proto icmp")
        if isinstance(icmp_type, bool) or not isinstance(icmp_type, int):
            raise ValueError(f"{where}.icmp_type: must be an integer 0-255")
        if not 0 <= icmp_type <= 255:
            raise ValueError(f"{where}.icmp_type: must be 0-255")
    src = _net(spec.get("src"), f"{where}.src")
    dst = _net(spec.get("dst"), f"{where}.dst")
    if src[0] and dst[0] and src[0] != dst[0]:
        raise ValueError(f"{where}: src and dst are of different IP versions")
    return Rule(
        index=index,
        action=action,
        protos=protos,
        src=src,
        dst=dst,
        sport=_ports(spec.get("src_port"), f"{where}.src_port"),
        dport=_ports(spec.get("dst_port"), f"{where}.dst_port"),
        icmp_type=_ANY if icmp_type is None else icmp_type,
    )


class RuleSet:
    """Rules grouped by protocol, as flat int tuples, with a cache of recent decisions."""

    def __init__(self, rules: list[Rule], default: int) -> None:
        self.rules = rules
        self.default = default
        self._by_proto: dict[int, list[tuple]] = {}
        self._any: list[tuple] = []
        for r in rules:
            row = (r.index, r.action, *r.src, *r.dst, *r.sport, *r.dport, r.icmp_type)
            if not r.protos:
                self._any.append(row)
                for rows in self._by_proto.values():
                    rows.append(row)
            for proto in r.protos:
                self._by_proto.setdefault(proto, list(self._any)).append(row)
        self._uses_sport = any(r.sport != (0, 65535) for r in rules)
        self._cache: dict[tuple, tuple[int, int]] = {}

    def decide(self, p: Parser) -> tuple[int, int]:
        """(action, rule index or -1 for the default) for the connection `p` would open."""
        sport = p.sport if self._uses_sport else 0
        key = (p.ip_ver, p.proto, p.src, p.dst, sport, p.dport, p.icmp_type)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        hit = self._scan(p, sport)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def _scan(self, p: Parser, sport: int) -> tuple[int, int]:
        ver, src, dst, dport, itype = p.ip_ver, p.src, p.dst, p.dport, p.icmp_type
        for idx, act, sv, sn, sm, dv, dn, dm, spl, sph, dpl, dph, it in self._by_proto.get(
            p.proto, self._any
        ):
            if sv and (sv != ver or src & sm != sn):
                continue
            if dv and (dv != ver or dst & dm != dn):
                continue
            if not (dpl <= dport <= dph and spl <= sport <= sph):
                continue
            if it != _ANY and it != itype:
                continue
            return (act, idx)
        return (self.default, -1)


CACHE_MAX = 65536
