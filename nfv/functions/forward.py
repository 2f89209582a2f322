"""A function that forwards every frame untouched: the baseline for packet-rate benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nfv.datapath.function import Side, Verdict


class Forward:
    """Implements nfv.functions.base.NetworkFunction; counts frames per arm and nothing else."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.frames = [0, 0]

    def process(
        self, frame: memoryview, length: int, side: Side, now: float
    ) -> tuple[Verdict, int]:
        self.frames[side] += 1
        return Verdict.FORWARD, length

    def tick(self, now: float) -> Iterable[tuple[Side, bytes]]:
        return ()

    def counters(self) -> dict[str, Any]:
        return {"from_ingress": self.frames[0], "from_egress": self.frames[1]}
