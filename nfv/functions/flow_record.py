"""One flow as the analyzer records it (Zeek conn.log style): its history letters, the
connection state it ended in, byte and packet counts, and the record written for it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
# TCP flag bits as on the wire.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
# History events, one bit each; the letter is upper case for the originator.
EV_SYN, EV_SYNACK, EV_ACK, EV_DATA, EV_FIN, EV_RST, EV_ODD = 1, 2, 4, 8, 16, 32, 64
_LETTERS = (
    (EV_SYN, "s"),
    (EV_SYNACK, "h"),
    (EV_ACK, "a"),
    (EV_DATA, "d"),
    (EV_FIN, "f"),
    (EV_RST, "r"),
    (EV_ODD, "q"),
)


# [direction][new event bits] -> the history letters they add, in Zeek's case convention.
_HISTORY = tuple(
    tuple(
        "".join(c.upper() if d == 0 else c for bit, c in _LETTERS if bits & bit)
        for bits in range(128)
    )
    for d in (0, 1)
)


DSCP_NAMES = {
    0: "BE",
    8: "CS1",
    10: "AF11",
    12: "AF12",
    14: "AF13",
    16: "CS2",
    18: "AF21",
    20: "AF22",
    22: "AF23",
    24: "CS3",
    26: "AF31",
    28: "AF32",
    30: "AF33",
    32: "CS4",
    34: "AF41",
    36: "AF42",
    38: "AF43",
    40: "CS5",
    44: "VA",
    46: "EF",
    48: "CS6",
    56: "CS7",
}


PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp6"}


EVENT_TABLE: list[int] = []  # TCP flags byte -> history events other than DATA


def events_for(flags: int) -> int:
    ev = 0
    if flags & SYN:
        ev |= EV_SYNACK if flags & ACK else EV_SYN
        if flags & (FIN | RST):
            ev |= EV_ODD
    elif flags & ACK and not flags & (FIN | RST):
        ev |= EV_ACK
    if flags & FIN:
        ev |= EV_FIN
    if flags & RST:
        ev |= EV_RST
    return ev


def flags_text(flags: int) -> str:
    """TCP flags as letters, tcpdump style (F S R P . U E W)."""
    return "".join(
        c
        for bit, c in (
            (FIN, "F"),
            (SYN, "S"),
            (RST, "R"),
            (PSH, "P"),
            (ACK, "."),
            (URG, "U"),
            (ECE, "E"),
            (CWR, "W"),
        )
        if flags & bit
    )


def conn_state(proto: int, orig: int, resp: int, resp_pkts: int) -> str:
    """Zeek's conn_state from the history events seen each way."""
    if proto != TCP:
        return "SF" if resp_pkts else "S0"
    if orig & EV_SYN and resp & EV_SYNACK:
        if orig & EV_RST:
            return "RSTO"
        if resp & EV_RST:
            return "RSTR"
        if orig & EV_FIN and resp & EV_FIN:
            return "SF"
        if orig & EV_FIN:
            return "S2"
        return "S3" if resp & EV_FIN else "S1"
    if orig & EV_SYN:
        if resp & EV_RST:
            return "REJ"
        if orig & EV_RST:
            return "RSTOS0"
        if orig & EV_FIN:
            return "SH"
        return "S0" if not resp_pkts else "OTH"
    if resp & EV_SYNACK:
        if resp & EV_RST:
            return "RSTRH"
        if resp & EV_FIN:
            return "SHR"
    return "OTH"


class FlowRecord:
    """One flow (one active-timeout segment of it); lists are indexed by direction."""

    __slots__ = (
        "closed_at",
        "dscp",
        "due",
        "end",
        "events",
        "flags",
        "history",
        "ip_bytes",
        "keys",
        "l2_bytes",
        "orig_h",
        "orig_p",
        "payload",
        "pkts",
        "proto",
        "resp_h",
        "resp_p",
        "segment",
        "seq_top",
        "start",
        "uid",
        "ver",
    )

    def __init__(
        self,
        uid: str,
        ver: int,
        proto: int,
        orig: tuple[int, int],
        resp: tuple[int, int],
        dscp: int,
        now: float,
        keys: tuple[Any, Any],
    ) -> None:
        self.uid = uid
        self.ver = ver
        self.proto = proto
        self.orig_h, self.orig_p = orig
        self.resp_h, self.resp_p = resp
        self.dscp = dscp
        self.keys = keys
        self.segment = 0
        self.events = [0, 0]
        self.flags = [0, 0]
        self.history = ""
        self.closed_at = 0.0
        self.due = 0.0
        self.seq_top = [-1, -1]  # next TCP sequence number after the furthest byte seen
        self.restart(now)

    def restart(self, now: float) -> None:
        """Begin a new segment: counts and times reset, connection state carries on."""
        self.start = self.end = now
        self.pkts = [0, 0]
        self.l2_bytes = [0, 0]
        self.ip_bytes = [0, 0]
        self.payload = [0, 0]

    def tcp_bytes(self, d: int, seq: int, payload: int, flags: int) -> int:
        """Payload bytes this segment adds in sequence space, as Zeek counts them: a
        retransmission adds nothing, a gap the sender skipped past counts once it is
        passed (so a capture that missed segments still reports what was sent)."""
        top = self.seq_top[d]
        if top < 0:
            self.seq_top[d] = (seq + (flags & SYN) // SYN + payload) & 0xFFFFFFFF
            return payload
        ahead = (seq + payload - top) & 0xFFFFFFFF
        if not payload or ahead == 0 or ahead >= 0x80000000:
            return 0
        self.seq_top[d] = (top + ahead) & 0xFFFFFFFF
        return ahead

    def note(self, events: int, d: int) -> None:
        """Record history events not seen before in direction ``d`` (rare: at most 7)."""
        new = events & ~self.events[d]
        self.events[d] |= new
        self.history += _HISTORY[d][new]

    def to_dict(self, reason: str, epoch_offset: float) -> dict[str, Any]:
        """The exported record (Zeek conn.log names; bytes = L4 payload as in Zeek: for TCP
        the sequence space covered, so retransmissions do not count twice)."""
        o, r = self.events
        return {
            "ts": self.start + epoch_offset,
            "uid": self.uid,
            "id.orig_h": ip_text(self.ver, self.orig_h),
            "id.orig_p": self.orig_p,
            "id.resp_h": ip_text(self.ver, self.resp_h),
            "id.resp_p": self.resp_p,
            "proto": PROTO_NAMES.get(self.proto, str(self.proto)),
            "end": self.end + epoch_offset,
            "duration": round(self.end - self.start, 6),
            "orig_pkts": self.pkts[0],
            "resp_pkts": self.pkts[1],
            "orig_bytes": self.payload[0],
            "resp_bytes": self.payload[1],
            "orig_ip_bytes": self.ip_bytes[0],
            "resp_ip_bytes": self.ip_bytes[1],
            "orig_l2_bytes": self.l2_bytes[0],
            "resp_l2_bytes": self.l2_bytes[1],
            "orig_flags": flags_text(self.flags[0]),
            "resp_flags": flags_text(self.flags[1]),
            "history": self.history,
            "conn_state": conn_state(self.proto, o, r, self.pkts[1]),
            "end_reason": reason,
            "segment": self.segment,
            "dscp": self.dscp,
            "dscp_class": dscp_name(self.dscp),
        }


def dscp_name(dscp: int) -> str:
    return DSCP_NAMES.get(dscp, f"DSCP{dscp}")


def ip_text(version: int, addr: int) -> str:
    return str(IPv4Address(addr) if version == 4 else IPv6Address(addr))
