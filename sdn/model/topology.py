"""The network model: switches, ports, links and hosts, kept as a networkx graph.

The controller's event handlers mutate a `Topology`; everything downstream (routing,
compilation) reads an immutable `Snapshot` of it, so the compiler never sees a model
that changes under its feet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import networkx as nx

# A port is trusted as an edge port (where hosts live and broadcasts are flooded to) once it
# has been up this long without LLDP arriving on it, and the controller has since read LLDP
# at its switch of a probing round after the one the port came up in: evidence, not the
# clock, that a neighbour's probe into the port would have been read by now. A controller
# too starved to read LLDP for seconds (200 switches on two cores) otherwise takes
# undiscovered links for edge ports: both ends flood into each other, a broadcast storm.
EDGE_SETTLE_SECONDS = 0.3
UNSPECIFIED_IP = "0.0.0.0"
# Bounds on what hosts can make the controller hold (each host and address costs rules on
# every switch): a port with more hosts behind it is a hub or a flood, a host with more
# addresses is spraying ARP.
HOSTS_PER_PORT = 16
ADDRESSES_PER_HOST = 8
PENDING_PER_PORT = 32  # (mac, address) pairs kept for a port still waiting to be trusted
# A host seen somewhere new, or an address claimed by another host, while the old
# location is still up: the owner is asked (an ARP probe) and has this long to answer.
VERIFY_SECONDS = 1.0
# A host whose port went down keeps its addresses if it shows up again this soon (a cable
# moved to another switch); at most this many such hosts are remembered.
DEPARTED_SECONDS = 300.0
DEPARTED_HOSTS = 4096


@dataclass(frozen=True, order=True)
class Link:
    """One direction-free inter-switch link, stored with the lower dpid first."""

    a: int
    a_port: int
    b: int
    b_port: int

    @staticmethod
    def between(a: int, a_port: int, b: int, b_port: int) -> Link:
        if (a, a_port) <= (b, b_port):
            return Link(a, a_port, b, b_port)
        return Link(b, b_port, a, a_port)

    def port_at(self, dpid: int) -> int:
        return self.a_port if dpid == self.a else self.b_port

    def other(self, dpid: int) -> int:
        return self.b if dpid == self.a else self.a


@dataclass(frozen=True, order=True)
class Host:
    mac: str
    dpid: int
    port: int
    ips: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Snapshot:
    """An immutable view handed to the pure compiler."""

    switches: dict[int, frozenset[int]]  # dpid -> live port numbers
    links: tuple[Link, ...]
    hosts: tuple[Host, ...]
    weights: dict[frozenset[int], float] = field(default_factory=dict)
    # Ports that are not edge ports although no link is known there: up too briefly to be
    # sure no switch is behind them, or they carried LLDP and their link has aged out
    # (flooding there would close a loop around the spanning tree). Nothing floods there.
    unsettled: dict[int, frozenset[int]] = field(default_factory=dict)

    def graph(self) -> nx.Graph:
        """Switch graph; with parallel links the lowest-numbered one carries traffic."""
        g = nx.Graph()
        g.add_nodes_from(sorted(self.switches))
        for link in sorted(self.links):
            if g.has_edge(link.a, link.b):
                continue
            weight = self.weights.get(frozenset((link.a, link.b)), 1.0)
            g.add_edge(link.a, link.b, weight=weight, link=link)
        return g

    def link_ports(self, dpid: int) -> set[int]:
        ports = {lk.a_port for lk in self.links if lk.a == dpid}
        return ports | {lk.b_port for lk in self.links if lk.b == dpid}


@dataclass(frozen=True)
class Claim:
    """`mac` seen at (dpid, port), or claiming address `ip`, which `owner` holds now."""

    mac: str
    dpid: int
    port: int
    ip: str | None  # None: a move of the host itself
    owner: Host
    since: float


class Topology:
    """Mutable model fed by OpenFlow events. Not thread-safe: one eventlet loop owns it."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self.ports: dict[int, dict[int, float]] = {}  # dpid -> {port: time it came up}
        self.links: set[Link] = set()
        self.hosts: dict[str, Host] = {}
        self.weights: dict[frozenset[int], float] = {}
        self.port_names: dict[int, dict[int, str]] = {}  # dpid -> {port: interface name}
        self.bridge_names: dict[int, str] = {}  # dpid -> OVS bridge name (its LOCAL port)
        self.service_port_names: set[str] = set()  # VNF arms: neither hosts nor links
        self.claims: dict[tuple[str, str | None], Claim] = {}  # (mac, ip or None) -> claim
        # Ports that have carried LLDP face a switch until they go down, even while their
        # link is aged out: never flooded to as edge ports, never a host's place.
        self.switch_facing: set[tuple[int, int]] = set()
        self.round = 0  # the LLDP probing round under way (the event handler advances it)
        self.heard: dict[int, int] = {}  # dpid -> the newest round read at that switch
        self.up_round: dict[tuple[int, int], int] = {}  # (dpid, port) -> round it came up in
        # Edge ports another controller showed us (a standby reads no packet-ins, no LLDP)
        self.trusted_edges: set[tuple[int, int]] = set()
        # (mac, ip) seen at a port still waiting for that evidence: learnt once it has it
        self.pending: dict[tuple[int, int], list[tuple[str, str | None]]] = {}
        # Hosts whose place went down, oldest first, with when: a returning one keeps its
        # addresses (those no other host took meanwhile).
        self.departed: dict[str, tuple[Host, float]] = {}

    def name_ports(self, dpid: int, names: dict[int, str], bridge: str | None = None) -> None:
        self.port_names.setdefault(dpid, {}).update(names)
        if bridge:
            self.bridge_names[dpid] = bridge

    def is_service_port(self, dpid: int, port: int) -> bool:
        return self.port_names.get(dpid, {}).get(port) in self.service_port_names

    # switches and ports
    def add_switch(self, dpid: int, ports: Iterable[int]) -> None:
        now = self._clock()
        self.ports[dpid] = {p: now for p in ports}
        self.up_round = {k: r for k, r in self.up_round.items() if k[0] != dpid}
        self.up_round.update(((dpid, p), self.round) for p in self.ports[dpid])

    def remove_switch(self, dpid: int) -> None:
        self.ports.pop(dpid, None)
        self.heard.pop(dpid, None)
        self.up_round = {k: r for k, r in self.up_round.items() if k[0] != dpid}
        self.pending = {k: seen for k, seen in self.pending.items() if k[0] != dpid}
        self.trusted_edges = {k for k in self.trusted_edges if k[0] != dpid}
        self.switch_facing = {(d, p) for d, p in self.switch_facing if d != dpid}
        self.links = {lk for lk in self.links if dpid not in (lk.a, lk.b)}
        self._depart([h for h in self.hosts.values() if h.dpid == dpid])

    def port_up(self, dpid: int, port: int) -> None:
        self.ports.setdefault(dpid, {}).setdefault(port, self._clock())
        self.up_round.setdefault((dpid, port), self.round)

    def port_down(self, dpid: int, port: int) -> bool:
        """Forget a port and whatever hung off it; True if a link went with it."""
        self.ports.get(dpid, {}).pop(port, None)
        self.up_round.pop((dpid, port), None)
        self.pending.pop((dpid, port), None)
        self.trusted_edges.discard((dpid, port))
        self.switch_facing.discard((dpid, port))
        before = len(self.links)
        self.links = {
            lk for lk in self.links if (dpid, port) not in ((lk.a, lk.a_port), (lk.b, lk.b_port))
        }
        self._depart([h for h in self.hosts.values() if (h.dpid, h.port) == (dpid, port)])
        return len(self.links) != before

    def _depart(self, hosts: list[Host]) -> None:
        """Hosts whose place is gone. One seen elsewhere meanwhile (a move being verified)
        is there now: its old place cannot answer any more. The others are remembered."""
        now = self._clock()
        for host in hosts:
            del self.hosts[host.mac]
            claim = self.claims.pop((host.mac, None), None)
            if claim is not None and self.has_room(host.mac, claim.dpid, claim.port):
                self.hosts[host.mac] = replace(host, dpid=claim.dpid, port=claim.port)
                continue
            self.departed.pop(host.mac, None)
            self.departed[host.mac] = (host, now)
            while len(self.departed) > DEPARTED_HOSTS:
                del self.departed[next(iter(self.departed))]

    def _returning(self, mac: str) -> Host | None:
        """The host `mac` as it was before its place went down, with the addresses no one
        else holds now; None if it did not depart lately."""
        host, since = self.departed.pop(mac, (None, 0.0))
        if host is None or self._clock() - since > DEPARTED_SECONDS:
            return None
        return replace(host, ips=tuple(ip for ip in host.ips if self.host_by_ip(ip) is None))

    # links
    def add_link(self, a: int, a_port: int, b: int, b_port: int) -> bool:
        """Record a link seen by LLDP; True if it is new. Hosts wrongly learned there go."""
        if a not in self.ports or b not in self.ports:
            return False
        link = Link.between(a, a_port, b, b_port)
        if link in self.links:
            return False
        stale = {lk for lk in self.links if {(lk.a, lk.a_port), (lk.b, lk.b_port)}
                 & {(a, a_port), (b, b_port)}}
        self.links -= stale
        self.links.add(link)
        self.switch_facing |= {(a, a_port), (b, b_port)}
        self.trusted_edges -= {(a, a_port), (b, b_port)}
        self.pending.pop((a, a_port), None)
        self.pending.pop((b, b_port), None)
        self.hosts = {
            m: h for m, h in self.hosts.items()
            if (h.dpid, h.port) not in ((a, a_port), (b, b_port))
        }
        return True

    def remove_link(self, link: Link) -> None:
        self.links.discard(link)

    def faces_switch(self, dpid: int, port: int) -> bool:
        """The port carried LLDP and has not gone down since (every link's ports do)."""
        return (dpid, port) in self.switch_facing

    def is_edge_port(self, dpid: int, port: int) -> bool:
        """A live port that faces no switch, with the evidence to trust that (see
        EDGE_SETTLE_SECONDS)."""
        since = self.ports.get(dpid, {}).get(port)
        if (since is None or self.faces_switch(dpid, port)
                or self.is_service_port(dpid, port)):
            return False
        return self._settled(dpid, port, since)

    def _settled(self, dpid: int, port: int, since: float) -> bool:
        return self._clock() - since >= EDGE_SETTLE_SECONDS and (
            self._heard_since_up(dpid, port) or (dpid, port) in self.trusted_edges)

    def _heard_since_up(self, dpid: int, port: int) -> bool:
        """LLDP of a round after the one the port came up in was read at its switch."""
        return self.heard.get(dpid, -1) > self.up_round.get((dpid, port), self.round)

    def trust_edge(self, dpid: int, port: int) -> bool:
        """The leader found (dpid, port) to be an edge port: a standby takes its word for
        it, so that once elected it floods and learns there from its first update; True if
        that is news."""
        if (port not in self.ports.get(dpid, {}) or self.faces_switch(dpid, port)
                or (dpid, port) in self.trusted_edges):
            return False
        self.trusted_edges.add((dpid, port))
        return True

    # LLDP evidence
    def hear(self, dpid: int, round_: int) -> bool:
        """LLDP of probing round `round_` was read at `dpid`; True if that is the evidence
        some port of it waited for (it may now be an edge port, hosts seen there learnt)."""
        before = self.heard.get(dpid, -1)
        if round_ <= before or dpid not in self.ports:
            return False
        self.heard[dpid] = round_
        settled = any(before <= self.up_round.get((dpid, p), round_) < round_
                      for p in self.ports[dpid])
        return self._learn_pending(dpid) or settled

    def awaiting_evidence(self) -> list[int]:
        """Switches with a port that no LLDP read yet shows to be an edge port or not, or
        with hosts seen at such a port and not learnt yet."""
        waiting = {dpid for dpid, _ in self.pending}
        return [dpid for dpid, ports in self.ports.items() if dpid in waiting
                or not all(self._heard_since_up(dpid, p) for p in ports)]

    def _learn_pending(self, dpid: int) -> bool:
        changed = False
        for place in [place for place in self.pending if place[0] == dpid]:
            if self.is_edge_port(*place):
                for mac, ip in self.pending.pop(place):
                    changed |= self.learn_host(mac, *place, ip)
            elif place[1] not in self.ports[dpid] or self.faces_switch(*place):
                del self.pending[place]
        return changed

    def edge_ports(self, dpid: int) -> list[int]:
        return sorted(p for p in self.ports.get(dpid, {}) if self.is_edge_port(dpid, p))

    # hosts
    def learn_host(self, mac: str, dpid: int, port: int, ip: str | None = None,
                   trusted: bool = False) -> bool:
        """Learn a host, or one more address of it; True if what the compiler needs to
        know changed. Only at edge ports: a port not yet shown to face no switch may be an
        undiscovered link, where every host's flooded frames pass (`trusted`: a place our
        own rules on the switch already name, read back after a restart). A move, or an
        address another host holds, while the old place is still up becomes a claim (see
        `settle_claims`); the unspecified address of ARP probes is nobody's."""
        if (port not in self.ports.get(dpid, {}) or self.faces_switch(dpid, port)
                or self.is_service_port(dpid, port)):
            return False
        if not (trusted or self.is_edge_port(dpid, port)):
            seen = self.pending.setdefault((dpid, port), [])
            if (mac, ip) not in seen and len(seen) < PENDING_PER_PORT:
                seen.append((mac, ip))
            return False
        old = self.hosts.get(mac)
        if not self.has_room(mac, dpid, port):
            return False
        if old is not None and (old.dpid, old.port) == (dpid, port):
            self._still_there(old)
        elif old is not None and old.ips and self._present(old):
            self._claim(Claim(mac, dpid, port, None, old, self._clock()))
            return False  # a move while the old place is up: verified first
        known = old is not None
        if not known:
            old = self._returning(mac)
        ips = tuple(old.ips) if old else ()  # a host that moves keeps its addresses
        owner = self.host_by_ip(ip) if ip else None
        if owner is not None and owner.mac != mac and self._present(owner):
            self._claim(Claim(mac, dpid, port, ip, owner, self._clock()))
        elif (ip and ip != UNSPECIFIED_IP and ip not in ips
                and len(ips) < ADDRESSES_PER_HOST):
            ips = (*ips, ip)
            self._release_ip(ip)
        new = Host(mac=mac, dpid=dpid, port=port, ips=ips, name=old.name if old else "")
        self.hosts[mac] = new
        return not known or (old.dpid, old.port, old.ips) != (dpid, port, ips)

    def has_room(self, mac: str, dpid: int, port: int) -> bool:
        """Whether `mac` may be learned at (dpid, port): it is there already, or the port
        holds fewer than HOSTS_PER_PORT hosts."""
        old = self.hosts.get(mac)
        if old is not None and (old.dpid, old.port) == (dpid, port):
            return True
        return sum((h.dpid, h.port) == (dpid, port) for h in self.hosts.values()) \
            < HOSTS_PER_PORT

    def _present(self, host: Host) -> bool:
        """The host's place is still an edge port that is up: it can be asked."""
        return self.is_edge_port(host.dpid, host.port)

    def _claim(self, claim: Claim) -> None:
        self.claims.setdefault((claim.mac, claim.ip), claim)

    def _still_there(self, host: Host) -> None:
        """The host spoke from its place: claims on it or its addresses are refused."""
        for key, claim in list(self.claims.items()):
            if claim.owner.mac == host.mac:
                del self.claims[key]

    def settle_claims(self) -> bool:
        """Claims whose owner did not answer in VERIFY_SECONDS take effect; True if
        something the compiler needs changed."""
        changed = False
        for key, claim in list(self.claims.items()):
            if self._clock() - claim.since < VERIFY_SECONDS:
                continue
            del self.claims[key]
            if claim.ip is None:
                old = self.hosts.get(claim.mac)
                if old is not None and self.has_room(claim.mac, claim.dpid, claim.port):
                    self.hosts[claim.mac] = replace(old, dpid=claim.dpid, port=claim.port)
                    changed = True
            else:
                host = self.hosts.get(claim.mac)
                if host is not None and len(host.ips) < ADDRESSES_PER_HOST:
                    self._release_ip(claim.ip)
                    self.hosts[claim.mac] = replace(host, ips=(*host.ips, claim.ip))
                    changed = True
        return changed

    def _release_ip(self, ip: str) -> None:
        for mac, host in list(self.hosts.items()):
            if ip in host.ips:
                self.hosts[mac] = replace(host, ips=tuple(a for a in host.ips if a != ip))

    def host_by_ip(self, ip: str) -> Host | None:
        for host in self.hosts.values():
            if ip in host.ips:
                return host
        return None

    def snapshot(self) -> Snapshot:
        """VNF arms are left out: the compiler never floods or routes to them by itself."""
        return Snapshot(
            switches={d: frozenset(p for p in ports if not self.is_service_port(d, p))
                      for d, ports in self.ports.items()},
            links=tuple(sorted(self.links)),
            hosts=tuple(sorted(self.hosts.values())),
            weights=dict(self.weights),
            unsettled={d: frozenset(p for p, since in ports.items()
                                    if not self._settled(d, p, since)
                                    or (d, p) in self.switch_facing)
                       for d, ports in self.ports.items()},
        )
