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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import write_atomic
from common.helper import nap
from nfv.host import netns
from nfv.host.cgroups import Cgroup, Limits
from nfv.host.instance import (
    Instance,
    default_worker,
    place,
    purge,
    status_of,
)
from nfv.host.leftovers import foreign_owner, reap_leftovers
from nfv.host.ovsdb import DEFAULT_REMOTE, Ovsdb
from nfv.host.spec import SIDES, STATUS_VERSION, StateCallback, VnfError, VnfSpec, VnfStatus
from nfv.host.supervisor import (
    Adopted,
    Backoff,
    State,
    is_fresh,
    log_tail,
    process_token,
    read_stats,
    spawn_in,
    terminate,
    worker_argv,
)

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path("/run/sdn-nfv")


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
        self._instances: dict[str, Instance] = {}
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
        owner = foreign_owner(self.run_dir, ns_name, self._token)
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
            purge(inst, self.ovsdb_remote)
            place(inst, self._token, self.ovsdb_remote)
            with self._lock:
                self._spawn(inst)
                self._instances[spec.instance] = inst
                status = self._status_of(inst)
        except BaseException:
            purge(inst, self.ovsdb_remote)
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
        if foreign_owner(self.run_dir, inst.netns, self._token) is not None:
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
            status = self._status_of(inst)
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
        purge(inst, self.ovsdb_remote)
        with self._lock:
            self._instances.pop(name, None)
            status = self._status_of(inst)
        self._notify([(status, previous)])
        self._publish()
        return status

    def stop_all(self) -> list[VnfStatus]:
        with self._lock:
            names = list(self._instances)
        return [self.stop(name) for name in names]

    def list(self) -> list[VnfStatus]:
        with self._lock:
            return [self._status_of(inst) for inst in self._instances.values()]

    def status(self, name: str) -> VnfStatus:
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                raise VnfError(f"no VNF instance named {name!r}")
            return self._status_of(inst)

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
        """Remove leftovers of VNFs whose namespace name starts with `prefix` (this
        runtime's by default), keeping what this or another live runtime manages."""
        prefix = self.netns_prefix if prefix is None else prefix
        with self._lock:
            live = {inst.netns for inst in self._instances.values()}
        return reap_leftovers(prefix, live, self.run_dir, self._token, self.ovsdb_remote)

    def _instance(self, spec: VnfSpec) -> Instance:
        ns_name = f"{self.netns_prefix}{spec.instance}"
        limits = Limits(spec.cpu, spec.memory)
        return Instance(
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

    # -- placement ----------------------------------------------------------------------

    # -- supervision --------------------------------------------------------------------

    def _spawn(self, inst: Instance) -> None:
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

    def _set_state(self, inst: Instance, state: State, error: str | None) -> None:
        inst.state = state
        inst.since = time.time()
        if error is not None:
            inst.last_error = error

    def _fail(self, inst: Instance, reason: str, now: float) -> None:
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

    def _check(self, inst: Instance, now: float) -> None:
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
                        events.append((self._status_of(inst), before))
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

    def _status_of(self, inst: Instance) -> VnfStatus:
        return status_of(inst, self.stale_after)

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


