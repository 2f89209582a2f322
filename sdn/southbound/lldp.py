"""LLDP probes that name the switch and port they left from, and the probing round they
belong to. Pure encode/decode."""

from __future__ import annotations

from os_ken.lib.packet import ethernet, lldp, packet

LLDP_MAC = lldp.LLDP_MAC_NEAREST_BRIDGE
CHASSIS_PREFIX = b"dpid:"
PROBE_TTL_SECONDS = 120
ROUND_PREFIX = b"round "


def probe_source_mac(dpid: int, port: int) -> str:
    """A locally administered MAC per (switch, port): hosts never own it."""
    value = (0x02 << 40) | ((dpid & 0xFFFFFF) << 16) | (port & 0xFFFF)
    return ":".join(f"{(value >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def build_probe(dpid: int, port: int, round_: int = 0) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(
        dst=LLDP_MAC, src=probe_source_mac(dpid, port), ethertype=0x88CC))
    pkt.add_protocol(lldp.lldp([
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=CHASSIS_PREFIX + b"%016x" % dpid),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=b"%d" % port),
        lldp.TTL(ttl=PROBE_TTL_SECONDS),
        lldp.SystemDescription(system_description=ROUND_PREFIX + b"%d" % round_),
        lldp.End(),
    ]))
    pkt.serialize()
    return bytes(pkt.data)


def parse_probe(data: bytes) -> tuple[int, int, int] | None:
    """(dpid, port, round) of a probe of ours, or None for anything else."""
    try:
        pkt = packet.Packet(data)
        probe = pkt.get_protocol(lldp.lldp)
    except Exception:  # a malformed frame from the wire is not ours
        return None
    if probe is None or len(probe.tlvs) < 2:
        return None
    chassis, port_tlv = probe.tlvs[0], probe.tlvs[1]
    chassis_id = getattr(chassis, "chassis_id", b"")
    if not chassis_id.startswith(CHASSIS_PREFIX):
        return None
    described = [t.system_description for t in probe.tlvs
                 if isinstance(t, lldp.SystemDescription)
                 and t.system_description.startswith(ROUND_PREFIX)]
    try:
        round_ = int(described[0][len(ROUND_PREFIX):]) if described else 0
        return int(chassis_id[len(CHASSIS_PREFIX):], 16), int(port_tlv.port_id), round_
    except (AttributeError, ValueError):
        return None
