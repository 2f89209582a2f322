"""`make demo`: the controller on a Mininet network, end to end, with a readable report.

Exits non-zero when any check fails. Needs root, Open vSwitch and Mininet (`make setup`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import SDNCTL, Controller, iperf3_tcp, network, ping_all  # noqa: E402
from topologies.sdn_topos import RingTopo  # noqa: E402


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)


def sdnctl(controller: Controller, *args: str) -> str:
    result = subprocess.run([str(SDNCTL), *args, "--api", controller.api],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"sdnctl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def main() -> int:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="sdn-demo-") as tmp:
        controller = Controller(Path(tmp) / "controller").start()
        try:
            run(controller, report)
        finally:
            controller.stop()
        errors = controller.errors()
        report.check(not errors, f"controller log free of errors ({len(errors)} found)")
    verdict = "FAILED: " + "; ".join(report.failures) if report.failures else "all checks passed"
    print(f"\n{verdict}")
    return 1 if report.failures else 0


def run(controller: Controller, report: Report) -> None:
    report.section("network: a ring of 4 switches, 2 hosts each (loops on purpose)")
    start = time.monotonic()
    with network(RingTopo(n=4, hosts_per_switch=2), controller) as net:
        print(f"  up and discovered in {time.monotonic() - start:.1f}s")
        print(sdnctl(controller, "policy", "apply", "-f", str(REPO / "examples/minimal.yaml")))

        report.section("all-pairs connectivity")
        start = time.monotonic()
        failures = ping_all(net)
        pairs = len(net.hosts) * (len(net.hosts) - 1)
        report.check(not failures, f"{pairs - len(failures)}/{pairs} host pairs reach each "
                                   f"other exactly once ({time.monotonic() - start:.1f}s)")

        report.section("what the controller sees")
        print(sdnctl(controller, "topo", "show"))
        h1, h8 = net.get("h1"), net.get("h8")
        print(sdnctl(controller, "path", h1.IP(), h8.IP()))

        report.section("TCP across the ring")
        bps = iperf3_tcp(h1, net.get("h5"), seconds=2)
        report.check(bps > 10e6, f"h1 -> h5 TCP {bps / 1e6:.0f} Mbit/s")


if __name__ == "__main__":
    sys.exit(main())
