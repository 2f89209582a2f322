"""The VNF runtime: places VNF instances (namespace, veths to a switch, cgroup, worker
process), supervises them, and removes every trace of them again.

One `Runtime` manages many instances. `start()` does the placement synchronously and
returns as soon as the switch ports exist (the controller needs their OpenFlow port
numbers to steer traffic); a monitor thread then watches each worker, restarts it with
backoff when it dies, publishes the status of all instances to a JSON file, and reports
state changes to callbacks (the controller applies fail-open/fail-closed on them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.files import write_atomic
from common.helper import nap
from nfv.host import netns
from nfv.host.cgroups import Cgroup, Limits, leftover_groups
from nfv.host.ovsdb import DEFAULT_REMOTE, Ovsdb
from nfv.host.supervisor import (
    Adopted,
    Backoff,
    State,
    StatsSample,
    Worker,
    is_fresh,
    kill_pids,
    log_tail,
    process_token,
    rates,
    read_stats,
    spawn_in,
    terminate,
    token_alive,
    worker_argv,
)

log = logging.getLogger(__name__)

KINDS = ("forward", "firewall", "loadbalancer", "analyzer")
FAILURE_MODES = ("open", "closed")
SIDES = ("ingress", "egress")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DEFAULT_RUN_DIR = Path("/run/sdn-nfv")
STATUS_VERSION = 1
# external_ids on our OVS ports: how reap() recognises them after a crash
EXT_NETNS = "sdn-nfv-netns"
EXT_VNF = "sdn-nfv-vnf"
EXT_ARM = "sdn-nfv-arm"
EXT_OWNER = "sdn-nfv-owner"  # process token of the runtime that placed it


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
        if self.kind not in KINDS:
            raise ValueError(f"VNF kind {self.kind!r} is not one of {', '.join(KINDS)}")
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


@dataclass
class _Instance:
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


class Runtime:
    """Places and supervises VNF instances; use as a context manager to stop them all."""

    def __init__(
        self,
        *,
        status_file: Path | None = None,
        run_dir: Path = DEFAULT_RUN_DIR,
        netns_prefix: str = "vnf-",
        port_prefix: str = "v",
        ovsdb_remote: str = DEFAULT_REMOTE,
        worker: Sequence[str] | None = None,
        backoff: Backoff | None = None,
        poll_interval: float = 0.5,
        stale_after: float = 3.0,
        start_timeout: float = 10.0,
    ) -> None:
        self.status_file = status_file
        self.run_dir = run_dir
        self.netns_prefix = netns_prefix
        self.port_prefix = port_prefix
        self.ovsdb_remote = ovsdb_remote
        self.worker = list(worker) if worker else default_worker()
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.start_timeout = start_timeout
        self._instances: dict[str, _Instance] = {}
        self._placing: set[str] = set()  # names reserved by a start() in progress
        self._callbacks: list[StateCallback] = []
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = False
        self._token = process_token(os.getpid()) or str(os.getpid())
        self._thread = threading.Thread(target=self._monitor, name="vnf-runtime", daemon=True)
        self._thread.start()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------

    def on_state_change(self, callback: StateCallback) -> None:
        """Call `callback(status, previous_state)` after every state change.

        Runs on the monitor thread (or the caller of start/stop); must not block long.
        """
        with self._lock:
            self._callbacks.append(callback)

    def start(self, spec: VnfSpec) -> VnfStatus:
        """Place `spec` and spawn its worker; returns in state `starting` with ofports.

        Leftovers of an earlier crash with the same instance name are removed first. If
        any step fails, everything done so far is undone and the error is raised.
        """
        inst = self._instance(spec)
        ns_name = inst.netns
        owner = self._foreign_owner(ns_name)
        if owner is not None:
            raise VnfError(f"VNF {spec.instance} ({ns_name}) is run by another runtime, "
                           f"process {owner.partition(':')[0]}")
        with self._lock:
            if self._closing:
                raise VnfError("runtime is closing")
            if spec.instance in self._instances or spec.instance in self._placing:
                raise VnfError(f"VNF {spec.instance} is already running")
            self._placing.add(spec.instance)
        try:
            self._purge(inst)
            self._place(inst)
            with self._lock:
                self._spawn(inst)
                self._instances[spec.instance] = inst
                status = self._status(inst)
        except BaseException:
            self._purge(inst)
            raise
        finally:
            with self._lock:
                self._placing.discard(spec.instance)
        self._notify([(status, State.STOPPED)])
        self._wake.set()
        return status

    def adopt(self, spec: VnfSpec) -> VnfStatus | None:
        """Take over instance `spec` as a runtime that died left it: namespace, OVS ports
        on `spec.switch` and a live worker, placed with the same configuration. The worker
        keeps its state (a firewall's connections, a load balancer's NAT). None when there
        is no such instance to take over; `start` then places it anew."""
        inst = self._instance(spec)
        if self._foreign_owner(inst.netns) is not None:
            return None
        try:
            placed = json.loads(inst.config_path.read_text())
        except (OSError, ValueError):
            return None
        sample = read_stats(inst.stats_path)
        if (placed != json.loads(json.dumps(dict(spec.config))) or sample is None
                or sample.pid is None or sample.pid not in netns.netns_pids(inst.netns)):
            return None
        outside = [arm.outside for arm in inst.arms.values()]
        with Ovsdb(self.ovsdb_remote) as db:
            if any(db.port_bridge(name) != spec.switch for name in outside):
                return None
            ofports = db.ofports(outside)
        if ofports is None:
            return None
        with self._lock:
            if self._closing or spec.instance in self._instances or spec.instance in self._placing:
                return None
            write_atomic(inst.owner_path, self._token)
            inst.ports = {side: ofports[arm.outside] for side, arm in inst.arms.items()}
            inst.proc, inst.spawned, inst.last = Adopted(sample.pid), time.time(), sample
            self._set_state(inst, State.RUNNING, None)
            self._instances[spec.instance] = inst
            status = self._status(inst)
        log.info("VNF %s: took over worker %d", spec.instance, sample.pid)
        self._notify([(status, State.STOPPED)])
        self._wake.set()
        return status

    def stop(self, name: str) -> VnfStatus:
        """Stop instance `name` and remove its process, ports, veths, netns, cgroup, files."""
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                raise VnfError(f"no VNF instance named {name!r}")
            previous = inst.state
            self._set_state(inst, State.STOPPED, None)
            proc, inst.proc = inst.proc, None
        if proc is not None:
            terminate(proc)
        self._purge(inst)
        with self._lock:
            self._instances.pop(name, None)
            status = self._status(inst)
        self._notify([(status, previous)])
        self._publish()
        return status

    def stop_all(self) -> list[VnfStatus]:
        with self._lock:
            names = list(self._instances)
        return [self.stop(name) for name in names]

    def list(self) -> list[VnfStatus]:
        with self._lock:
            return [self._status(inst) for inst in self._instances.values()]

    def status(self, name: str) -> VnfStatus:
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                raise VnfError(f"no VNF instance named {name!r}")
            return self._status(inst)

    def cgroup(self, name: str) -> Cgroup | None:
        """The instance's cgroup (None without limits), e.g. to read its usage."""
        with self._lock:
            return self._instances[name].cgroup

    def wait_for(self, name: str, states: Sequence[State | str],
                 timeout: float) -> VnfStatus:
        """Block until instance `name` is in one of `states`; raise TimeoutError otherwise."""
        wanted = sorted(State(s).value for s in states)
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if status.state in wanted:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"VNF {name} is {status.state}, not {wanted} after {timeout} s")
            nap(0.05)

    def reap(self, prefix: str | None = None) -> dict[str, list[str]]:
        """Remove leftovers of VNFs whose namespace name starts with `prefix`.

        Recognised as ours: namespaces by name, OVS ports by their external_ids marker,
        cgroups and run directories by name. Kept: instances this runtime manages, and
        those of another runtime process that is still alive (its token is recorded in
        the run directory and on the OVS ports). Returns what was removed, by category.
        """
        prefix = self.netns_prefix if prefix is None else prefix
        if not prefix:
            raise ValueError("refusing to reap with an empty prefix")
        with self._lock:
            live = {inst.netns for inst in self._instances.values()}

        def owned(ns_name: str) -> bool:
            return (ns_name.startswith(prefix) and ns_name not in live
                    and self._foreign_owner(ns_name) is None)

        removed: dict[str, list[str]] = {"processes": [], "ports": [], "netns": [],
                                         "cgroups": [], "dirs": []}
        for ns_name in filter(owned, netns.list_netns(prefix)):
            removed["processes"] += [str(p) for p in kill_pids(netns.netns_pids(ns_name))]
        with Ovsdb(self.ovsdb_remote) as db:
            ports = [name for name, ids in db.ports_with_external_id(EXT_NETNS).items()
                     if owned(ids[EXT_NETNS]) and not self._alive_foreign(ids.get(EXT_OWNER))]
            removed["ports"] = db.del_ports(ports)
        for ns_name in filter(owned, netns.list_netns(prefix)):
            netns.remove_netns(ns_name)
            removed["netns"].append(ns_name)
        netns.delete_links_helper(self._lingering(ports))
        for group in leftover_groups(prefix):
            if owned(group.name):
                procs = [int(p) for p in (group / "cgroup.procs").read_text().split()]
                removed["processes"] += [str(p) for p in kill_pids(procs)]
                group.rmdir()
                removed["cgroups"].append(str(group))
        if self.run_dir.is_dir():
            for d in self.run_dir.iterdir():
                if d.is_dir() and owned(d.name):
                    shutil.rmtree(d, ignore_errors=True)
                    removed["dirs"].append(str(d))
        return removed

    def _instance(self, spec: VnfSpec) -> _Instance:
        ns_name = f"{self.netns_prefix}{spec.instance}"
        limits = Limits(spec.cpu, spec.memory)
        return _Instance(
            spec=spec,
            netns=ns_name,
            arms={side: netns.arm_names(spec.instance, side, self.port_prefix)
                  for side in SIDES},
            dir=self.run_dir / ns_name,
            cgroup=None if limits.empty() else Cgroup(ns_name, limits),
        )

    def close(self) -> None:
        """Stop every instance and the monitor thread."""
        with self._lock:
            self._closing = True
        self.stop_all()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._publish()

    def _alive_foreign(self, token: str | None) -> bool:
        return token is not None and token != self._token and token_alive(token)

    def _foreign_owner(self, ns_name: str) -> str | None:
        """The token of another live runtime that placed `ns_name`, if there is one."""
        try:
            token = (self.run_dir / ns_name / "owner").read_text().strip()
        except OSError:
            return None
        return token if self._alive_foreign(token) else None

    # -- placement ----------------------------------------------------------------------

    def _place(self, inst: _Instance) -> None:
        spec = inst.spec
        inst.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(inst.owner_path, self._token)
        write_atomic(inst.config_path, json.dumps(dict(spec.config), indent=2, sort_keys=True))
        netns.setup_arms(inst.netns, list(inst.arms.values()), spec.mtu)
        ids = {EXT_NETNS: inst.netns, EXT_VNF: spec.instance, EXT_OWNER: self._token}
        with Ovsdb(self.ovsdb_remote) as db:
            ofports = db.add_ports(spec.switch, {
                arm.outside: {**ids, EXT_ARM: side} for side, arm in inst.arms.items()
            })
        inst.ports = {side: ofports[arm.outside] for side, arm in inst.arms.items()}
        if inst.cgroup is not None:
            inst.cgroup.create()

    def _purge(self, inst: _Instance) -> None:
        """Remove whatever exists of `inst`; safe on partial placements and leftovers."""
        if inst.netns in netns.list_netns(inst.netns):
            kill_pids(netns.netns_pids(inst.netns))
        outside = [arm.outside for arm in inst.arms.values()]
        with Ovsdb(self.ovsdb_remote) as db:
            db.del_ports(outside)
        netns.remove_netns(inst.netns)  # takes the veths inside, and so their peers, along
        netns.delete_links_helper(self._lingering(outside + [a.peer for a in inst.arms.values()]))
        if inst.cgroup is not None and inst.cgroup.exists():
            kill_pids(inst.cgroup.pids())
            inst.cgroup.remove()
        shutil.rmtree(inst.dir, ignore_errors=True)

    @staticmethod
    def _lingering(links: Sequence[str], wait: float = 1.0) -> list[str]:
        """Links still present after `wait` s: the kernel frees a dead namespace's veths
        asynchronously; only the ones that stay need an explicit delete."""
        deadline = time.monotonic() + wait
        while True:
            left = [name for name in links if netns.link_exists(name)]
            if not left or time.monotonic() >= deadline:
                return left
            nap(0.02)

    # -- supervision --------------------------------------------------------------------

    def _spawn(self, inst: _Instance) -> None:
        """Start the worker (lock held). Old stats go first: fresh stats mean this process."""
        with contextlib.suppress(FileNotFoundError):
            inst.stats_path.unlink()
        argv = worker_argv(self.worker, inst.spec.kind, inst.config_path,
                           inst.arms["ingress"].inside, inst.arms["egress"].inside,
                           inst.stats_path)
        procs = [p / "cgroup.procs" for p in inst.cgroup.paths] if inst.cgroup else []
        with inst.log_path.open("ab") as logf:
            logf.write(f"--- {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
            logf.flush()
            inst.proc = spawn_in(argv, inst.netns, procs, logf)
        inst.spawned = time.time()
        inst.prev = inst.last = None

    def _set_state(self, inst: _Instance, state: State, error: str | None) -> None:
        inst.state = state
        inst.since = time.time()
        if error is not None:
            inst.last_error = error

    def _fail(self, inst: _Instance, reason: str, now: float) -> None:
        """The worker is gone or hopeless (lock held): schedule a restart or give up."""
        if inst.proc is not None:
            terminate(inst.proc, grace=0.5)
        tail = log_tail(inst.log_path)
        error = f"{reason}; log: {tail}" if tail else reason
        inst.failures += 1
        if self.backoff.gives_up(inst.failures):
            self._set_state(inst, State.FAILED, error)
            return
        inst.restart_at = now + self.backoff.delay(inst.failures)
        self._set_state(inst, State.BACKOFF, error)

    def _check(self, inst: _Instance, now: float) -> None:
        """One supervision step for one instance (lock held)."""
        sample = read_stats(inst.stats_path)
        if sample is not None and (inst.last is None or sample.updated != inst.last.updated):
            inst.prev, inst.last = inst.last, sample
        proc = inst.proc
        code = proc.poll() if proc is not None else None
        fresh = (is_fresh(inst.last, now, self.stale_after)
                 and proc is not None and inst.last is not None
                 and inst.last.pid in (None, proc.pid))
        if inst.state == State.STARTING:
            if code is not None:
                self._fail(inst, f"worker exited with code {code} while starting", now)
            elif fresh:
                self._set_state(inst, State.RUNNING, None)
            elif now - inst.spawned > self.start_timeout:
                self._fail(inst, f"no stats from the worker within {self.start_timeout} s", now)
        elif inst.state == State.RUNNING:
            if code is not None:
                self._fail(inst, f"worker exited with code {code}", now)
            elif not fresh:
                self._fail(inst, f"worker stats older than {self.stale_after} s", now)
            elif inst.failures and now - inst.since > self.backoff.stable_after:
                inst.failures = 0
        elif inst.state == State.BACKOFF and now >= inst.restart_at:
            try:
                self._spawn(inst)
            except OSError as e:
                self._fail(inst, f"cannot start the worker: {e}", now)
                return
            inst.restarts += 1
            self._set_state(inst, State.STARTING, None)

    def _monitor(self) -> None:
        while True:
            with self._lock:
                if self._closing and not self._instances:
                    return
                events = []
                for inst in self._instances.values():
                    if inst.state == State.STOPPED:
                        continue
                    before = inst.state
                    try:
                        self._check(inst, time.time())
                    except Exception:
                        log.exception("supervising VNF %s failed", inst.spec.instance)
                    if inst.state != before:
                        events.append((self._status(inst), before))
            self._notify(events)
            self._publish()
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _notify(self, events: Sequence[tuple[VnfStatus, State]]) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for status, previous in events:
            log.info("VNF %s: %s -> %s", status.name, previous.value, status.state)
            for callback in callbacks:
                try:
                    callback(status, previous)
                except Exception:
                    log.exception("state-change callback failed for VNF %s", status.name)

    # -- status -------------------------------------------------------------------------

    def _status(self, inst: _Instance) -> VnfStatus:
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
            and is_fresh(last, time.time(), self.stale_after),
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

    def status_document(self) -> dict[str, Any]:
        """What the status file holds (format version 1)."""
        return {
            "version": STATUS_VERSION,
            "updated": time.time(),
            "pid": os.getpid(),
            "owner": self._token,
            "vnfs": [s.to_dict() for s in self.list()],
        }

    def _publish(self) -> None:
        if self.status_file is None:
            return
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.status_file, json.dumps(self.status_document(), indent=1))
        except OSError:
            log.exception("cannot write VNF status to %s", self.status_file)
