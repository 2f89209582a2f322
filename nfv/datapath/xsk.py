"""AF_XDP arms of a VNF: whether this machine can have them, and their kernel counters.

The loop itself is C (`XskPair` in _xsk.c, built in by `make setup` where libxdp is installed).
A VNF asks for `auto`, the default: AF_XDP when the module has it and the kernel gives both arms
a socket and an XDP program (root, XDP sockets in the kernel), else the TPACKET rings; the
reason it fell back is kept for the VNF's stats and printed. Nothing to configure."""

from __future__ import annotations

from typing import Any

from nfv.datapath.arms import Arm
from nfv.datapath.compiled import fast


def open_pair(ingress: str, egress: str) -> tuple[Any, str]:
    """An XskPair on the two interfaces, or None and why not."""
    if fast is None:
        return None, "the compiled module is not loaded"
    if not hasattr(fast, "XskPair"):
        return None, "built without libxdp (make setup installs libxdp-dev)"
    try:
        return fast.XskPair(ingress, egress), ""
    except OSError as exc:
        return None, str(exc)


class KernelCounters:
    """Folds an arm's cumulative XDP_STATISTICS into its ArmStats as they grow."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, int]] = {}

    def fold(self, pair: Any, arm: Arm) -> None:
        s = pair.statistics(arm.side)
        drops = s["rx_dropped"] + s["rx_ring_full"] + s["rx_invalid_descs"]
        invalid = s["tx_invalid_descs"]
        last_drops, last_invalid = self._seen.get(arm.side, (0, 0))
        arm.stats.kernel_drops += drops - last_drops
        arm.stats.tx_errors += invalid - last_invalid
        self._seen[arm.side] = (drops, invalid)
