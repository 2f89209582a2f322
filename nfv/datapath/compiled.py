"""The VNF hot path compiled from nfv/datapath/_fast.c by `make setup`, or None.

Without it (no compiler, or `NFV_PURE_PYTHON=1` in the environment, which benchmarks use to
measure the reference) the Python loop, parser and NAT run instead: the same frames give the
same results, only slower.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("NFV_PURE_PYTHON"):
        return None
    try:
        from nfv.datapath import _fast
    except ImportError:
        return None
    return _fast


fast = _load()
