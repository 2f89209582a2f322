"""Parsing of the human-friendly quantities used in policy files.

Rates, durations, sizes and port specs appear all over the policy; parsing them in one
place keeps their spelling (and their error messages) identical everywhere. Every parser
raises ``ValueError`` with a message that says what was expected, and never does I/O.
"""

from __future__ import annotations

import re

# ASCII digits only: int() and float() also read full-width digits (U+FF10-FF19).
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")

RATE_UNITS: dict[str, int] = {
    "": 1,
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
}
DURATION_UNITS: dict[str, float] = {
    "": 1.0,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
PORT_MIN, PORT_MAX = 1, 65535


def _reject_bool(value: object, what: str) -> None:
    # bool is an int subclass: `rate: true` must not silently mean 1 bit/s.
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number or a string, not a boolean")


def _split(value: object, what: str, units: dict, example: str) -> tuple[float, str]:
    """Split ``'1.5gbit'`` into ``(1.5, 'gbit')``; numbers come back with an empty unit."""
    _reject_bool(value, what)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{what} must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}")
        return float(value), ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a number or a string like {example!r}")
    m = _NUMBER_UNIT.match(value)
    if m is None:
        raise ValueError(
            f"invalid {what} {value!r}: expected a number and a unit, like {example!r}"
        )
    unit = m.group(2).lower()
    if unit not in units:
        known = ", ".join(u for u in units if u)
        raise ValueError(
            f"invalid {what} {value!r}: unknown unit {m.group(2)!r} (use one of {known})"
        )
    return float(m.group(1)), unit


def parse_rate(value: int | float | str) -> int:
    """Parse a rate to bit/s: ``'500kbit'``, ``'1.5gbit'``; plain numbers are bit/s.

    Only ``bit`` units are accepted: ``tc`` reads ``kbps`` as kilo*bytes*, so accepting it
    would silently mean something different to half of the readers.
    """
    number, unit = _split(value, "rate", RATE_UNITS, "20mbit")
    bits = round(number * RATE_UNITS[unit])
    if bits <= 0:
        raise ValueError(f"rate must be positive, got {value!r}")
    return bits


def parse_duration(value: int | float | str) -> float:
    """Parse a duration to seconds: ``'200ms'``, ``'1s'``, ``'5m'``; numbers are seconds."""
    number, unit = _split(value, "duration", DURATION_UNITS, "200ms")
    return number * DURATION_UNITS[unit]


def parse_size(value: int | str) -> int:
    """Parse a size to bytes: ``'256mb'`` (decimal), ``'1GiB'`` (binary); ints are bytes."""
    number, unit = _split(value, "size", SIZE_UNITS, "256mb")
    return round(number * SIZE_UNITS[unit])


def _port(text: str, spec: object) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid port {spec!r}: expected a number 1-65535 or a range 'lo-hi'")
    port = int(text)
    if not PORT_MIN <= port <= PORT_MAX:
        raise ValueError(f"port {port} out of range {PORT_MIN}-{PORT_MAX}")
    return port


def parse_port_range(value: int | str) -> tuple[int, int]:
    """Parse a port spec (``80``, ``'80'``, ``'1000-2000'``) to an inclusive ``(lo, hi)``."""
    _reject_bool(value, "port")
    if isinstance(value, int):
        port = _port(str(value), value)
        return port, port
    if not isinstance(value, str):
        raise ValueError(f"invalid port {value!r}: expected a number 1-65535 or a range 'lo-hi'")
    lo_text, sep, hi_text = value.strip().partition("-")
    lo = _port(lo_text.strip(), value)
    hi = _port(hi_text.strip(), value) if sep else lo
    if lo > hi:
        raise ValueError(f"invalid port range {value!r}: start {lo} is above end {hi}")
    return lo, hi


def format_port_range(ports: tuple[int, int]) -> str:
    """The inverse of :func:`parse_port_range`, for messages and docs."""
    lo, hi = ports
    return str(lo) if lo == hi else f"{lo}-{hi}"
