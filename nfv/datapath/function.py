"""The contract between the packet loop (nfv.datapath.tpacket) and a network function.

A function sees every frame that arrives on either arm of its VNF and answers with a
verdict. Frames are writable buffers, so a function that rewrites (the load balancer's
NAT) does it in place without copying.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any, Protocol


class Side(IntEnum):
    """The arm a frame arrived on. Ingress faces the chain's source, egress its destination."""

    INGRESS = 0
    EGRESS = 1


class Verdict(IntEnum):
    FORWARD = 0  # send the (possibly rewritten) frame out of the other arm
    DROP = 1  # count it and let it go
    BOUNCE = 2  # send the frame, rewritten into a reply, back out of the arm it came in on


class NetworkFunction(Protocol):
    """What nfv.datapath.worker drives. One instance per VNF process, never shared by threads."""

    def process(
        self, frame: memoryview, length: int, side: Side, now: float
    ) -> tuple[Verdict, int]:
        """Judge one frame of `length` bytes; return the verdict and the length to send."""
        ...

    def tick(self, now: float) -> Iterable[tuple[Side, bytes]]:
        """Housekeeping about every 100 ms (timeouts, health probes); yields frames to emit."""
        ...

    def counters(self) -> dict[str, Any]:
        """Function-specific counters for the stats file; must be JSON-serialisable."""
        ...
