"""A load balancer's backends and health probes: parsing them from the config, their
state, and the frames a probe sends (ARP request, TCP SYN)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from nfv.datapath.packet import (
    PROTO_TCP,
    TCP_SYN,
)
from nfv.datapath.rewrite import (
    fold,
    ones_sum,
)


def mac_bytes(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"invalid MAC address {text!r}")
    return raw


@dataclass(eq=False)
class Backend:
    """A real server behind the VIP, with its health and traffic counters."""

    ip: int
    port: int | None
    weight: int
    mac: bytes | None = None
    healthy: bool = True
    fails: int = 0  # consecutive failed probes
    oks: int = 0  # consecutive successful probes
    next_probe: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "connections",
                "packets_to",
                "bytes_to",
                "packets_from",
                "bytes_from",
                "probes_sent",
                "probes_ok",
                "probes_failed",
            ),
            0,
        )
    )

    @property
    def key(self) -> str:
        return f"{IPv4Address(self.ip)}:{self.port or '*'}"


def parse_backend(spec: str | Mapping[str, Any]) -> Backend:
    """A backend from the policy: a bare IP or ``{ip, port, weight}``."""
    if isinstance(spec, str):
        return Backend(int(IPv4Address(spec)), None, 1)
    unknown = set(spec) - {"ip", "port", "weight"}
    if unknown:
        raise ValueError(f"unknown backend keys: {sorted(unknown)}")
    port = spec.get("port")
    weight = int(spec.get("weight", 1))
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"backend port out of range: {port}")
    if weight < 0:
        raise ValueError(f"backend weight must not be negative: {weight}")
    return Backend(int(IPv4Address(spec["ip"])), int(port) if port else None, weight)


@dataclass(eq=False)
class Probe:
    backend: Backend
    port: int  # our (the VIP's) source port: identifies the probe
    seq: int
    deadline: float
    arp: bool  # an ARP request for the backend's MAC rather than a SYN


def arp_request(src_mac: bytes, src_ip: int, target_ip: int) -> bytes:
    """Who-has ``target_ip``, tell ``src_ip`` (broadcast)."""
    buf = bytearray(42)
    buf[0:6] = BROADCAST_MAC
    buf[6:12] = src_mac
    buf[12:14] = b"\x08\x06"
    ARP_BODY.pack_into(buf, 14, 1, 0x0800, 6, 4, 1, src_mac, src_ip, bytes(6), target_ip)
    return bytes(buf)


def tcp_syn(
    dst_mac: bytes, src_mac: bytes, src: int, dst: int, sport: int, dport: int, seq: int
) -> bytes:
    """A bare TCP SYN (no options) with correct IPv4 and TCP checksums."""
    buf = bytearray(54)
    buf[0:6] = dst_mac
    buf[6:12] = src_mac
    buf[12:14] = b"\x08\x00"
    IP_HDR.pack_into(buf, 14, 0x45, 0, 40, 0, 0x4000, 64, PROTO_TCP, 0, src, dst)
    struct.pack_into("!H", buf, 24, fold(ones_sum(buf, 14, 34)) ^ 0xFFFF)
    TCP_HDR.pack_into(buf, 34, sport, dport, seq, 0, 5 << 4, TCP_SYN, 64240, 0, 0)
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + PROTO_TCP + 20
    struct.pack_into("!H", buf, 50, fold(ones_sum(buf, 34, 54) + pseudo) ^ 0xFFFF)
    return bytes(buf)


IP_HDR = struct.Struct("!BBHHHBBHII")
TCP_HDR = struct.Struct("!HHIIBBHHH")
ARP_BODY = struct.Struct("!HHBBH6sI6sI")
BROADCAST_MAC = b"\xff" * 6
