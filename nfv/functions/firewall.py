"""A stateful firewall: ordered rules for new connections, conntrack for everything after.

Only the first packet of a connection (conntrack `CT_NEW`) is judged by the rules; replies and
established traffic pass on the strength of the connection entry, packets that do not fit their
connection's state (`CT_INVALID`) are dropped, and ICMP errors about known connections pass as
`CT_RELATED`. Frames that are not IP (ARP, LLDP...) and IPv6 neighbour discovery pass untouched.

Config (the `vnfs.<name>` section of the policy; see docs/policy.md):
`default` (allow|drop), `rules` (ordered, first match wins; each `{action: allow|deny|drop|reject,
proto, src, dst, src_port, dst_port, icmp_type}`), `new_conn_rate` (new connections per second per
source address), `offload` (collect settled flows for `drain_settled`). Extensions: `conntrack`
(`{max_entries, timeouts, tcp_loose}`, see nfv.functions.conntrack) and `log_rate` (drop log
lines per
second, default 5). Keys that describe the VNF's placement (type, switch, replicas, ...) are
ignored here.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TextIO

from common.contract import PLACEMENT_KEYS
from nfv.datapath.function import Side, Verdict
from nfv.datapath.packet import (
    FRAG_FIRST,
    FRAG_LATER,
    OK,
    PROTO_TCP,
    STATUS_NAMES,
    Parser,
)
from nfv.datapath.rewrite import build_icmp_unreachable, build_tcp_rst
from nfv.functions.conntrack import ConnTrack
from nfv.functions.conntrack_entry import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    ESTABLISHED,
    REPLIED,
)
from nfv.functions.firewall_rules import (
    ACTION_NAMES,
    ACTIONS,
    ALLOW,
    REJECT,
    RuleSet,
    compile_rule,
)

_CONFIG_KEYS = frozenset(("default", "rules", "new_conn_rate", "offload", "conntrack", "log_rate"))
# Keys of a policy's VNF entry that are about placement, not about this function.
_PLACEMENT_KEYS = PLACEMENT_KEYS | {"name", "image"}
_FORWARD, _DROP, _BOUNCE = Verdict.FORWARD, Verdict.DROP, Verdict.BOUNCE
_FRAG_MAX = 4096
_FRAG_TIMEOUT = 30.0
_BUCKETS_MAX = 65536
_SETTLED_MAX = 10000


class Firewall:
    """The firewall function (see the module docstring); a functions.base.NetworkFunction."""

    def __init__(self, config: dict[str, Any], log: TextIO | None = None) -> None:
        unknown = set(config) - _CONFIG_KEYS - _PLACEMENT_KEYS
        if unknown:
            raise ValueError(f"firewall: unknown config keys {sorted(unknown)}")
        default = str(config.get("default", "drop")).lower()
        if default not in ("allow", "drop"):
            raise ValueError(f"firewall: default must be allow or drop, not {default!r}")
        rules = config.get("rules") or []
        if not isinstance(rules, list):
            raise ValueError("firewall: rules must be a list")
        self.ruleset = RuleSet([compile_rule(i, r) for i, r in enumerate(rules)], ACTIONS[default])
        rate = config.get("new_conn_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))):
            raise ValueError("firewall: new_conn_rate must be a number")
        if rate is not None and rate <= 0:
            raise ValueError("firewall: new_conn_rate must be positive")
        self.rate = float(rate) if rate else 0.0
        self.offload = bool(config.get("offload", False))
        ct = dict(config.get("conntrack") or {})
        unknown = set(ct) - {"max_entries", "timeouts", "tcp_loose"}
        if unknown:
            raise ValueError(f"firewall: unknown conntrack keys {sorted(unknown)}")
        self.ct = ConnTrack(
            max_entries=int(ct.get("max_entries", 65536)),
            timeouts=ct.get("timeouts"),
            tcp_loose=bool(ct.get("tcp_loose", False)),
        )
        self.log_rate = int(config.get("log_rate", 5))
        self._log = log if log is not None else sys.stderr
        self._parser = Parser()
        self._buckets: dict[int, list[float]] = {}
        self._frags: OrderedDict[tuple, float] = OrderedDict()
        self._settled: list[tuple] = []
        self._log_second = -1
        self._log_left = 0
        n = len(self.ruleset.rules)
        self.rule_hits = [0] * n
        self.default_hits = 0
        self.allowed = self.bounced = 0
        self.invalid = self.denied = self.rate_limited = 0
        self.non_ip = self.untracked = self.established = self.related = 0
        self.fragments_orphaned = self.reject_failed = self.logs_suppressed = 0
        self.malformed_by_reason = [0] * len(STATUS_NAMES)
        # Established TCP segments the C ring loop forwards without calling process(); its
        # hits count as `established` (see _fast.c's FlowCache).
        self.flow_cache = self.ct.flow_cache()

    # --- the packet path -----------------------------------------------------------------------

    def process(
        self, frame: memoryview, length: int, side: Side, now: float
    ) -> tuple[Verdict, int]:
        # Each frame bumps exactly one outcome counter; the totals are sums (see counters()).
        p = self._parser
        status = p.parse(frame, length)
        if status != OK:
            self.malformed_by_reason[status] += 1
            return _DROP, length
        if p.ip_ver == 0:
            self.non_ip += 1
            return _FORWARD, length
        ct = self.ct
        info = ct.track(p, now)
        if info == CT_ESTABLISHED:
            self.established += 1
            if ct.settled and self.offload:
                self._settle()
            elif self.flow_cache is not None and ct.entry.state == ESTABLISHED:
                self.flow_cache.offer(ct.entry, ct.reply)
            return _FORWARD, length
        if info == CT_NEW:
            return self._new(frame, length, p, now)
        if info == CT_RELATED:
            self.related += 1
            return _FORWARD, length
        if info == CT_INVALID:
            self.invalid += 1
            return self._drop(p, "invalid", length, now)
        return self._untracked(p, length, now)

    def _new(self, frame: memoryview, length: int, p: Parser, now: float) -> tuple[Verdict, int]:
        action, idx = self.ruleset.decide(p)
        if idx < 0:
            self.default_hits += 1
        else:
            self.rule_hits[idx] += 1
        if action == ALLOW:
            if self.rate and not self._take_token(p.src, now):
                self.rate_limited += 1
                return self._drop(p, "rate", length, now)
            self.ct.confirm(now)
            if p.frag == FRAG_FIRST:
                self._remember_fragment(p, now)
            self.allowed += 1
            return _FORWARD, length
        if action == REJECT:
            n = build_tcp_rst(frame, p) if p.proto == PROTO_TCP else 0
            if n == 0 and p.proto != PROTO_TCP and p.frag != FRAG_LATER:
                n = build_icmp_unreachable(frame, p)
            if n:
                self.bounced += 1
                self._maybe_log(p, "reject", idx, now)
                return _BOUNCE, n
            self.reject_failed += 1
        self.denied += 1
        return self._drop(p, "deny", length, now, idx)

    def _untracked(self, p: Parser, length: int, now: float) -> tuple[Verdict, int]:
        """Non-first fragments follow their first fragment; ND and friends pass."""
        if p.frag == FRAG_LATER:
            key = (p.ip_ver, p.src, p.dst, p.frag_id, p.proto)
            until = self._frags.get(key)
            if until is None or until < now:
                self.fragments_orphaned += 1
                return self._drop(p, "fragment", length, now)
        self.untracked += 1
        return _FORWARD, length

    def _remember_fragment(self, p: Parser, now: float) -> None:
        frags = self._frags
        frags[(p.ip_ver, p.src, p.dst, p.frag_id, p.proto)] = now + _FRAG_TIMEOUT
        if len(frags) > _FRAG_MAX:
            frags.popitem(last=False)

    def _take_token(self, src: int, now: float) -> bool:
        """Token bucket per source: `rate` tokens a second, a burst of one second's worth."""
        b = self._buckets.get(src)
        if b is None:
            if len(self._buckets) >= _BUCKETS_MAX:
                self._prune_buckets(now)
            self._buckets[src] = [self.rate - 1.0, now]
            return True
        tokens = min(self.rate, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def _prune_buckets(self, now: float) -> None:
        """Forget sources whose bucket has refilled (they would start full anyway)."""
        rate = self.rate
        full = [s for s, (t, last) in self._buckets.items() if t + (now - last) * rate >= rate]
        for s in full:
            del self._buckets[s]
        if len(self._buckets) >= _BUCKETS_MAX:
            self._buckets.clear()

    def _settle(self) -> None:
        e = self.ct.entry
        if e is None or e.state not in (ESTABLISHED, REPLIED):
            return
        if len(self._settled) < _SETTLED_MAX:
            self._settled.append(e.describe())

    def _drop(
        self, p: Parser, reason: str, length: int, now: float, idx: int = -1
    ) -> tuple[Verdict, int]:
        self._maybe_log(p, reason, idx, now)
        return _DROP, length

    def _maybe_log(self, p: Parser, reason: str, idx: int, now: float) -> None:
        """At most `log_rate` lines a second; the rest are only counted."""
        second = int(now)
        if second != self._log_second:
            self._log_second = second
            self._log_left = self.log_rate
        if self._log_left <= 0:
            self.logs_suppressed += 1
            return
        self._log_left -= 1
        rule = f" rule=#{idx}" if idx >= 0 else ""
        self._log.write(
            f"firewall: {reason}{rule} proto={p.proto} "
            f"{_addr(p.ip_ver, p.src)}:{p.sport} -> {_addr(p.ip_ver, p.dst)}:{p.dport}\n"
        )

    # --- housekeeping ----------------------------------------------------------------------------

    def tick(self, now: float) -> Iterable[tuple[Side, bytes]]:
        self.ct.tick(now)
        frags = self._frags
        while frags:
            key, until = next(iter(frags.items()))
            if until >= now:
                break
            del frags[key]
        return ()

    def drain_settled(self) -> list[tuple]:
        """Connections that reached ESTABLISHED (TCP) or saw a reply (UDP/ICMP) since the last
        call, as (proto, src, sport, dst, dport) of the original direction; empty unless the
        config has `offload: true`."""
        out, self._settled = self._settled, []
        return out

    def counters(self) -> dict[str, Any]:
        """Totals: processed = forwarded + dropped + bounced;
        forwarded = established + related + allowed + non_ip + untracked;
        dropped = malformed + invalid + denied + rate_limited + fragments_orphaned."""
        malformed = sum(self.malformed_by_reason)
        established = self.established + (self.flow_cache.hits if self.flow_cache else 0)
        forwarded = established + self.related + self.allowed + self.non_ip + self.untracked
        dropped = (
            malformed + self.invalid + self.denied + self.rate_limited + self.fragments_orphaned
        )
        return {
            "processed": forwarded + dropped + self.bounced,
            "forwarded": forwarded,
            "dropped": dropped,
            "bounced": self.bounced,
            "malformed": malformed,
            "malformed_by_reason": {
                name: n for name, n in zip(STATUS_NAMES, self.malformed_by_reason, strict=True) if n
            },
            "invalid": self.invalid,
            "denied": self.denied,
            "rate_limited": self.rate_limited,
            "reject_failed": self.reject_failed,
            "fragments_orphaned": self.fragments_orphaned,
            "non_ip": self.non_ip,
            "untracked": self.untracked,
            "new": self.allowed + self.bounced + self.denied + self.rate_limited,
            "allowed": self.allowed,
            "established": established,
            "related": self.related,
            "default_hits": self.default_hits,
            "rules": [
                {"index": r.index, "action": ACTION_NAMES[r.action], "hits": self.rule_hits[i]}
                for i, r in enumerate(self.ruleset.rules)
            ],
            "logs_suppressed": self.logs_suppressed,
            "conntrack": self.ct.counters(),
        }


def _addr(ver: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if ver == 4 else ipaddress.IPv6Address(value))
