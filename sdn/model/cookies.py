"""Cookies: every rule names the policy object it came from. The top byte says which kind
of object, the rest names it, so a rule read back from a switch can be traced to its source."""

from __future__ import annotations

import zlib

# Top byte of a cookie says which kind of object a rule came from; the rest names it.
COOKIE_CONTROL = 0x01
COOKIE_FLOOD = 0x02
COOKIE_ROUTE = 0x03
COOKIE_LEARN = 0x04
COOKIE_CLASS = 0x05
COOKIE_CHAIN = 0x06
COOKIE_ARP = 0x07
_COOKIE_BODY = (1 << 56) - 1
# Below COOKIE_CHAIN's kind byte, a second byte says what a chain rule does.
CHAIN_TAG = 0x01  # carries a steering tag to a VNF arm (shared by all chains)
CHAIN_PORT = 0x02  # table 0 at a VNF's arm
CHAIN_STEER = 0x03  # classifies or re-classifies one chain's traffic
CHAIN_BYPASS = 0x04  # an offloaded (settled) flow skipping VNFs; its stats are the flow's
CHAIN_HEALTH = 0x05  # a load balancer's health-check answers, back to the replica that asked
_CHAIN_SUB_SHIFT = 48


def cookie(kind: int, name: str | int) -> int:
    """A stable cookie for an object: its kind in the top byte, a hash of its name below."""
    body = name if isinstance(name, int) else zlib.crc32(name.encode())
    return (kind << 56) | (body & _COOKIE_BODY)


def cookie_kind(value: int) -> int:
    return value >> 56


def chain_cookie(sub_kind: int, name: str) -> int:
    """A COOKIE_CHAIN cookie: the sub-kind in the second byte, a hash of the name below."""
    return cookie(COOKIE_CHAIN, sub_kind << _CHAIN_SUB_SHIFT | zlib.crc32(name.encode()))


def chain_sub_kind(value: int) -> int | None:
    """The CHAIN_* sub-kind of a chain rule's cookie; None for other rules."""
    if cookie_kind(value) != COOKIE_CHAIN:
        return None
    return value >> _CHAIN_SUB_SHIFT & 0xFF


def chain_cookie_mask(sub_kind: int) -> tuple[int, int]:
    """(cookie, mask) that select every chain rule of one CHAIN_* sub-kind, as a flow-stats
    request or a delete filters them."""
    value = cookie(COOKIE_CHAIN, sub_kind << _CHAIN_SUB_SHIFT)
    return value, (1 << 64) - (1 << _CHAIN_SUB_SHIFT)
