"""LLDP probes and ARP handling: what the controller puts on the wire and reads back."""

from __future__ import annotations

from scapy.layers.l2 import ARP, Ether

from sdn.southbound import arp
from sdn.southbound import lldp as discovery


def test_probe_names_its_origin():
    frame = discovery.build_probe(0x1234, 7)
    assert discovery.parse_probe(frame) == (0x1234, 7, 0)
    assert discovery.parse_probe(discovery.build_probe(0x1234, 7, 42)) == (0x1234, 7, 42)
    assert Ether(frame).dst == discovery.LLDP_MAC


def test_foreign_or_broken_frames_are_not_probes():
    assert discovery.parse_probe(b"\x00" * 10) is None
    assert discovery.parse_probe(bytes(Ether(type=0x88CC) / (b"\x02\x07\x04abcdef" * 2))) is None


def test_probe_source_macs_are_local_and_distinct():
    a, b = discovery.probe_source_mac(1, 1), discovery.probe_source_mac(1, 2)
    assert a != b and int(a[:2], 16) & 0x02 and not int(a[:2], 16) & 0x01


def test_proxy_reply_answers_the_request():
    request = bytes(Ether(src="00:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc="00:00:00:00:00:01", psrc="10.0.0.1", pdst="10.0.0.2"))
    msg = arp.parse(request)
    assert msg.opcode == arp.REQUEST and not msg.gratuitous
    reply = Ether(arp.reply(msg, "00:00:00:00:00:02"))
    assert reply.dst == "00:00:00:00:00:01" and reply[ARP].op == 2
    assert (reply[ARP].psrc, reply[ARP].hwsrc) == ("10.0.0.2", "00:00:00:00:00:02")
    assert reply[ARP].pdst == "10.0.0.1"


def test_garbage_is_not_arp():
    assert arp.parse(b"\xff" * 20) is None


def test_probes_are_lldp_as_os_ken_reads_and_writes_it():
    """The byte-level codec against os-ken's packet library as the reference."""
    from os_ken.lib.packet import ethernet, packet
    from os_ken.lib.packet import lldp as oslldp

    parsed = packet.Packet(discovery.build_probe(0xABCDEF12, 65000, 7))
    tlvs = parsed.get_protocol(oslldp.lldp).tlvs
    assert parsed.get_protocol(ethernet.ethernet).ethertype == 0x88CC
    assert tlvs[0].chassis_id == b"dpid:00000000abcdef12" and tlvs[1].port_id == b"65000"
    assert tlvs[2].ttl == discovery.PROBE_TTL_SECONDS
    assert tlvs[3].system_description == b"round 7"

    reference = packet.Packet()
    reference.add_protocol(ethernet.ethernet(dst=discovery.LLDP_MAC, ethertype=0x88CC,
                                             src=discovery.probe_source_mac(3, 4)))
    reference.add_protocol(oslldp.lldp([
        oslldp.ChassisID(subtype=oslldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                         chassis_id=b"dpid:0000000000000003"),
        oslldp.PortID(subtype=oslldp.PortID.SUB_PORT_COMPONENT, port_id=b"4"),
        oslldp.TTL(ttl=120),
        oslldp.SystemDescription(system_description=b"round 12"),
        oslldp.End()]))
    reference.serialize()
    assert bytes(reference.data) == discovery.build_probe(3, 4, 12)
    assert discovery.parse_probe(bytes(reference.data)) == (3, 4, 12)


def test_no_mutation_of_a_probe_crashes_the_parser():
    import random

    rng = random.Random(5)
    probe = bytearray(discovery.build_probe(0x1234, 7, 42))
    for _ in range(5000):
        frame = bytearray(probe)
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        cut = frame[:rng.randint(0, len(frame))] if rng.random() < 0.3 else frame
        result = discovery.parse_probe(bytes(cut))
        assert result is None or all(isinstance(v, int) and v >= 0 for v in result)
    assert discovery.parse_probe(bytes(probe) + b"\0" * 600) is None  # oversized
