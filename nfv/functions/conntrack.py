"""Connection tracking shared by the firewall and the load balancer.

Modelled on Linux conntrack: a table keyed by a direction-independent 5-tuple, a TCP state
machine with handshake and RST validation, UDP/ICMP pseudo-states, per-state timeouts with
Linux's defaults, a size bound, and per-entry user data.

Use: `info = ct.track(parser, now)` for every parsed packet. It returns one of `CT_NEW` (no entry
yet: the packet would open a connection), `CT_ESTABLISHED` (part of a tracked connection, either
direction), `CT_RELATED` (an ICMP error about a tracked connection), `CT_INVALID` (does not fit
the state of its connection, or cannot open one) or `CT_UNTRACKED` (not tracked at all:
non-IP, non-first fragments, IPv6 neighbour discovery). A `CT_NEW` packet does not create an
entry by itself: call `ct.confirm(now)` once the packet is accepted (as Linux confirms at the end
of the hook chain), so that denied traffic leaves no state behind. After `track`, `ct.entry` is
the connection (or None), `ct.reply` tells whether the packet runs in the reply direction and
`ct.settled` whether this packet just completed the connection (TCP handshake done, or first UDP
/ICMP reply).

Expiry is lazy: a packet only writes the entry's deadline; `tick(now)` walks coarse one-second
buckets and re-files entries whose deadline moved. Cost per packet: one tuple, one dict lookup.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from nfv.datapath.compiled import fast
from nfv.datapath.packet import (
    FRAG_LATER,
    ICMP_ERROR_TYPES,
    ICMPV6_ERROR_TYPES,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Parser,
)
from nfv.functions.conntrack_entry import (
    CLOSE,
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_UNTRACKED,
    DEFAULT_TIMEOUTS,
    ESTABLISHED,
    NONE,
    REPLIED,
    SEQ_MASK,
    SYN_SENT,
    TCP_TIMEOUT_KEYS,
    TIME_WAIT,
    UNREPLIED,
    Entry,
    Key,
    flow_key,
    tcp_next,
    valid_flags,
)

# ICMP types that may open a pseudo-connection (echo, timestamp, info, address mask requests).
_ICMP_REQUESTS = frozenset((8, 13, 15, 17))
_ICMPV6_REQUESTS = frozenset((128,))
# ICMPv6 link-local control (MLD, router/neighbour discovery, redirect): never tracked.
_ICMPV6_UNTRACKED = frozenset((130, 131, 132, 133, 134, 135, 136, 137, 143))
_MAX_EVICT_SCAN = 8
_ICMP_PROTOS = frozenset((PROTO_ICMP, PROTO_ICMPV6))


class ConnTrack:
    """The connection table. One per worker, not thread-safe."""

    def __init__(
        self,
        max_entries: int = 65536,
        timeouts: dict[str, float] | None = None,
        tcp_loose: bool = False,
        on_remove: Callable[[Entry], None] | None = None,
    ) -> None:
        """`tcp_loose`: pick up TCP connections mid-stream (a bare ACK may open one, as Linux's
        nf_conntrack_tcp_loose); off by default because a firewall should see the handshake.
        `on_remove` is called with each entry that expires or is evicted."""
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        t = dict(DEFAULT_TIMEOUTS)
        for name, value in (timeouts or {}).items():
            if name not in t:
                raise ValueError(f"unknown conntrack timeout {name!r}")
            if value <= 0:
                raise ValueError(f"conntrack timeout {name!r} must be positive")
            t[name] = float(value)
        self.timeouts = t
        self._t_udp, self._t_udp_stream = t["udp"], t["udp_stream"]
        self._t_icmp, self._t_generic = t["icmp"], t["generic"]
        self._state_timeout = [t[k] for k in TCP_TIMEOUT_KEYS] + [0.0, 0.0]
        self.max_entries = max_entries
        self.tcp_loose = tcp_loose
        self.on_remove = on_remove
        self._table: OrderedDict[Key, Entry] = OrderedDict()
        self._wheel: dict[int, list[Entry]] = {}
        self._heap: list[int] = []
        # results of the last track()
        self.entry: Entry | None = None
        self.reply = False
        self.settled = False
        self._pending_key: Key | None = None
        self._pending_state = NONE
        self._pending_parser: Parser | None = None
        # counters
        self.created = 0
        self.expired = 0
        self.evicted = 0
        self.invalid = 0

    # --- lookup --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._table.values()))

    def get(self, key: Key) -> Entry | None:
        return self._table.get(key)

    def flow_cache(self) -> Any:
        """A compiled cache of this table's established TCP connections for the C ring loop
        (nfv/datapath/_fast.c's FlowCache: it updates an entry as `_tcp`'s fast path does),
        or None without the compiled module."""
        return fast.FlowCache(ESTABLISHED, self.timeouts["tcp_established"]) if fast else None

    def track(self, p: Parser, now: float) -> int:
        """Classify the parsed packet `p` and advance its connection's state (see module doc)."""
        self.entry = None
        self.reply = False
        self.settled = False
        self._pending_key = None
        ver = p.ip_ver
        if ver == 0 or p.frag == FRAG_LATER:
            return CT_UNTRACKED
        proto = p.proto
        src, dst, sport, dport = p.src, p.dst, p.sport, p.dport
        if src < dst or (src == dst and sport <= dport):
            key = (proto | 0x100 if ver == 6 else proto, src, sport, dst, dport)
        else:
            key = (proto | 0x100 if ver == 6 else proto, dst, dport, src, sport)
        e = self._table.get(key)
        if e is not None and e.expires <= now:
            self._remove(e)
            self.expired += 1
            e = None
        if proto == PROTO_TCP:
            info = self._tcp(p, key, e, now)
        elif proto == PROTO_UDP:
            info = self._pseudo(p, key, e, now, self._t_udp, self._t_udp_stream)
        elif proto in _ICMP_PROTOS:
            info = self._icmp(p, key, e, now)
        else:
            info = self._pseudo(p, key, e, now, self._t_generic, self._t_generic)
        if info == CT_INVALID:
            self.invalid += 1
        elif info == CT_NEW:
            self._pending_parser = p
        return info

    def confirm(self, now: float, user: Any = None) -> Entry:
        """Create the entry for the packet the last `track()` classified as `CT_NEW`."""
        key = self._pending_key
        p = self._pending_parser
        if key is None or p is None:
            raise RuntimeError("confirm() without a CT_NEW packet")
        self._pending_key = None
        if len(self._table) >= self.max_entries:
            self._evict()
        e = Entry(key, p, self._pending_state, now)
        e.user = user
        e.packets = 1
        e.bytes = p.ip_len
        if e.proto == PROTO_TCP:
            syn = 1 if p.tcp_flags & TCP_SYN else 0
            e.end[0] = (p.tcp_seq + p.payload_len + syn) & SEQ_MASK
            e.expires = now + self._state_timeout[e.state]
        elif e.proto == PROTO_UDP:
            e.expires = now + self._t_udp
        elif e.proto in _ICMP_PROTOS:
            e.expires = now + self._t_icmp
        else:
            e.expires = now + self._t_generic
        self._table[key] = e
        self._file(e)
        self.created += 1
        self.entry = e
        return e

    def remove(self, e: Entry) -> None:
        """Forget a connection now (e.g. the load balancer's backend went away)."""
        if not e.dead:
            self._remove(e)

    # --- per-protocol state machines -------------------------------------------------------------

    def _new(self, key: Key, state: int) -> int:
        self._pending_key = key
        self._pending_state = state
        return CT_NEW

    def _pseudo(
        self, p: Parser, key: Key, e: Entry | None, now: float, t_new: float, t_stream: float
    ) -> int:
        if e is None:
            return self._new(key, UNREPLIED)
        self.entry = e
        e.packets += 1
        e.bytes += p.ip_len
        if p.src == e.orig_src and p.sport == e.orig_sport:
            exp = now + (t_stream if e.state == REPLIED else t_new)
        else:
            self.reply = True
            if e.state == UNREPLIED:
                e.state = REPLIED
                self.settled = True
            exp = now + t_stream
        e.expires = exp
        if exp < e.filed - 1:
            self._file(e)
        return CT_ESTABLISHED

    def _icmp(self, p: Parser, key: Key, e: Entry | None, now: float) -> int:
        t = p.icmp_type
        v6 = p.proto == PROTO_ICMPV6
        if (t in ICMPV6_ERROR_TYPES) if v6 else (t in ICMP_ERROR_TYPES):
            if not p.inner_ok:
                return CT_INVALID
            inner = self._table.get(
                flow_key(
                    p.ip_ver, p.inner_proto, p.inner_src, p.inner_sport, p.inner_dst, p.inner_dport
                )
            )
            if inner is None or inner.expires <= now:
                return CT_INVALID
            self.entry = inner
            return CT_RELATED
        if v6 and t in _ICMPV6_UNTRACKED:
            return CT_UNTRACKED
        if e is None:
            if t in (_ICMPV6_REQUESTS if v6 else _ICMP_REQUESTS):
                return self._new(key, UNREPLIED)
            return CT_INVALID
        return self._pseudo(p, key, e, now, self._t_icmp, self._t_icmp)

    def _tcp(self, p: Parser, key: Key, e: Entry | None, now: float) -> int:
        flags = p.tcp_flags
        f = flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)
        if e is not None and f == TCP_ACK and e.state == ESTABLISHED:
            # the fast path: data or pure ACK on an established connection
            self.entry = e
            d = 0 if (p.src == e.orig_src and p.sport == e.orig_sport) else 1
            self.reply = d == 1
            e.end[d] = (p.tcp_seq + p.payload_len) & SEQ_MASK
            e.packets += 1
            e.bytes += p.ip_len
            e.expires = now + self._state_timeout[ESTABLISHED]
            return CT_ESTABLISHED
        if not valid_flags(f):
            return CT_INVALID
        if e is None:
            if f == TCP_SYN:
                return self._new(key, SYN_SENT)
            if self.tcp_loose and f == TCP_ACK:
                return self._new(key, ESTABLISHED)
            return CT_INVALID
        d = 0 if (p.src == e.orig_src and p.sport == e.orig_sport) else 1
        state = e.state
        if f == TCP_SYN and state in (TIME_WAIT, CLOSE):
            # the port pair is reused: forget the old connection, this SYN opens a new one
            self._remove(e)
            return self._new(key, SYN_SENT)
        new = tcp_next(e, p, d, f, state)
        if new < 0:
            return CT_INVALID
        self.entry = e
        self.reply = d == 1
        seg = p.payload_len + (1 if f & TCP_SYN else 0) + (1 if f & TCP_FIN else 0)
        e.end[d] = (p.tcp_seq + seg) & SEQ_MASK
        e.packets += 1
        e.bytes += p.ip_len
        if new != state:
            e.state = new
            if new == ESTABLISHED:
                self.settled = True
        exp = now + self._state_timeout[new]
        e.expires = exp
        if exp < e.filed - 1:
            self._file(e)  # the deadline moved earlier than its bucket (e.g. ESTABLISHED -> FIN)
        return CT_ESTABLISHED

    # --- expiry and eviction -------------------------------------------------------------------

    def tick(self, now: float) -> int:
        """Expire connections whose deadline passed; return how many were removed."""
        heap = self._heap
        removed = 0
        while heap and heap[0] <= now:
            second = heapq.heappop(heap)
            for e in self._wheel.pop(second, ()):
                if e.dead or e.filed != second:
                    continue
                if e.expires <= now:
                    self._remove(e)
                    removed += 1
                else:
                    self._file(e)
        self.expired += removed
        return removed

    def _file(self, e: Entry) -> None:
        second = int(e.expires) + 1
        e.filed = second
        bucket = self._wheel.get(second)
        if bucket is None:
            self._wheel[second] = [e]
            heapq.heappush(self._heap, second)
        else:
            bucket.append(e)

    def _remove(self, e: Entry) -> None:
        e.dead = True
        self._table.pop(e.key, None)
        if self.on_remove is not None:
            self.on_remove(e)

    def _evict(self) -> None:
        """Make room: the oldest connection that is not established, else the oldest of all."""
        victim = None
        for e in islice(self._table.values(), _MAX_EVICT_SCAN):
            if e.state not in (ESTABLISHED, REPLIED):
                victim = e
                break
        if victim is None:
            victim = next(iter(self._table.values()))
        self._remove(victim)
        self.evicted += 1

    def counters(self) -> dict[str, int]:
        return {
            "entries": len(self._table),
            "created": self.created,
            "expired": self.expired,
            "evicted": self.evicted,
            "invalid": self.invalid,
        }


