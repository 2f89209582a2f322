"""LLDP ahead of every other packet-in, and a bounded backlog for the rest."""

from __future__ import annotations

from sdn.controller.packet_ins import SHED, PacketIns
from sdn.southbound import lldp


def arp_from(n: int) -> bytes:
    return b"\xff" * 6 + n.to_bytes(6, "big") + b"\x08\x06" + b"\0" * 28


def test_lldp_is_handled_at_once_while_a_flood_waits_and_overflows():
    handled = []
    queue = PacketIns(lambda *frame: handled.append(frame), limit=100)
    shed_before = SHED._value.get()
    for n in range(150):
        queue.put(1, 3, 0, arp_from(n))
        if n % 50 == 0:
            queue.put(2, 1, 0, lldp.build_probe(1, 2, n))
    assert [frame[3] for frame in handled] == [lldp.build_probe(1, 2, n) for n in (0, 50, 100)]
    assert len(queue) == 100 and SHED._value.get() - shed_before == 50
    queue.drain()
    assert [frame[3] for frame in handled[3:]] == [arp_from(n) for n in range(100)]
    assert len(queue) == 0


def test_a_frame_whose_handling_fails_does_not_stop_the_others():
    handled = []

    def handle(dpid, in_port, table_id, data):
        if data == arp_from(1):
            raise ValueError("malformed")
        handled.append(data)

    queue = PacketIns(handle)
    for n in range(3):
        queue.put(1, 3, 0, arp_from(n))
    queue.drain()
    assert handled == [arp_from(0), arp_from(2)]
