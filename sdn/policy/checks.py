"""Semantic checks a schema cannot express: names that must exist, addresses that must
not clash, classes that shadow each other, chains that must be steerable."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from common.contract import MAGLEV_DEFAULT_TABLE_SIZE, is_prime
from common.units import format_port_range
from sdn.policy.problems import Path
from sdn.policy.schema import (
    MIN_SLOTS_PER_BACKEND,
    Analyzer,
    Chain,
    Firewall,
    FiveTuple,
    LoadBalancer,
    Match,
    Policy,
)


class Checker:
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

    def check_flow(self, path: Path, flow: FiveTuple) -> None:
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
        """List order is precedence: an entry covered by an earlier one never matches.
        Earlier entries are indexed by what a covering entry must equal or leave out, so
        each entry is compared with the few that could cover it, not with all before it
        (4,000 classes: pairwise took 104 s)."""
        index: dict[tuple, list[int]] = {}
        for i, (name, match) in enumerate(entries):
            candidates = sorted(j for key in _keys_that_could_cover(match)
                                for j in index.get(key, ()))
            for j in candidates:
                if entries[j][1].covers(match, self.resolve):
                    self.report(
                        (section, i, "match"),
                        f"{kind} {name!r} can never match: {section}[{j}] "
                        f"({entries[j][0]!r}) comes first and covers all its traffic",
                    )
                    break
            index.setdefault(_cover_key(match), []).append(i)

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


def _port_key(ports: tuple[int, int] | None) -> int | str | None:
    if ports is None:
        return None
    return ports[0] if ports[0] == ports[1] else "range"


def _cover_key(match: Match) -> tuple:
    """The exact-match part of a match: protocol, DSCP, ingress host, destination port."""
    return match.proto, match.dscp, match.in_host, _port_key(match.dst_port)


def _keys_that_could_cover(match: Match) -> itertools.product:
    """The cover keys of every match that could cover `match`: each field either left
    out or equal (a destination port: any range, or the same single port)."""
    ports: set[int | str | None] = {None}
    if match.dst_port is not None:
        ports |= {"range", _port_key(match.dst_port)}
    return itertools.product({None, match.proto}, {None, match.dscp}, {None, match.in_host},
                             ports)
