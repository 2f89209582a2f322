"""Flow offload bookkeeping: which flows the VNFs declared settled, and what their bypass
rules counted. Pure (no I/O): the application feeds it worker reports, flow statistics
and flow-removed messages.

A worker lists settled flows in its stats file as `[seq, proto, src, sport, dst, dport]`,
`seq` counting up from 1 for each worker process (`started` tells processes apart). A flow
is taken once, when its `seq` is new; it is forgotten when its bypass idles out on a
switch, when its worker stops or is replaced (a new process has none of the old one's
connection state, and may run a new rule set), or when its VNF no longer offloads.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sdn.compile.chain_model import L4_PROTOS, Bypass, SettledFlow
from sdn.model.rules import MatchItems

ENDED_KEEP = 256  # ended bypasses /v1/offload still reports, newest last


@dataclass(frozen=True)
class WorkerReport:
    """One worker process's settled list, as its stats file had it."""

    vnf: str  # policy VNF name
    instance: str
    started: float  # the worker process's start time: a restart changes it
    entries: tuple[Sequence[Any], ...]


def settled_flow(vnf: str, entry: Sequence[Any]) -> SettledFlow | None:
    """A worker's `[seq, proto, src, sport, dst, dport]` as a `SettledFlow`; None for what
    a bypass cannot express exactly: anything but IPv4 TCP/UDP (ICMP has no ports to match,
    so its bypass would cover every ICMP packet between the two hosts), or a bad entry."""
    if len(entry) != 6:
        return None
    _, proto, src, sport, dst, dport = entry
    if proto not in L4_PROTOS or not all(
            isinstance(p, int) and 0 <= p <= 0xFFFF for p in (sport, dport)):
        return None
    try:
        addrs = [ipaddress.IPv4Address(a) for a in (src, dst)]
    except ValueError:
        return None
    return SettledFlow(vnf, proto, str(addrs[0]), sport, str(addrs[1]), dport)


@dataclass
class BypassStats:
    """The counters of one bypass's rules: (dpid, table, priority, match) -> (packets,
    bytes), the latest a flow-stats reply or the final flow-removed message gave."""

    bypass: Bypass
    rules: dict[tuple[int, int, int, MatchItems], tuple[int, int]] = field(
        default_factory=dict)
    ended: float | None = None  # wall-clock time the bypass left the wanted state

    def direction(self, items: MatchItems) -> str:
        """Forward rules match the client's address as source, before or after a load
        balancer alike (it rewrites the destination only)."""
        return "forward" if dict(items).get("ipv4_src") == self.bypass.flow[1] else "reverse"

    def to_json(self) -> dict[str, Any]:
        proto, src, sport, dst, dport = self.bypass.flow
        totals = {d: {"packets": 0, "bytes": 0} for d in ("forward", "reverse")}
        rules = []
        for (dpid, table, priority, items), (packets, nbytes) in sorted(
                self.rules.items(), key=repr):
            direction = self.direction(items)
            totals[direction]["packets"] += packets
            totals[direction]["bytes"] += nbytes
            rules.append({"switch": f"{dpid:016x}", "table": table, "priority": priority,
                          "direction": direction, "packets": packets, "bytes": nbytes})
        return {
            "chain": self.bypass.chain, "cookie": f"{self.bypass.cookie:#018x}",
            "flow": {"proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport},
            "settled_by": sorted({f.vnf for f in self.bypass.settled}),
            "state": "active" if self.ended is None else "ended", "ended": self.ended,
            **totals, "rules": rules,
        }


class OffloadTable:
    def __init__(self) -> None:
        self._workers: dict[str, tuple[float, int]] = {}  # instance -> (started, last seq)
        self._flows: dict[SettledFlow, tuple[str, float]] = {}  # -> (instance, started)
        self.active: dict[int, BypassStats] = {}  # cookie -> the bypass and its counters
        self.ended: OrderedDict[int, BypassStats] = OrderedDict()

    @property
    def flows(self) -> frozenset[SettledFlow]:
        return frozenset(self._flows)

    def update(self, reports: Iterable[WorkerReport], offloading: Container[str]) -> bool:
        """Take the reports of every running worker; True when the settled set changed.
        Only VNFs in `offloading` (the policy says `offload: true`) count."""
        before = set(self._flows)
        running: dict[str, float] = {}
        for report in reports:
            if report.vnf not in offloading:
                continue
            running[report.instance] = report.started
            started, last = self._workers.get(report.instance, (report.started, 0))
            if started != report.started:
                last = 0
            for entry in report.entries:
                if not entry or not isinstance(entry[0], int) or entry[0] <= last:
                    continue
                last = entry[0]
                flow = settled_flow(report.vnf, entry)
                if flow is not None:
                    self._flows[flow] = (report.instance, report.started)
            self._workers[report.instance] = (report.started, last)
        self._flows = {f: w for f, w in self._flows.items() if running.get(w[0]) == w[1]}
        self._workers = {i: w for i, w in self._workers.items() if i in running}
        return set(self._flows) != before

    def expire(self, cookie: int) -> bool:
        """A rule of the bypass `cookie` idled out: the flow has ended (or paused), so
        forget the reports behind it. True when that changed the settled set."""
        stats = self.active.get(cookie)
        if stats is None:
            return False
        gone = stats.bypass.settled & self._flows.keys()
        for flow in gone:
            del self._flows[flow]
        return bool(gone)

    def set_bypasses(self, bypasses: Iterable[Bypass], now: float | None = None) -> None:
        """The bypasses the switches should hold now; those that left are kept as ended."""
        wanted = {b.cookie: b for b in bypasses}
        for cookie in [c for c in self.active if c not in wanted]:
            stats = self.active.pop(cookie)
            stats.ended = time.time() if now is None else now
            self.ended[cookie] = stats
            self.ended.move_to_end(cookie)
        while len(self.ended) > ENDED_KEEP:
            self.ended.popitem(last=False)
        for cookie, bypass in wanted.items():
            stats = self.active.get(cookie)
            if stats is None:
                self.ended.pop(cookie, None)  # the same flow settled again
                self.active[cookie] = BypassStats(bypass)
            else:
                stats.bypass = bypass

    def record(self, cookie: int, dpid: int, table: int, priority: int, items: MatchItems,
               packets: int, nbytes: int) -> None:
        """Counters of one bypass rule (a switch keeps them while the rule lives)."""
        stats = self.active.get(cookie) or self.ended.get(cookie)
        if stats is not None:
            stats.rules[(dpid, table, priority, items)] = (packets, nbytes)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in (*self.active.values(), *self.ended.values())]
