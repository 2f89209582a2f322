"""The process that runs one VNF inside its namespace: `python -m nfv.datapath.worker --kind ... `.

It builds the function named by `--kind` from the JSON config, runs the packet loop between the
two interfaces, and publishes its counters every second to the `--stats` file (written to a
temporary file and renamed, so readers never see half a file). SIGTERM or SIGINT stop it with
exit status 0 after a last stats write.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from common.files import write_atomic
from nfv.datapath.function import NetworkFunction
from nfv.datapath.tpacket import MODES, Dataplane

# kind -> (module, class); imported only when asked for, so a worker loads only its function.
KINDS: dict[str, tuple[str, str]] = {
    "forward": ("nfv.functions.forward", "Forward"),
    "firewall": ("nfv.functions.firewall", "Firewall"),
    "loadbalancer": ("nfv.functions.loadbalancer", "LoadBalancer"),
    "analyzer": ("nfv.functions.analyzer", "Analyzer"),
}
STATS_INTERVAL = 1.0
SETTLED_KEEP = 1000


def load_function(kind: str, config: dict[str, Any]) -> NetworkFunction:
    module, cls = KINDS[kind]
    return getattr(importlib.import_module(module), cls)(config)


class StatsWriter:
    """Builds the stats document from the dataplane and the function and writes it."""

    def __init__(self, path: Path, kind: str, dp: Dataplane, fn: NetworkFunction) -> None:
        self.path = path
        self.kind = kind
        self.dp = dp
        self.fn = fn
        self.started = time.time()
        self.last = 0.0
        self.settled_seq = 0
        self.settled: deque[list[Any]] = deque(maxlen=SETTLED_KEEP)

    def maybe_write(self, now: float) -> None:
        if now - self.last >= STATS_INTERVAL:
            self.last = now
            self.write()

    def write(self) -> None:
        drain = getattr(self.fn, "drain_settled", None)
        if drain is not None:
            for flow in drain():
                self.settled_seq += 1
                self.settled.append([self.settled_seq, *flow])
        ports = self.dp.stats()
        function = self.fn.counters()
        dropped = self.dp.dropped + sum(
            p["tx_errors"] + p["kernel_drops"] + p["truncated"] for p in ports.values()
        )
        malformed = sum(p["truncated"] for p in ports.values()) + int(function.get("malformed", 0))
        doc: dict[str, Any] = {
            "kind": self.kind,
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "mode": self.dp.mode,
            "compiled": self.dp.compiled,
            "xdp_attach": self.dp.xdp_attach,
            "xdp_unavailable": self.dp.xdp_unavailable,
            "ports": ports,
            "dropped": dropped,
            "bounced": self.dp.bounced,
            "malformed": malformed,
            "function": function,
        }
        if drain is not None:
            # [seq, proto, src, sport, dst, dport]; readers remember the last seq they handled
            doc["settled"] = list(self.settled)
        write_atomic(self.path, json.dumps(doc, separators=(",", ":")))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m nfv.datapath.worker", description=__doc__)
    ap.add_argument("--kind", required=True, choices=sorted(KINDS))
    ap.add_argument("--config", required=True, type=Path, help="JSON: the function's config")
    ap.add_argument("--ingress", required=True, help="interface facing the chain's source")
    ap.add_argument("--egress", required=True, help="interface facing the chain's destination")
    ap.add_argument("--stats", required=True, type=Path, help="JSON file rewritten every second")
    ap.add_argument("--mode", default=os.environ.get("NFV_MODE", "auto"), choices=MODES,
                    help="receive and send path (auto: AF_XDP where available, else ring); "
                         "default $NFV_MODE, which benchmarks set to compare paths")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = json.loads(args.config.read_text()) if args.config.stat().st_size else {}
        if args.kind == "analyzer":
            config.setdefault("export_path", str(args.stats.with_suffix(".flows.jsonl")))
        fn = load_function(args.kind, config)
        dp = Dataplane(fn, args.ingress, args.egress, mode=args.mode)
    except (OSError, ValueError, ImportError) as exc:
        print(f"nfv.datapath.worker: {args.kind}: {exc}", file=sys.stderr)
        return 1
    writer = StatsWriter(args.stats, args.kind, dp, fn)

    def stop(_signum: int, _frame: object) -> None:
        dp.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"nfv.datapath.worker: {args.kind} pid {os.getpid()} "
        f"{args.ingress} <-> {args.egress} ({dp.mode}{' ' + dp.xdp_attach if dp.xdp_attach else ''}"
        f"{', compiled' if dp.compiled else ''}"
        f"{f'; no AF_XDP: {dp.xdp_unavailable}' if dp.xdp_unavailable else ''})",
        file=sys.stderr,
        flush=True,
    )
    try:
        writer.write()
        dp.run(on_tick=writer.maybe_write)
        close = getattr(fn, "close", None)
        if close is not None:
            close()  # the analyzer exports the flows still open
        writer.write()
    finally:
        dp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
