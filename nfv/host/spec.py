"""What the runtime places and reports: a VNF instance's spec (kind, switch, config,
limits), its name, and its published status."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from common.contract import VNF_KINDS
from nfv.host.cgroups import Limits
from nfv.host.supervisor import (
    State,
)

FAILURE_MODES = ("open", "closed")
SIDES = ("ingress", "egress")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
STATUS_VERSION = 1


class VnfError(RuntimeError):
    """A VNF could not be placed, or the request names an unknown VNF."""


@dataclass(frozen=True)
class VnfSpec:
    """What to run: the policy's VNF entry, resolved to one replica on one bridge."""

    name: str
    kind: str
    switch: str  # the Open vSwitch bridge (Mininet names it like the switch: s1)
    config: Mapping[str, Any] = field(default_factory=dict)  # function-specific keys
    cpu: float | None = None  # cores
    memory: int | None = None  # bytes
    failure_mode: str = "closed"
    replica: int | None = None  # None for a VNF with a single replica
    mtu: int = 1500

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"VNF name {self.name!r} must match {NAME_RE.pattern}")
        if self.kind not in VNF_KINDS:
            raise ValueError(f"VNF kind {self.kind!r} is not one of {', '.join(VNF_KINDS)}")
        if self.failure_mode not in FAILURE_MODES:
            raise ValueError(f"failure_mode {self.failure_mode!r} is not open or closed")
        if self.replica is not None and self.replica < 0:
            raise ValueError(f"replica index must be >= 0, got {self.replica}")
        Limits(self.cpu, self.memory)  # validates

    @property
    def instance(self) -> str:
        return instance_name(self.name, self.replica)


def instance_name(name: str, replica: int | None) -> str:
    """The instance id: the VNF's name, plus `-<replica>` for replicated VNFs."""
    return name if replica is None else f"{name}-{replica}"


@dataclass
class VnfStatus:
    """One instance as the runtime sees it; `to_dict()` is the status file's entry."""

    name: str  # instance id
    vnf: str  # the policy's VNF name
    replica: int | None
    kind: str
    state: str
    healthy: bool
    failure_mode: str
    netns: str
    switch: str
    ports: dict[str, int]  # arm -> OpenFlow port number on `switch`
    interfaces: dict[str, str]  # arm -> switch-side interface (= OVS port) name
    pid: int | None
    restarts: int
    since: float  # when the current state began (epoch seconds)
    rx_pps: float
    tx_pps: float
    rx_packets: int
    tx_packets: int
    drops: int
    malformed: int
    stats_updated: float | None
    stats_file: str
    cpu: float | None
    memory: int | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


StateCallback = Callable[[VnfStatus, State], None]
