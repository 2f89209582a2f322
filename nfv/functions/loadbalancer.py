"""The L4 load balancer: a VIP spread over backends by Maglev, with NAT and health checks.

Clients reach the VIP through the ingress arm; backends sit behind the egress arm.

- Forward path (ingress, to VIP:port over the configured protocol): the connection table
  (``nfv.functions.conntrack``, loose TCP pickup so mid-stream packets also find their
  backend) gives
  the backend of a known connection; a new one gets ``Maglev.lookup(crc32(5-tuple))``.
  The packet is DNATed in place to the backend's IP and port, checksums updated
  incrementally (RFC 1624), and its destination MAC becomes the backend's.
- Reverse path (egress, from a backend to a tracked client): source IP and port go back to
  VIP:port and the source MAC to the VIP's MAC.
- L2: the function is otherwise transparent (other frames pass untouched). It answers ARP
  requests for the VIP on either arm (BOUNCE). Backend MACs are learnt from ARP seen on the
  egress arm and from the backends' packets there; while a backend's MAC is unknown the
  health checker asks for it with an ARP request from the VIP.
- Table changes (health, weights) rebuild the Maglev table; established connections keep
  their backend because the connection table is consulted first, even when their backend
  has left the table (a TCP connection cannot move anyway).
- Health checks (from ``tick()``): a TCP SYN from VIP:ephemeral to each backend out of
  the egress arm every ``interval`` (replica r of n uses the ephemeral ports that
  ``probe_ports(r, n)`` selects, so the switches can steer each answer to the replica that
  asked, see ``sdn.compile.chains``); a matching SYN-ACK is a success and is answered with
  a RST (the frame is rewritten in place and bounced), a RST or no answer within
  ``timeout`` is a failure. ``fall`` consecutive failures take a backend out of the table,
  ``rise`` consecutive successes bring it back. Defaults (200 ms, 300 ms, 2, 2) remove a
  dead backend within 0.8 s. Checks are on by default for ``proto: tcp``; for UDP only
  when ``health_check`` is given (it is still a TCP connect check on the backend port).

Not handled: IPv6 VIPs, ICMP errors about balanced connections (not translated), non-first
fragments to the VIP (dropped and counted: they carry no ports to pick a backend with).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from itertools import count
from time import perf_counter
from typing import Any

from common.contract import probe_ports
from common.contract import vip_mac as contract_vip_mac
from common.units import parse_duration
from nfv.datapath.function import Side, Verdict
from nfv.datapath.packet import (
    ETH_ARP,
    FRAG_LATER,
    OK,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    Parser,
)
from nfv.datapath.rewrite import (
    build_tcp_rst,
    nat_for,
)
from nfv.functions.backends import (
    ARP_BODY,
    BROADCAST_MAC,
    Backend,
    Probe,
    arp_request,
    mac_bytes,
    parse_backend,
    tcp_syn,
)
from nfv.functions.conntrack import ConnTrack
from nfv.functions.conntrack_entry import CT_ESTABLISHED, CT_NEW, ESTABLISHED, Entry, flow_key
from nfv.functions.maglev import DEFAULT_TABLE_SIZE, Maglev, flow_hash

DEFAULT_HEALTH = {"interval": 0.2, "timeout": 0.3, "fall": 2, "rise": 2}
PROBE_PORTS = range(32768, 61000)
# Connection-table timeouts (seconds): an LB forgets idle established flows sooner than
# Linux's five days so that the table stays bounded by traffic, not history.
CT_TIMEOUTS = {"tcp_established": 3600.0, "udp_stream": 120.0}

# Frame outcomes; their counts add up to the number of frames seen.
OUTCOMES = (
    "nat",
    "unnat",
    "arp_reply",
    "probe_reply",
    "passed",
    "malformed",
    "no_backend",
    "fragment",
)
NAT, UNNAT, ARP_REPLY, PROBE_REPLY, PASSED, MALFORMED, NO_BACKEND, FRAGMENT = range(8)

_FIVE = struct.Struct("!IIHHB")  # src dst sport dport proto: the bytes Maglev hashes


class LoadBalancer:
    """``nfv.functions.base.NetworkFunction`` for ``type: loadbalancer`` (see the module doc)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.vip = int(IPv4Address(config["vip"]))
        vip_mac = config.get("vip_mac")
        self.vip_mac = (
            mac_bytes(vip_mac or contract_vip_mac(str(config.get("name", config["vip"]))))
        )
        port = config.get("port")
        self.port: int | None = int(port) if port is not None else None
        proto = str(config.get("proto", "tcp")).lower()
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be tcp or udp, got {proto!r}")
        self.proto = PROTO_TCP if proto == "tcp" else PROTO_UDP
        self.backends = [parse_backend(b) for b in config.get("backends", ())]
        if not self.backends:
            raise ValueError("a load balancer needs at least one backend")
        self._by_ip: dict[int, list[Backend]] = {}
        for b in self.backends:  # one host may serve on several ports
            self._by_ip.setdefault(b.ip, []).append(b)
        self.table_size = int(config.get("table_size", DEFAULT_TABLE_SIZE))
        hc = config.get("health_check")
        self.health_enabled = hc is not None or self.proto == PROTO_TCP
        h = {**DEFAULT_HEALTH, **(hc or {})}
        unknown = set(h) - set(DEFAULT_HEALTH)
        if unknown:
            raise ValueError(f"unknown health_check keys: {sorted(unknown)}")
        self.interval = parse_duration(h["interval"])
        self.timeout = parse_duration(h["timeout"])
        self.fall, self.rise = int(h["fall"]), int(h["rise"])
        if self.interval <= 0 or self.timeout <= 0 or self.fall < 1 or self.rise < 1:
            raise ValueError("health_check needs positive interval/timeout and fall/rise >= 1")
        self.ct = ConnTrack(
            max_entries=int(config.get("max_connections", 262144)),
            timeouts=CT_TIMEOUTS,
            tcp_loose=True,
            on_remove=self._forget,
        )
        self._reverse: dict[tuple[int, int, int, int, int], Entry] = {}
        self._p = Parser()
        self._nat = nat_for(self._p)
        self._probes: dict[tuple[int, int], Probe] = {}
        value, mask = probe_ports(int(config.get("replica", 0)), int(config.get("replicas", 1)))
        self._probe_ports = [p for p in PROBE_PORTS if p & mask == value]
        self._probe_port = count()
        self._rng = random.Random()
        self.frames = 0
        self.outcomes = [0] * len(OUTCOMES)
        # Established TCP segments the C ring loop NATs without calling process(); its hits
        # count in `frames` (see _fast.c's FlowCache).
        self.flow_cache = self.ct.flow_cache()
        self.mac_unknown = 0
        self.stateless = 0
        self.rebuilds = 0
        self.rebuild_seconds = 0.0
        self._dirty = False
        self.maglev: Maglev[Backend] = self._build()

    # -- the Maglev table -------------------------------------------------------------

    def _build(self) -> Maglev[Backend]:
        live = [b for b in self.backends if b.healthy and b.weight > 0]
        started = perf_counter()
        table = Maglev(live, [b.key for b in live], [b.weight for b in live], self.table_size)
        self.rebuild_seconds = perf_counter() - started
        self.rebuilds += 1
        return table

    def rebuild(self) -> None:
        """Recompute the table from the healthy backends (also after weights changed)."""
        self.maglev = self._build()
        self._dirty = False

    # -- the packet path --------------------------------------------------------------

    def process(
        self, frame: memoryview, length: int, side: Side, now: float
    ) -> tuple[Verdict, int]:
        self.frames += 1
        p = self._p
        if p.parse(frame, length) != OK:
            self.outcomes[MALFORMED] += 1
            return Verdict.DROP, length
        if p.ip_ver == 4:
            if p.dst == self.vip:
                if side == Side.INGRESS and p.proto == self.proto:
                    if p.frag == FRAG_LATER:
                        self.outcomes[FRAGMENT] += 1
                        return Verdict.DROP, length
                    if self.port is None or p.dport == self.port:
                        return self._to_backend(frame, length, now)
                elif side == Side.EGRESS and p.proto == PROTO_TCP:
                    probe = self._probes.get((p.src, p.dport))
                    if probe is not None and p.sport == self._check_port(probe.backend):
                        return self._probe_answer(frame, probe, now)
            elif side == Side.EGRESS:
                e = self._reverse.get((p.proto, p.src, p.sport, p.dst, p.dport))
                if e is not None:
                    return self._from_backend(frame, length, e, now)
        elif p.eth_type == ETH_ARP and p.arp_op:
            if p.arp_op == 1 and p.arp_tpa == self.vip:
                return self._arp_reply(frame, length)
            if side == Side.EGRESS:
                self._learn_from_arp(p.arp_spa, frame, p.l3_off + 8)
        self.outcomes[PASSED] += 1
        return Verdict.FORWARD, length

    def _to_backend(self, frame: memoryview, length: int, now: float) -> tuple[Verdict, int]:
        p = self._p
        ct = self.ct
        info = ct.track(p, now)
        if info == CT_NEW:
            b = self._pick(p)
            if b is None:
                self.outcomes[NO_BACKEND] += 1
                return Verdict.DROP, length
            e = ct.confirm(now, b)
            self._reverse[(p.proto, b.ip, b.port or p.dport, p.src, p.sport)] = e
            b.counts["connections"] += 1
        else:
            e = ct.entry or ct.get(flow_key(4, p.proto, p.src, p.sport, p.dst, p.dport))
            if e is not None:
                b = e.user
            else:  # a segment no connection can start with: Maglev still picks consistently
                b = self._pick(p)
                if b is None:
                    self.outcomes[NO_BACKEND] += 1
                    return Verdict.DROP, length
                self.stateless += 1
        self._nat(frame, p, True, b.ip, b.port)
        if b.mac is not None:
            frame[0:6] = b.mac
        else:
            self.mac_unknown += 1
        c = b.counts
        c["packets_to"] += 1
        c["bytes_to"] += length
        self.outcomes[NAT] += 1
        cache = self.flow_cache
        if cache is not None and info == CT_ESTABLISHED and e.state == ESTABLISHED and b.mac:
            cache.offer_nat(e, ct.reply, True, b.ip, b.port or 0, 0, b, self.outcomes, NAT, c,
                            "packets_to", "bytes_to")  # fmt: skip
        return Verdict.FORWARD, length

    def _pick(self, p: Parser) -> Backend | None:
        return self.maglev.lookup(flow_hash(_FIVE.pack(p.src, p.dst, p.sport, p.dport, p.proto)))

    def _from_backend(
        self, frame: memoryview, length: int, e: Entry, now: float
    ) -> tuple[Verdict, int]:
        p = self._p
        b: Backend = e.user
        if b.mac is None:
            b.mac = bytes(frame[6:12])
        self._nat(frame, p, False, self.vip, e.orig_dport)
        frame[6:12] = self.vip_mac
        ct = self.ct
        info = ct.track(p, now)  # advance the connection's state; NAT does not depend on it
        c = b.counts
        c["packets_from"] += 1
        c["bytes_from"] += length
        self.outcomes[UNNAT] += 1
        cache = self.flow_cache
        if cache is not None and info == CT_ESTABLISHED and e.state == ESTABLISHED:
            cache.offer_nat(e, ct.reply, False, self.vip, e.orig_dport, 6, self.vip_mac,
                            self.outcomes, UNNAT, c, "packets_from", "bytes_from")  # fmt: skip
        return Verdict.FORWARD, length

    def _forget(self, e: Entry) -> None:
        """Connection-table removal hook: drop the reverse-path key too."""
        b: Backend = e.user
        self._reverse.pop((e.proto, b.ip, b.port or e.orig_dport, e.orig_src, e.orig_sport), None)

    # -- L2 ---------------------------------------------------------------------------

    def _arp_reply(self, frame: memoryview, length: int) -> tuple[Verdict, int]:
        """Turn an ARP request for the VIP into the reply, in place."""
        a = self._p.l3_off
        asker_mac = bytes(frame[a + 8 : a + 14])
        asker_ip = bytes(frame[a + 14 : a + 18])
        frame[0:6] = asker_mac
        frame[6:12] = self.vip_mac
        ARP_BODY.pack_into(
            frame,
            a,
            1,
            0x0800,
            6,
            4,
            2,
            self.vip_mac,
            self.vip,
            asker_mac,
            int.from_bytes(asker_ip, "big"),
        )
        self.outcomes[ARP_REPLY] += 1
        return Verdict.BOUNCE, length

    def _learn_from_arp(self, ip: int, frame: memoryview, at: int) -> None:
        """A backend's ARP (reply or request) gives its MAC and settles our ARP probes."""
        hosts = self._by_ip.get(ip)
        if hosts is None:
            return
        mac = bytes(frame[at : at + 6])
        if mac == BROADCAST_MAC or not any(mac):
            return
        for b in hosts:
            b.mac = mac
        for key in [k for k, pr in self._probes.items() if pr.backend.ip == ip and pr.arp]:
            del self._probes[key]  # answered: neither success nor failure of the service

    # -- health checks ----------------------------------------------------------------

    def _probe_answer(self, frame: memoryview, probe: Probe, now: float) -> tuple[Verdict, int]:
        p = self._p
        b = probe.backend
        flags = p.tcp_flags
        del self._probes[(b.ip, probe.port)]
        self.outcomes[PROBE_REPLY] += 1
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and p.tcp_ack == probe.seq + 1:
            b.mac = bytes(frame[6:12])
            self._result(b, True)
            return Verdict.BOUNCE, build_tcp_rst(frame, p)
        if flags & TCP_RST:
            self._result(b, False)
        return Verdict.DROP, p.length

    def _result(self, b: Backend, ok: bool) -> None:
        """The fall/rise state machine; a change marks the table for rebuilding."""
        if ok:
            b.counts["probes_ok"] += 1
            b.fails = 0
            b.oks += 1
            if not b.healthy and b.oks >= self.rise:
                b.healthy = True
                self._dirty = True
        else:
            b.counts["probes_failed"] += 1
            b.oks = 0
            b.fails += 1
            if b.healthy and b.fails >= self.fall:
                b.healthy = False
                self._dirty = True

    def tick(self, now: float) -> Iterable[tuple[Side, bytes]]:
        out: list[tuple[Side, bytes]] = []
        if self.health_enabled:
            for key, probe in list(self._probes.items()):
                if probe.deadline <= now:
                    del self._probes[key]
                    self._result(probe.backend, False)
            for b in self.backends:
                if now >= b.next_probe and self._check_port(b):
                    b.next_probe = now + self.interval
                    out.append((Side.EGRESS, self._probe(b, now)))
        for b in self.backends:
            # Without health checks (UDP, or no port to check) nothing else would ever
            # ask for a backend's MAC, and NATed frames would leave with the VIP's.
            if b.mac is None and now >= b.next_probe and not (
                    self.health_enabled and self._check_port(b)):
                b.next_probe = now + self.interval
                out.append((Side.EGRESS, arp_request(self.vip_mac, self.vip, b.ip)))
        if self._dirty:
            self.rebuild()
        self.ct.tick(now)
        return out

    def _check_port(self, b: Backend) -> int | None:
        """The port a backend is checked on; without one (all-ports VIP) it is not checked."""
        return b.port or self.port

    def _probe(self, b: Backend, now: float) -> bytes:
        """A SYN to the backend, or an ARP request while its MAC is unknown (both timed).

        Source ports cycle through this replica's share of ``PROBE_PORTS``; with at most
        ``timeout / interval + 1`` probes in flight per backend, a port is long free when it
        comes round again.
        """
        port = self._probe_ports[next(self._probe_port) % len(self._probe_ports)]
        seq = self._rng.getrandbits(32)
        arp = b.mac is None
        self._probes[(b.ip, port)] = Probe(b, port, seq, now + self.timeout, arp)
        b.counts["probes_sent"] += 1
        if b.mac is None:
            return arp_request(self.vip_mac, self.vip, b.ip)
        return tcp_syn(b.mac, self.vip_mac, self.vip, b.ip, port, self._check_port(b) or 0, seq)

    # -- stats ------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {
            "frames": self.frames + (self.flow_cache.hits if self.flow_cache else 0),
            "malformed": self.outcomes[MALFORMED],
            "outcomes": dict(zip(OUTCOMES, self.outcomes, strict=True)),
            "nat_errors": {
                "no_backend": self.outcomes[NO_BACKEND],
                "fragment": self.outcomes[FRAGMENT],
                "malformed": self.outcomes[MALFORMED],
                "mac_unknown": self.mac_unknown,
            },
            "stateless": self.stateless,
            "table": {
                "size": self.table_size,
                "rebuilds": self.rebuilds,
                "rebuild_ms": round(self.rebuild_seconds * 1000, 3),
                "healthy": sum(b.healthy for b in self.backends),
            },
            "backends": {
                b.key: {
                    "healthy": b.healthy,
                    "weight": b.weight,
                    "mac": b.mac.hex(":") if b.mac else None,
                    **b.counts,
                }
                for b in self.backends
            },
            "conntrack": self.ct.counters(),
        }


