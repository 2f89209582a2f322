"""The traffic analyzer: a pass-through function that keeps per-flow records.

Records follow Zeek's conn.log (field names, ``history``, ``conn_state``) with IPFIX's
export model (``end_reason``: idle timeout, active timeout, end of connection by FIN or
RST). The side that sent a flow's first packet is its originator. TCP byte counts are the
sequence space each side covered, as Zeek's are: a retransmission is not counted twice.

Cost model: the per-packet path is a parse, one dict lookup and a handful of integer
updates on preallocated lists; it allocates nothing that outlives the packet except a new
flow's record. Timeouts are driven from ``tick()`` through a heap of deadlines that holds
one entry per flow; a packet never touches the heap, so an active flow is re-examined
only once per idle period. Aggregates that are not needed per packet (top talkers) are
folded in when a record is exported or when counters are read. Prometheus metrics are
produced at scrape time from a snapshot that ``tick()`` refreshes, so the packet loop
never takes the client library's locks.

Config keys (``vnfs.<name>`` in the policy, plus keys the worker may add):
``idle_timeout`` (default 15 s), ``active_timeout`` (default 60 s), ``export_path``
(JSON lines of finished records; optional), ``metrics_port`` (serve Prometheus metrics
on this port; optional, 0 picks a free port), ``metrics_addr`` (default 127.0.0.1),
``max_flows`` (default 262144; beyond it packets are counted but get no record).
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from itertools import count
from typing import IO, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.units import parse_duration
from nfv.datapath.function import Side, Verdict
from nfv.datapath.packet import FRAG_LATER, OK, STATUS_NAMES, Parser
from nfv.functions.flow_record import (
    ACK,
    EV_ACK,
    EV_DATA,
    EV_FIN,
    EV_RST,
    EVENT_TABLE,
    ICMP,
    ICMP6,
    PROTO_NAMES,
    SYN,
    TCP,
    FlowRecord,
    dscp_name,
    events_for,
    ip_text,
)

CLOSE_LINGER = 1.0  # seconds a FIN/RST-ended flow stays open for its last ACKs
STATS_PERIOD = 1.0  # seconds between rate/snapshot refreshes in tick()
RECENT_RECORDS = 1024
TOP_HOSTS_KEPT = 1000


EVENT_TABLE.extend(events_for(f) for f in range(256))


class Analyzer:
    """Pass-through flow meter; see the module docstring for the config keys."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.idle_timeout = parse_duration(config.get("idle_timeout", 15.0))
        self.active_timeout = parse_duration(config.get("active_timeout", 60.0))
        if self.idle_timeout <= 0 or self.active_timeout <= 0:
            raise ValueError("idle_timeout and active_timeout must be positive")
        self.max_flows = int(config.get("max_flows", 262144))
        # The packet loop's clock is monotonic; records carry wall-clock times like Zeek's.
        self.epoch_offset = time.time() - time.monotonic()
        self._flows: dict[tuple[Any, ...], tuple[FlowRecord, int]] = {}
        self._heap: list[tuple[float, int, FlowRecord]] = []
        self._seq = count()
        self._rng = random.Random()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_RECORDS)
        self._parser = Parser()
        self.frames = self.tracked = self.untracked = self.non_ip = 0
        self.malformed = [0] * len(STATUS_NAMES)
        self.flows_created = self.flows_active = 0
        self.exported = dict.fromkeys(("idle", "active", "fin", "rst", "shutdown"), 0)
        self._proto_pkts = [0] * 256
        self._proto_bytes = [0] * 256
        self._dscp_pkts = [0] * 64
        self._dscp_bytes = [0] * 64
        self._ethertypes: dict[int, int] = {}
        self._host_bytes: dict[tuple[int, int], int] = {}
        self._rate_mark: tuple[float, list[int], list[int]] | None = None
        self._dscp_rates: dict[str, dict[str, float]] = {}
        self._snapshot: dict[str, Any] = {}
        path = config.get("export_path")
        self._export: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115
        self.registry = CollectorRegistry()
        self.registry.register(_Metrics(self))
        self._server = None
        if config.get("metrics_port") is not None:
            self._server, _ = start_http_server(
                int(config["metrics_port"]),
                config.get("metrics_addr", "127.0.0.1"),
                registry=self.registry,
            )

    @property
    def metrics_port(self) -> int | None:
        """The port metrics are served on (useful when 0 was asked for)."""
        return self._server.server_port if self._server else None

    # -- the packet path ---------------------------------------------------------------

    def process(
        self, frame: memoryview, length: int, side: Side, now: float
    ) -> tuple[Verdict, int]:
        self.frames += 1
        p = self._parser
        status = p.parse(frame, length)
        if status != OK:
            self.malformed[status] += 1
            return Verdict.FORWARD, length
        if not p.ip_ver:
            self.non_ip += 1
            self._ethertypes[p.eth_type] = self._ethertypes.get(p.eth_type, 0) + 1
            return Verdict.FORWARD, length
        proto = p.proto
        l3 = p.l3_off
        # DSCP: the top six bits of the IPv4 TOS byte or of the IPv6 traffic class.
        dscp = frame[l3 + 1] >> 2 if p.ip_ver == 4 else (frame[l3] & 0x0F) << 2 | frame[l3 + 1] >> 6
        self._proto_pkts[proto] += 1
        self._proto_bytes[proto] += length
        self._dscp_pkts[dscp] += 1
        self._dscp_bytes[dscp] += length
        flags = p.tcp_flags
        # IPv6 keys carry 0x100 in the protocol so that they never meet an IPv4 key.
        kp = proto | 0x100 if p.ip_ver == 6 else proto
        hit = self._flows.get((kp, p.src, p.sport, p.dst, p.dport))
        if hit is not None and hit[0].closed_at and flags & (SYN | ACK) == SYN:
            self._finish(hit[0], self._closed_reason(hit[0]))  # port reuse: a new connection
            hit = None
        if hit is None:
            if self.flows_active >= self.max_flows:
                self.untracked += 1
                return Verdict.FORWARD, length
            hit = self._new_flow(p, dscp, now)
        rec, d = hit
        self.tracked += 1
        payload = p.payload_len if p.frag != FRAG_LATER else p.l4_len
        rec.pkts[d] += 1
        rec.l2_bytes[d] += length
        rec.ip_bytes[d] += p.ip_len
        rec.end = now
        ev = EV_DATA if payload else 0
        if proto != TCP:
            rec.payload[d] += payload
        else:
            # A fragment's payload has no place in sequence space: it is counted as is.
            rec.payload[d] += rec.tcp_bytes(d, p.tcp_seq, payload, flags) if not p.frag else payload
            rec.flags[d] |= flags
            # Zeek's "a" is a pure ACK: a segment with data counts as "d" only.
            ev |= EVENT_TABLE[flags] & ~EV_ACK if payload else EVENT_TABLE[flags]
        if ev & ~rec.events[d]:
            rec.note(ev, d)
            if not rec.closed_at and (
                (rec.events[0] | rec.events[1]) & EV_RST or rec.events[0] & rec.events[1] & EV_FIN
            ):
                rec.closed_at = now
                self._schedule(rec, now + CLOSE_LINGER)
        return Verdict.FORWARD, length

    def _new_flow(self, p: Parser, dscp: int, now: float) -> tuple[FlowRecord, int]:
        kp = p.proto | 0x100 if p.ip_ver == 6 else p.proto
        fwd = (kp, p.src, p.sport, p.dst, p.dport)
        rev = (kp, p.dst, p.dport, p.src, p.sport)
        uid = f"C{self._rng.getrandbits(64):016x}"
        # Zeek reports an ICMP flow's type and code in the port fields.
        icmp = p.proto in (ICMP, ICMP6)
        ports = (p.icmp_type, p.icmp_code) if icmp else (p.sport, p.dport)
        rec = FlowRecord(
            uid,
            p.ip_ver,
            p.proto,
            (p.src, ports[0]),
            (p.dst, ports[1]),
            dscp,
            now,
            (fwd, rev),
        )
        self.flows_created += 1
        self.flows_active += 1
        first = (rec, 0)
        self._flows[fwd] = first
        if rev != fwd:
            self._flows[rev] = (rec, 1)
        self._schedule(rec, self._deadline(rec)[0])
        return first

    # -- timeouts ----------------------------------------------------------------------

    def _schedule(self, rec: FlowRecord, due: float) -> None:
        """Give ``rec`` an earlier deadline; later entries for it become stale."""
        if rec.due and due >= rec.due:
            return
        rec.due = due
        heapq.heappush(self._heap, (due, next(self._seq), rec))

    def _closed_reason(self, rec: FlowRecord) -> str:
        return "rst" if (rec.events[0] | rec.events[1]) & EV_RST else "fin"

    def _deadline(self, rec: FlowRecord) -> tuple[float, str]:
        due, reason = rec.end + self.idle_timeout, "idle"
        if rec.start + self.active_timeout < due:
            due, reason = rec.start + self.active_timeout, "active"
        if rec.closed_at and rec.closed_at + CLOSE_LINGER < due:
            due, reason = rec.closed_at + CLOSE_LINGER, self._closed_reason(rec)
        return due, reason

    def tick(self, now: float) -> Iterable[tuple[Side, bytes]]:
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, rec = heapq.heappop(heap)
            if rec.due != due:
                continue
            rec.due = 0.0
            at, reason = self._deadline(rec)
            if at > now:
                self._schedule(rec, at)
            elif reason == "active":
                self._emit(rec, reason)
                rec.segment += 1
                rec.restart(now)
                self._schedule(rec, self._deadline(rec)[0])
            else:
                self._finish(rec, reason)
        if self._rate_mark is None or now - self._rate_mark[0] >= STATS_PERIOD:
            self._refresh(now)
        return ()

    def _finish(self, rec: FlowRecord, reason: str) -> None:
        """Export ``rec`` and forget it."""
        self._emit(rec, reason)
        self.flows_active -= 1
        rec.due = -1.0  # any heap entry left for it is stale
        for key in rec.keys:
            self._flows.pop(key, None)

    def _emit(self, rec: FlowRecord, reason: str) -> None:
        record = rec.to_dict(reason, self.epoch_offset)
        self.exported[reason] += 1
        self.recent.append(record)
        hosts = self._host_bytes
        for host, sent in (
            ((rec.ver, rec.orig_h), rec.l2_bytes[0]),
            ((rec.ver, rec.resp_h), rec.l2_bytes[1]),
        ):
            hosts[host] = hosts.get(host, 0) + sent
        if len(hosts) > 8 * TOP_HOSTS_KEPT:
            keep = sorted(hosts.items(), key=lambda kv: kv[1], reverse=True)[:TOP_HOSTS_KEPT]
            self._host_bytes = dict(keep)
        if self._export is not None:
            self._export.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Export every live flow (reason ``shutdown``) and release the file and port."""
        for rec, d in list(self._flows.values()):
            if d == 0:
                self._finish(rec, "shutdown")
        if self._export is not None:
            self._export.close()
            self._export = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- aggregates --------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """Per-DSCP rates over the last period, and the snapshot metrics are served from."""
        mark = self._rate_mark
        if mark is not None and now > mark[0]:
            dt = now - mark[0]
            self._dscp_rates = {
                dscp_name(c): {
                    "pps": (self._dscp_pkts[c] - mark[1][c]) / dt,
                    "bps": 8 * (self._dscp_bytes[c] - mark[2][c]) / dt,
                }
                for c in range(64)
                if self._dscp_pkts[c] != mark[1][c]
            }
        self._rate_mark = (now, list(self._dscp_pkts), list(self._dscp_bytes))
        self._snapshot = self.counters()

    def top_talkers(self, n: int = 10) -> list[dict[str, Any]]:
        """Hosts by bytes sent (frame bytes), finished and live flows together."""
        hosts = dict(self._host_bytes)
        for rec, d in self._flows.values():
            if d == 0:
                for host, sent in (
                    ((rec.ver, rec.orig_h), rec.l2_bytes[0]),
                    ((rec.ver, rec.resp_h), rec.l2_bytes[1]),
                ):
                    hosts[host] = hosts.get(host, 0) + sent
        ranked = sorted(hosts.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return [{"host": ip_text(*h), "bytes": b} for h, b in ranked if b]

    def counters(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "tracked": self.tracked,
            "untracked": self.untracked,
            "non_ip": self.non_ip,
            "malformed": sum(self.malformed),
            "malformed_by_reason": {STATUS_NAMES[i]: n for i, n in enumerate(self.malformed) if n},
            "flows_active": self.flows_active,
            "flows_created": self.flows_created,
            "flows_exported": dict(self.exported),
            "protocols": {
                PROTO_NAMES.get(p, str(p)): {
                    "packets": self._proto_pkts[p],
                    "bytes": self._proto_bytes[p],
                }
                for p in range(256)
                if self._proto_pkts[p]
            },
            "ethertypes": {f"0x{et:04x}": n for et, n in self._ethertypes.items()},
            "dscp": {
                dscp_name(c): {"packets": self._dscp_pkts[c], "bytes": self._dscp_bytes[c]}
                for c in range(64)
                if self._dscp_pkts[c]
            },
            "dscp_rates": self._dscp_rates,
            "top_talkers": self.top_talkers(),
        }


class _Metrics(Collector):
    """Prometheus view of the analyzer, built at scrape time from its last snapshot."""

    def __init__(self, analyzer: Analyzer) -> None:
        self._analyzer = analyzer

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        snap = self._analyzer._snapshot
        if not snap:
            return
        frames = CounterMetricFamily(
            "nfv_analyzer_frames", "Frames seen, by outcome", labels=["outcome"]
        )
        for outcome in ("tracked", "untracked", "non_ip", "malformed"):
            frames.add_metric([outcome], snap[outcome])
        yield frames
        yield GaugeMetricFamily(
            "nfv_analyzer_flows_active", "Flows being tracked", value=snap["flows_active"]
        )
        exported = CounterMetricFamily(
            "nfv_analyzer_flows_exported", "Flow records exported, by end reason", labels=["reason"]
        )
        for reason, n in snap["flows_exported"].items():
            exported.add_metric([reason], n)
        yield exported
        for unit in ("packets", "bytes"):
            fam = CounterMetricFamily(
                f"nfv_analyzer_protocol_{unit}", f"IP {unit} by protocol", labels=["proto"]
            )
            for name, v in snap["protocols"].items():
                fam.add_metric([name], v[unit])
            yield fam
            fam = CounterMetricFamily(
                f"nfv_analyzer_dscp_{unit}", f"IP {unit} by DSCP class", labels=["dscp"]
            )
            for name, v in snap["dscp"].items():
                fam.add_metric([name], v[unit])
            yield fam
        rates = GaugeMetricFamily(
            "nfv_analyzer_dscp_rate_bps",
            "Bit rate per DSCP class over the last period",
            labels=["dscp"],
        )
        for name, v in snap["dscp_rates"].items():
            rates.add_metric([name], v["bps"])
        yield rates
        talkers = GaugeMetricFamily(
            "nfv_analyzer_top_talker_bytes", "Bytes sent by the busiest hosts", labels=["host"]
        )
        for t in snap["top_talkers"]:
            talkers.add_metric([t["host"]], t["bytes"])
        yield talkers
