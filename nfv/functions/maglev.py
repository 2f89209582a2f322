"""Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.

Each backend owns a permutation of the table slots, ``(offset + j * skip) mod M`` for a
prime ``M``; backends take turns claiming their next still-free preferred slot until the
table is full. This gives every backend an almost equal share of slots and, when one
backend leaves, moves little more than that backend's share.

Weights use smooth credits (as Katran does): in every round each backend earns its
weight and claims a slot each time its credit reaches the largest weight, so a backend
of weight ``w`` ends up with ``w / sum(weights)`` of the table.

Speed: the probing for a free slot runs in C. A backend's candidate stream is
``itertools.compress(positions, map(free.__getitem__, positions_again))``, two lazy
copies of its permutation, so ``next()`` skips taken slots without Python bytecode.
A 65537-slot table populates in a few tens of milliseconds.

Hashes: a backend's ``offset``/``skip`` come from BLAKE2b of its key (only at rebuild,
so its cost does not matter, and it is stable across processes and replicas). Packets are
hashed with :func:`flow_hash`, ``zlib.crc32`` over the raw 5-tuple bytes: stdlib, C speed,
deterministic (unlike ``hash()`` of bytes), and well spread modulo a prime.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from itertools import compress
from typing import Generic, TypeVar

from common.contract import MAGLEV_DEFAULT_TABLE_SIZE as DEFAULT_TABLE_SIZE
from common.contract import is_prime

T = TypeVar("T")


def offset_skip(key: str, size: int) -> tuple[int, int]:
    """The start and stride of ``key``'s permutation over ``size`` slots."""
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    offset = int.from_bytes(digest[:8], "little") % size
    skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
    return offset, skip


def populate(keys: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """Return the table: slot -> index into ``keys``; all -1 when no backend has weight."""
    if not is_prime(size):
        raise ValueError(f"Maglev table size must be prime, got {size}")
    if len(keys) != len(weights):
        raise ValueError("keys and weights differ in length")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    table = [-1] * size
    live = [i for i, w in enumerate(weights) if w > 0]
    if not live:
        return table
    free = bytearray(b"\x01") * size
    wrap = size.__rmod__
    candidates = []
    for i in live:
        offset, skip = offset_skip(keys[i], size)
        span = range(offset, offset + skip * size, skip)
        candidates.append(compress(map(wrap, span), map(free.__getitem__, map(wrap, span))))
    live_weights = [weights[i] for i in live]
    top = max(live_weights)
    credit = [0] * len(live)
    filled = 0
    while True:
        for n, i in enumerate(live):
            credit[n] += live_weights[n]
            if credit[n] < top:
                continue
            credit[n] -= top
            slot = next(candidates[n])
            free[slot] = 0
            table[slot] = i
            filled += 1
            if filled == size:
                return table


def flow_hash(data: bytes | memoryview, seed: int = 0) -> int:
    """The per-packet hash: CRC32 of the raw 5-tuple bytes (see the module docstring)."""
    return zlib.crc32(data, seed)


class Maglev(Generic[T]):
    """An immutable lookup table over ``backends``; build a new one when they change."""

    __slots__ = ("backends", "index", "size", "slots")

    def __init__(
        self,
        backends: Sequence[T],
        keys: Sequence[str],
        weights: Sequence[int] | None = None,
        size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        self.backends: tuple[T, ...] = tuple(backends)
        self.size = size
        self.index = populate(keys, weights if weights is not None else [1] * len(keys), size)
        lookup = (*self.backends, None)  # index -1 -> None
        self.slots: list[T | None] = [lookup[i] for i in self.index]

    def lookup(self, h: int) -> T | None:
        """The backend owning hash ``h``, or None when the table is empty."""
        return self.slots[h % self.size]

    def share(self) -> dict[int, int]:
        """Slots per backend position, for balance checks and counters."""
        counts = dict.fromkeys(range(len(self.backends)), 0)
        for i in self.index:
            if i >= 0:
                counts[i] += 1
        return counts
