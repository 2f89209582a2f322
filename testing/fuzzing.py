"""Malformed frames for the VNF fuzz tests (test support)."""

from __future__ import annotations

import random


def mutate(rng: random.Random, templates: list[bytes]) -> bytes:
    """A malformed or odd frame: random bytes, truncations, or header bytes flipped."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 80))
    base = bytearray(rng.choice(templates))
    if kind == 1:
        return bytes(base[: rng.randrange(0, len(base))])
    for _ in range(rng.randrange(1, 6)):
        base[rng.randrange(min(len(base), 60))] = rng.randrange(256)
    if kind == 3:
        base = base[: rng.randrange(14, len(base) + 1)]
    return bytes(base)
