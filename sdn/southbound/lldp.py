"""LLDP probes that name the switch and port they left from, and the probing round they
belong to. Pure encode/decode, by byte offsets: at 200 switches the controller reads ~500
probes a second and writes more, and os-ken's packet library cost ~25 µs a frame each way.

A probe: Ethernet (nearest-bridge multicast, a per-port local source MAC, 0x88cc), then
the LLDP TLVs chassis id ("dpid:" + 16 hex digits, locally assigned), port id (the port
number in decimal, port component), TTL, system description ("round N"), end.
"""

from __future__ import annotations

import struct

LLDP_MAC = "01:80:c2:00:00:0e"
ETH_TYPE_LLDP = 0x88CC
CHASSIS_PREFIX = b"dpid:"
PROBE_TTL_SECONDS = 120
ROUND_PREFIX = b"round "
MAX_PROBE_BYTES = 512  # ours are ~60; anything longer is not ours

TLV_END, TLV_CHASSIS, TLV_PORT, TLV_TTL, TLV_SYSTEM_DESCRIPTION = 0, 1, 2, 3, 6
CHASSIS_LOCALLY_ASSIGNED = 7
PORT_COMPONENT = 2
_LLDP_DST = bytes.fromhex(LLDP_MAC.replace(":", ""))
_TLV_HEADER = struct.Struct("!H")


def probe_source_mac(dpid: int, port: int) -> str:
    """A locally administered MAC per (switch, port): hosts never own it."""
    value = _source_mac_value(dpid, port)
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def _source_mac_value(dpid: int, port: int) -> int:
    return (0x02 << 40) | ((dpid & 0xFFFFFF) << 16) | (port & 0xFFFF)


def _tlv(kind: int, value: bytes) -> bytes:
    return _TLV_HEADER.pack(kind << 9 | len(value)) + value


def build_probe(dpid: int, port: int, round_: int = 0) -> bytes:
    frame = b"".join((
        _LLDP_DST, _source_mac_value(dpid, port).to_bytes(6, "big"),
        ETH_TYPE_LLDP.to_bytes(2, "big"),
        _tlv(TLV_CHASSIS, bytes((CHASSIS_LOCALLY_ASSIGNED,)) + CHASSIS_PREFIX
             + b"%016x" % dpid),
        _tlv(TLV_PORT, bytes((PORT_COMPONENT,)) + b"%d" % port),
        _tlv(TLV_TTL, PROBE_TTL_SECONDS.to_bytes(2, "big")),
        _tlv(TLV_SYSTEM_DESCRIPTION, ROUND_PREFIX + b"%d" % round_),
        _tlv(TLV_END, b""),
    ))
    return frame.ljust(60, b"\0")  # the minimum Ethernet frame, as switches pad it


def parse_probe(data: bytes) -> tuple[int, int, int] | None:
    """(dpid, port, round) of a probe of ours, or None for anything else (other LLDP,
    truncated or malformed frames)."""
    if len(data) < 14 or len(data) > MAX_PROBE_BYTES or data[12:14] != b"\x88\xcc":
        return None
    dpid = port = None
    round_ = 0
    pos, end = 14, len(data)
    while pos + 2 <= end:
        header = data[pos] << 8 | data[pos + 1]
        kind, length = header >> 9, header & 0x1FF
        value = data[pos + 2:pos + 2 + length]
        if len(value) < length or kind == TLV_END:
            break
        if kind == TLV_CHASSIS:
            if not value[1:].startswith(CHASSIS_PREFIX):
                return None
            dpid = value[1 + len(CHASSIS_PREFIX):]
        elif kind == TLV_PORT:
            port = value[1:]
        elif kind == TLV_SYSTEM_DESCRIPTION and value.startswith(ROUND_PREFIX):
            round_ = value[len(ROUND_PREFIX):]
        pos += 2 + length
    if (dpid is None or port is None or len(dpid) != 16 or not dpid.isalnum()
            or not port.isdigit() or not (round_ == 0 or round_.isdigit())):
        return None  # int() would also take signs, spaces and underscores
    try:
        return int(dpid, 16), int(port), int(round_)
    except ValueError:  # not hex after all
        return None
