"""A policy's canonical form: sorted, defaults filled in, split into named objects, so two
revisions compare by content and a diff names what changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_deep(v) for v in value]
    return value


def canonical_json(canonical: Mapping[str, Any]) -> str:
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"))


def policy_objects(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """Split a canonical policy into objects keyed ``routing``, ``topology``, ``host:h1``,
    ``class:voice``, ``vnf:fw``, ``chain:web``, in that order.

    Works on the canonical dict (not a :class:`Policy`) so stored revisions can be compared
    without re-parsing their source.
    """
    objects: dict[str, Any] = {
        "routing": canonical["routing"],
        "topology": canonical["topology"],
    }
    objects.update({f"host:{name}": host for name, host in canonical["hosts"].items()})
    objects.update({f"class:{c['name']}": c for c in canonical["classes"]})
    objects.update({f"vnf:{name}": vnf for name, vnf in canonical["vnfs"].items()})
    objects.update({f"chain:{c['name']}": c for c in canonical["chains"]})
    return objects


def object_id(key: str, obj: Any) -> int:
    """A 64-bit hash of an object's key and canonical form, never 0 nor all-ones
    (cookie 0 marks unmanaged flows and ``0xffff...`` is OpenFlow's wildcard)."""
    data = f"{key}\n{json.dumps(obj, sort_keys=True, separators=(',', ':'))}".encode()
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return h % ((1 << 64) - 2) + 1
