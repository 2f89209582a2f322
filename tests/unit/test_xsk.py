"""AF_XDP detection and counters, without a kernel: the pieces that are pure logic."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from nfv.datapath import xsk
from nfv.datapath.arms import Arm
from nfv.datapath.function import Side


class FakePair:
    """Cumulative XDP_STATISTICS, as the kernel reports them."""

    def __init__(self) -> None:
        self.counts = {
            side: {"rx_dropped": 0, "rx_invalid_descs": 0, "rx_ring_full": 0,
                   "rx_fill_ring_empty_descs": 0, "tx_invalid_descs": 0, "tx_lost": 0}
            for side in (Side.INGRESS, Side.EGRESS)
        }  # fmt: skip

    def statistics(self, side: int) -> dict[str, int]:
        return dict(self.counts[side])


@pytest.fixture
def arm() -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield Arm("va", Side.EGRESS, sock)
    sock.close()


def test_kernel_counters_add_only_what_grew_since_the_last_read(arm: Arm) -> None:
    pair, counters = FakePair(), xsk.KernelCounters()
    c = pair.counts[Side.EGRESS]
    c.update(rx_dropped=3, rx_ring_full=2, tx_invalid_descs=1)
    counters.fold(pair, arm)
    assert (arm.stats.kernel_drops, arm.stats.tx_errors) == (5, 1)
    counters.fold(pair, arm)  # nothing new
    assert (arm.stats.kernel_drops, arm.stats.tx_errors) == (5, 1)
    c.update(rx_invalid_descs=4, tx_invalid_descs=3)
    pair.counts[Side.INGRESS]["rx_dropped"] = 100  # the other arm's are not this one's
    counters.fold(pair, arm)
    assert (arm.stats.kernel_drops, arm.stats.tx_errors) == (9, 3)


def test_a_fill_ring_running_dry_is_not_counted_twice(arm: Arm) -> None:
    """The kernel counts a frame it had no chunk for in rx_dropped and the empty fill ring
    in rx_fill_ring_empty_descs: one frame, one drop."""
    pair, counters = FakePair(), xsk.KernelCounters()
    pair.counts[Side.EGRESS].update(rx_dropped=7, rx_fill_ring_empty_descs=7)
    counters.fold(pair, arm)
    assert arm.stats.kernel_drops == 7


def test_open_pair_says_why_without_the_compiled_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xsk, "fast", None)
    assert xsk.open_pair("va", "vb") == (None, "the compiled module is not loaded")
    monkeypatch.setattr(xsk, "fast", object())
    pair, why = xsk.open_pair("va", "vb")
    assert pair is None and "libxdp" in why


def test_open_pair_turns_a_refusal_into_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        @staticmethod
        def XskPair(ingress: str, egress: str) -> None:
            raise OSError(f"AF_XDP XDP link on {ingress}: Operation not permitted")

    monkeypatch.setattr(xsk, "fast", Refusing)
    assert xsk.open_pair("va", "vb") == (None, "AF_XDP XDP link on va: Operation not permitted")
