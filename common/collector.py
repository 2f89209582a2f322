"""Pausing Python's cyclic garbage collector around large, short-lived allocations.

A compile or an update plan builds large containers; with the collector running, every
young collection on the way re-traverses them (dozens per compile, most of its time at
fat-tree k=16). The callers that run them on a live controller pause it and let one
collection afterwards do the work. Process-wide, so only the I/O edges decide it, never
the pure code they call.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
