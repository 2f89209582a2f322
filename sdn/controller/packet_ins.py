"""Packet-ins in two classes: LLDP is handled the moment it is read; everything else (ARP,
host learning, misses) waits in a bounded queue that a worker drains, yielding now and
then. A flood of host traffic can delay or shed host packets, never discovery and link
liveness (LLDP read seconds late ages links out and leaves ports unsettled), and the
backlog hosts can build inside the controller is bounded."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from os_ken.lib import hub
from prometheus_client import Counter

from sdn.southbound.lldp import ETH_TYPE_LLDP

LOG = logging.getLogger(__name__)

QUEUE_LIMIT = 4096  # packet-ins other than LLDP waiting; beyond, the newest are dropped
YIELD_EVERY = 32  # the worker lets the event loop read (LLDP first) after this many
_LLDP = ETH_TYPE_LLDP.to_bytes(2, "big")

SHED = Counter("sdn_packet_in_shed_total",
               "Packet-ins other than LLDP dropped: more were waiting than the queue holds")

Handle = Callable[[int, int, int, bytes], None]
"""(dpid, in_port, table_id, frame) -> None"""


class PacketIns:
    def __init__(self, handle: Handle, limit: int = QUEUE_LIMIT) -> None:
        self._handle = handle
        self._limit = limit
        self._waiting: deque[tuple[int, int, int, bytes]] = deque()
        self._ready = hub.Event()

    def put(self, dpid: int, in_port: int, table_id: int, data: bytes) -> None:
        if data[12:14] == _LLDP:
            self._handle(dpid, in_port, table_id, data)
            return
        if len(self._waiting) >= self._limit:
            SHED.inc()
            return
        self._waiting.append((dpid, in_port, table_id, data))
        self._ready.set()

    def __len__(self) -> int:
        return len(self._waiting)

    def run(self) -> None:
        """The worker: a green thread for the controller's life."""
        while True:
            self._ready.wait()
            self._ready.clear()
            self.drain()

    def drain(self) -> None:
        handled = 0
        while self._waiting:
            try:
                self._handle(*self._waiting.popleft())
            except Exception:  # one bad frame must not stop every later one
                LOG.exception("packet-in handling failed")
            handled += 1
            if handled % YIELD_EVERY == 0:
                hub.sleep(0)
