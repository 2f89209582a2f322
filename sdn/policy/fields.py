"""Field types of the policy schema: names, protocols, addresses, ports, rates — each
parsed from what a person writes and checked, with a reason when it is wrong."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    StrictInt,
)

from common.units import format_port_range, parse_duration, parse_port_range, parse_rate, parse_size

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")


PROTO_NUMBERS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17}
BROADCAST = "255.255.255.255"
MIN_RATE_BPS = 1000  # a meter's unit
MAX_RATE_BPS = (2**32 - 1) * 1000  # a meter's 32-bit kbit/s


def _name(value: object) -> object:
    if isinstance(value, str) and not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return value


def _proto(value: object) -> object:
    """Normalise protocols: names stay names (``6`` -> ``'tcp'``), ``'any'`` -> ``None``."""
    if value is None or value == "any":
        return None
    if isinstance(value, str) and value.lower() in PROTO_NUMBERS:
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        names = {n: p for p, n in PROTO_NUMBERS.items()}
        return names.get(value, value)
    raise ValueError(f"invalid proto {value!r}: use tcp, udp, icmp, any or a number 0-255")


def _address(value: object) -> object:
    """A CIDR or bare IPv4 address (normalised to ``a.b.c.d/len``), or a host name."""
    if not isinstance(value, str):
        raise ValueError(f"invalid address {value!r}: use a CIDR, an IPv4 address or a host name")
    if NAME_PATTERN.fullmatch(value):
        return value
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"invalid address {value!r}: not a CIDR, an IPv4 address or a host name"
        ) from None
    if net.version != 4:
        raise ValueError(f"invalid address {value!r}: only IPv4 is supported")
    if str(net.network_address) != value.split("/")[0]:
        raise ValueError(f"invalid CIDR {value!r}: host bits are set (did you mean {net}?)")
    return str(net)


def _ipv4(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"invalid IPv4 address {value!r}: write it as a string like 10.0.0.1")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"invalid IPv4 address {value!r}") from None


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _mac(value: object) -> object:
    if not isinstance(value, str):
        # Unquoted 10:00:00:00:00:01 is a YAML 1.1 base-60 integer.
        raise ValueError(
            f"invalid MAC address: YAML read it as {value!r}; quote it, like '00:00:00:00:00:01'"
        )
    if not _MAC.fullmatch(value.lower()):
        raise ValueError(
            f"invalid MAC address {value!r}: expected 6 hex pairs, like 02:00:00:00:00:01"
        )
    return value.lower()


def _unicast_ipv4(value: object) -> object:
    """An address one host can own: not 0.0.0.0, broadcast, multicast, loopback or the
    reserved 240/4 (a VIP or a backend there would capture or lose traffic)."""
    text = _ipv4(value)
    address = ipaddress.IPv4Address(text)
    for kind, bad in (("unspecified", address.is_unspecified),
                      ("the broadcast address", address == ipaddress.IPv4Address(BROADCAST)),
                      ("multicast", address.is_multicast), ("loopback", address.is_loopback),
                      ("reserved", address.is_reserved)):
        if bad:
            raise ValueError(f"{text} is {kind}: a host's, VIP's or backend's address must "
                             "be a unicast address")
    return text


def _unicast_mac(value: object) -> object:
    text = _mac(value)
    if int(text[:2], 16) & 1 or text == "00:00:00:00:00:00":
        raise ValueError(f"{text} is a multicast, broadcast or null MAC: use a unicast one "
                         "(locally administered ones start 02:)")
    return text


def _rate(value: object) -> object:
    """A rate the switches can enforce: OpenFlow meters count kbit/s in 32 bits."""
    bits = parse_rate(value)  # type: ignore[arg-type]
    if not MIN_RATE_BPS <= bits <= MAX_RATE_BPS:
        raise ValueError(f"rate {value!r} out of range: 1kbit to {MAX_RATE_BPS // 10**12}tbit")
    return bits


def _single_port(value: object) -> object:
    lo, hi = parse_port_range(value)  # type: ignore[arg-type]
    if lo != hi:
        raise ValueError(f"expected a single port, not the range {value!r}")
    return lo


def parse_backend(value: object) -> object:
    """Backends may be written as plain IPs; they mean ``{ip: IP}``."""
    return {"ip": value} if isinstance(value, str) else value


def check_version(value: object) -> object:
    if type(value) is not int or value != SCHEMA_VERSION:  # not 1.0, '1' or true
        raise ValueError(
            f"unsupported policy version {value!r}: this controller understands "
            f"version {SCHEMA_VERSION}"
        )
    return value


Name = Annotated[str, BeforeValidator(_name)]


Proto = Annotated[Literal["tcp", "udp", "icmp"] | StrictInt | None, BeforeValidator(_proto)]


Address = Annotated[str, BeforeValidator(_address)]


IPv4 = Annotated[str, BeforeValidator(_ipv4)]


Mac = Annotated[str, BeforeValidator(_mac)]
UnicastIPv4 = Annotated[str, BeforeValidator(_unicast_ipv4)]
UnicastMac = Annotated[str, BeforeValidator(_unicast_mac)]


Rate = Annotated[int, BeforeValidator(_rate)]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


PortRange = Annotated[
    tuple[int, int],
    BeforeValidator(parse_port_range),
    PlainSerializer(lambda ports: ports[0] if ports[0] == ports[1] else format_port_range(ports)),
]


Port = Annotated[int, BeforeValidator(_single_port)]


Dpid = Annotated[StrictInt, Field(ge=0, lt=1 << 64)]
