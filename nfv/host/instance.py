"""One placed VNF instance: its record, how it is put on the host (namespace, veths on
the switch, cgroup) and taken off again, and the status it reports."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.files import write_atomic
from common.helper import nap
from nfv.host import netns
from nfv.host.cgroups import Cgroup
from nfv.host.ovsdb import Ovsdb
from nfv.host.spec import VnfSpec, VnfStatus
from nfv.host.supervisor import (
    State,
    StatsSample,
    Worker,
    is_fresh,
    kill_pids,
    rates,
)

# external_ids on our OVS ports: how reap() recognises them after a crash
EXT_NETNS = "sdn-nfv-netns"
EXT_VNF = "sdn-nfv-vnf"
EXT_ARM = "sdn-nfv-arm"
EXT_OWNER = "sdn-nfv-owner"  # process token of the runtime that placed it


@dataclass
class Instance:
    spec: VnfSpec
    netns: str
    arms: dict[str, netns.ArmNames]
    dir: Path
    cgroup: Cgroup | None
    ports: dict[str, int] = field(default_factory=dict)
    proc: Worker | None = None
    state: State = State.STARTING
    since: float = field(default_factory=time.time)
    spawned: float = 0.0
    restarts: int = 0
    failures: int = 0
    restart_at: float = 0.0
    prev: StatsSample | None = None
    last: StatsSample | None = None
    last_error: str | None = None

    @property
    def stats_path(self) -> Path:
        return self.dir / "stats.json"

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "worker.log"

    @property
    def owner_path(self) -> Path:
        return self.dir / "owner"


def default_worker() -> list[str]:
    """`python -m nfv.datapath.worker`, or the command in $SDN_VNF_WORKER (a test double, say)."""
    override = os.environ.get("SDN_VNF_WORKER")
    return shlex.split(override) if override else [sys.executable, "-m", "nfv.datapath.worker"]


def place(inst: Instance, token: str, ovsdb_remote: str) -> None:
    """Make `inst` exist on this host: its run directory, namespace, veths on the switch
    (marked with who placed them), cgroup."""
    spec = inst.spec
    inst.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(inst.owner_path, token)
    write_atomic(inst.config_path, json.dumps(dict(spec.config), indent=2, sort_keys=True))
    netns.setup_arms(inst.netns, list(inst.arms.values()), spec.mtu)
    ids = {EXT_NETNS: inst.netns, EXT_VNF: spec.instance, EXT_OWNER: token}
    with Ovsdb(ovsdb_remote) as db:
        ofports = db.add_ports(spec.switch, {
            arm.outside: {**ids, EXT_ARM: side} for side, arm in inst.arms.items()
        })
    inst.ports = {side: ofports[arm.outside] for side, arm in inst.arms.items()}
    if inst.cgroup is not None:
        inst.cgroup.create()


def purge(inst: Instance, ovsdb_remote: str) -> None:
    """Remove whatever exists of `inst`; safe on partial placements and leftovers."""
    if inst.netns in netns.list_netns(inst.netns):
        kill_pids(netns.netns_pids(inst.netns))
    outside = [arm.outside for arm in inst.arms.values()]
    with Ovsdb(ovsdb_remote) as db:
        db.del_ports(outside)
    netns.remove_netns(inst.netns)  # takes the veths inside, and so their peers, along
    netns.delete_links_helper(lingering(outside + [a.peer for a in inst.arms.values()]))
    if inst.cgroup is not None and inst.cgroup.exists():
        kill_pids(inst.cgroup.pids())
        inst.cgroup.remove()
    shutil.rmtree(inst.dir, ignore_errors=True)


def lingering(links: Sequence[str], wait: float = 1.0) -> list[str]:
    """Links still present after `wait` s: the kernel frees a dead namespace's veths
    asynchronously; only the ones that stay need an explicit delete."""
    deadline = time.monotonic() + wait
    while True:
        left = [name for name in links if netns.link_exists(name)]
        if not left or time.monotonic() >= deadline:
            return left
        nap(0.02)


def status_of(inst: Instance, stale_after: float) -> VnfStatus:
    spec, last = inst.spec, inst.last
    rx_pps, tx_pps = rates(inst.prev, last)
    alive = inst.proc is not None and inst.proc.poll() is None
    return VnfStatus(
        name=spec.instance,
        vnf=spec.name,
        replica=spec.replica,
        kind=spec.kind,
        state=inst.state.value,
        healthy=inst.state == State.RUNNING and alive
        and is_fresh(last, time.time(), stale_after),
        failure_mode=spec.failure_mode,
        netns=inst.netns,
        switch=spec.switch,
        ports=dict(inst.ports),
        interfaces={side: arm.outside for side, arm in inst.arms.items()},
        pid=inst.proc.pid if alive and inst.proc is not None else None,
        restarts=inst.restarts,
        since=inst.since,
        rx_pps=round(rx_pps, 1),
        tx_pps=round(tx_pps, 1),
        rx_packets=last.rx_packets if last else 0,
        tx_packets=last.tx_packets if last else 0,
        drops=last.dropped if last else 0,
        malformed=last.malformed if last else 0,
        stats_updated=last.updated if last else None,
        stats_file=str(inst.stats_path),
        cpu=spec.cpu,
        memory=spec.memory,
        last_error=inst.last_error,
    )
