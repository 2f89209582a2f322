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
