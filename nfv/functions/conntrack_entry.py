"""Connection-tracking values: states, timeouts, the flow key, one tracked connection, and
the TCP window checks (after the Linux conntrack rules) that decide whether a segment fits."""

from __future__ import annotations

import ipaddress
from typing import Any

from nfv.datapath.packet import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Parser,
)

# --- classification of a packet (what track() returns) -----------------------------------------
CT_NEW = 0
CT_ESTABLISHED = 1
CT_RELATED = 2
CT_INVALID = 3
CT_UNTRACKED = 4
CT_NAMES = ("new", "established", "related", "invalid", "untracked")
# --- connection states ---------------------------------------------------------------------------
NONE = 0
SYN_SENT = 1
SYN_RECV = 2
ESTABLISHED = 3
FIN_WAIT = 4
CLOSE_WAIT = 5
LAST_ACK = 6
TIME_WAIT = 7
CLOSE = 8
SYN_SENT2 = 9  # simultaneous open: both sides sent SYN
UNREPLIED = 10  # UDP/ICMP/other: only the original direction seen
REPLIED = 11  # UDP/ICMP/other: both directions seen
STATE_NAMES = (
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
    "UNREPLIED",
    "REPLIED",
)


# Linux's nf_conntrack defaults (seconds); override any of them with the `timeouts` argument.
DEFAULT_TIMEOUTS: dict[str, float] = {
    "tcp_syn_sent": 120,
    "tcp_syn_recv": 60,
    "tcp_established": 432000,
    "tcp_fin_wait": 120,
    "tcp_close_wait": 60,
    "tcp_last_ack": 30,
    "tcp_time_wait": 120,
    "tcp_close": 10,
    "udp": 30,
    "udp_stream": 120,
    "icmp": 30,
    "generic": 600,
}


TCP_TIMEOUT_KEYS = (
    "tcp_close",  # NONE is never stored; use the shortest
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_established",
    "tcp_fin_wait",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_time_wait",
    "tcp_close",
    "tcp_syn_sent",
)


# A RST is believed when its sequence number lies this close to where its sender's stream is
# (we see every segment, so an honest RST is at the edge; a blind spoofer must guess).
RST_WINDOW = 1 << 20
SEQ_MASK = 0xFFFFFFFF


Key = tuple[int, int, int, int, int]


def flow_key(ver: int, proto: int, src: int, sport: int, dst: int, dport: int) -> Key:
    """Direction-independent key: both directions of a connection map to the same tuple."""
    pf = proto | 0x100 if ver == 6 else proto
    if src < dst or (src == dst and sport <= dport):
        return (pf, src, sport, dst, dport)
    return (pf, dst, dport, src, sport)


class Entry:
    """One tracked connection. `user` is free for the function that owns the table."""

    __slots__ = (
        "bytes",
        "created",
        "dead",
        "end",
        "expires",
        "filed",
        "fin_dir",
        "key",
        "orig_dport",
        "orig_dst",
        "orig_sport",
        "orig_src",
        "packets",
        "proto",
        "state",
        "user",
        "ver",
    )

    def __init__(self, key: Key, p: Parser, state: int, now: float) -> None:
        self.key = key
        self.ver = p.ip_ver
        self.proto = p.proto
        self.orig_src = p.src
        self.orig_dst = p.dst
        self.orig_sport = p.sport
        self.orig_dport = p.dport
        self.state = state
        self.created = now
        self.expires = now
        self.filed = 0
        self.dead = False
        self.fin_dir = -1  # direction (0 orig, 1 reply) of the first FIN
        self.end = [0, 0]  # per direction: sequence number after the last segment seen
        self.packets = 0
        self.bytes = 0
        self.user: Any = None

    def describe(self) -> tuple[int, str, int, str, int]:
        """(proto, src, sport, dst, dport) of the original direction, addresses as text."""
        src = ipaddress.ip_address(self.orig_src if self.ver == 4 else _v6(self.orig_src))
        dst = ipaddress.ip_address(self.orig_dst if self.ver == 4 else _v6(self.orig_dst))
        return (self.proto, str(src), self.orig_sport, str(dst), self.orig_dport)


def _v6(addr: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(addr)


def valid_flags(f: int) -> bool:
    """Flag combinations a real stack sends (the rest are scans or garbage)."""
    if f & TCP_RST:
        return not f & (TCP_SYN | TCP_FIN)
    if f & TCP_SYN:
        return not f & TCP_FIN
    return bool(f & TCP_ACK)  # FIN needs ACK; no flags at all is a null scan


def in_window(seq: int, edge: int) -> bool:
    diff = (seq - edge) & SEQ_MASK
    return diff <= RST_WINDOW or diff >= (1 << 32) - RST_WINDOW


def tcp_next(e: Entry, p: Parser, d: int, f: int, state: int) -> int:
    """The state after segment (flags `f`, direction `d`), or -1 when it is out of state."""
    if f & TCP_RST:
        if state == SYN_SENT:
            # only the answer to our SYN may reset a half-open connection
            ok = d == 1 and bool(f & TCP_ACK) and p.tcp_ack == e.end[0]
        else:
            ok = in_window(p.tcp_seq, e.end[d])
        return CLOSE if ok else -1
    if f == TCP_SYN:
        if state == SYN_SENT:
            return SYN_SENT2 if d == 1 else SYN_SENT
        if state == SYN_SENT2:
            return SYN_SENT2
        return -1
    if f == TCP_SYN | TCP_ACK:
        if state in (SYN_SENT, SYN_SENT2) and p.tcp_ack == e.end[1 - d]:
            return SYN_RECV if (d == 1 or state == SYN_SENT2) else -1
        if state == SYN_RECV:
            return SYN_RECV  # retransmitted SYN/ACK
        if state >= ESTABLISHED and state != SYN_SENT2:
            return state  # late retransmission: harmless, keep state
        return -1
    if state in SYN_SENT_STATES:
        return -1  # ACK or FIN before the SYN/ACK
    if state == SYN_RECV:
        if p.tcp_ack != e.end[1 - d]:
            return -1  # does not acknowledge the peer's SYN: not part of this handshake
        if f & TCP_FIN:
            e.fin_dir = d
            return FIN_WAIT
        return ESTABLISHED if d == 0 else SYN_RECV  # the client's ACK completes the handshake
    if f & TCP_FIN:
        if state == ESTABLISHED:
            e.fin_dir = d
            return FIN_WAIT
        if state in (FIN_WAIT, CLOSE_WAIT):
            return LAST_ACK if d != e.fin_dir else state
        return state  # LAST_ACK, TIME_WAIT, CLOSE: retransmitted FIN
    # plain ACK
    if state == FIN_WAIT:
        return CLOSE_WAIT if d != e.fin_dir else FIN_WAIT
    if state == LAST_ACK:
        return TIME_WAIT if d == e.fin_dir else LAST_ACK
    return state


SYN_SENT_STATES = frozenset((SYN_SENT, SYN_SENT2))
