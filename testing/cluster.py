"""A cluster of controllers on one machine, for tests and bench: controllers on a
throwaway etcd, and what to ask them (who leads, who is master where)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from testing.etcd import EtcdCluster
from testing.harness import REPO, SDNCTL, Controller, reap_vnfs, stop_process, wait_until

LEASE_TTL = 2


@contextmanager
def controllers(workdir: Path, etcd: EtcdCluster, size: int = 3,
                lease_ttl: int = LEASE_TTL) -> Iterator[list[Controller]]:
    """`size` controllers named c0, c1, ... on `etcd`; c0 starts first and leads. Each is
    stopped at the end (woken first if a test paused it), then any VNFs they placed."""
    with ExitStack() as stack:
        stack.callback(reap_vnfs)  # last: a cluster leaves its VNFs running, like one controller
        members = []
        for index in range(size):
            tls = (("--store-ca", str(etcd.tls.ca), "--store-cert", str(etcd.tls.cert),
                    "--store-key", str(etcd.tls.key)) if etcd.tls else ())
            ctl = Controller(workdir / f"c{index}", extra_args=(
                "--store", etcd.url, "--node", f"c{index}", "--lease-ttl", str(lease_ttl),
                *tls))
            ctl.start()
            stack.callback(_stop, ctl)
            members.append(ctl)
            if index == 0:
                wait_until(lambda ctl=ctl: status(ctl)["leading"], 10, what="c0 elected")
        yield members


def _stop(ctl: Controller) -> None:
    if ctl.proc is not None and ctl.proc.poll() is None:
        ctl.proc.send_signal(signal.SIGCONT)
        ctl.stop()


def status(ctl: Controller) -> dict:
    return ctl.get("/v1/cluster")


def leader_of(ctl: Controller) -> str | None:
    leader = status(ctl)["leader"]
    return leader["node"] if leader else None


def masters(ctl: Controller, node: str) -> int:
    """Switches at which `node` is master, as its member record (read through `ctl`)
    says."""
    for member in status(ctl)["controllers"]:
        if member["node"] == node:
            return sum(role == "master" for role in member["switches"].values())
    return 0


def history(ctl: Controller) -> list[dict]:
    return requests.get(f"http://{ctl.api}/v1/policy/history", timeout=10).json()


def udp_stream(net, src: str, dst: str, seconds: float, workdir: Path, rate: int = 1000):
    """A sequence-numbered UDP stream (bench.failover's sender and receiver); returns a
    function that waits for its end and gives (sent, received)."""
    result = workdir / f"stream-{src}-{dst}.json"
    result.unlink(missing_ok=True)
    Path(str(result) + ".ready").unlink(missing_ok=True)
    receiver = net.get(dst).popen([sys.executable, "-m", "bench.failover", "recv",
                                   str(seconds + 1.5), str(result)], cwd=str(REPO))
    wait_until(lambda: Path(str(result) + ".ready").exists(), 10, what="receiver ready")
    sender = net.get(src).popen([sys.executable, "-m", "bench.failover", "send",
                                 net.get(dst).IP(), str(rate), str(seconds)],
                                stdout=subprocess.PIPE, cwd=str(REPO))

    def finish() -> tuple[int, int]:
        out, _ = sender.communicate(timeout=seconds + 15)
        receiver.wait(timeout=20)
        sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
        return sent, json.loads(result.read_text())["unique"]
    return finish


def flow_mods(ctl: Controller) -> float:
    """FlowMods `ctl` has sent since it started."""
    return ctl.metric("sdn_flow_mods_total")


@contextmanager
def agent(workdir: Path, etcd: EtcdCluster, host: str = "host0") -> Iterator[subprocess.Popen]:
    """`sdnctl agent run` for this machine, stopped by its pid at the end (its VNFs keep
    running, as they would; `controllers` reaps them)."""
    tls = (["--store-ca", str(etcd.tls.ca), "--store-cert", str(etcd.tls.cert),
            "--store-key", str(etcd.tls.key)] if etcd.tls else [])
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "agent.log", "ab") as log:
        proc = subprocess.Popen([str(SDNCTL), "agent", "run", "--store", etcd.url, "--host",
                                 host, "--state-dir", str(workdir), *tls],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)
