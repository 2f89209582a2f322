"""The host agent: places, supervises and reaps the VNFs assigned to this machine's
switches.

`Placer` brings a `Runtime` to a wanted set of instances; the controller drives one
in-process when it runs alone. In a cluster `sdnctl agent run --store etcd://...` runs
an `Agent` on every machine with switches: the leader writes assignments to etcd, the
agent places them and reports every instance's status back under its lease, so a dead
agent's VNFs read as gone. Controllers never fork VNFs themselves then, and a VNF keeps
its namespace and state through any controller takeover.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any

from common.contract import AGENTS_PREFIX, ASSIGNMENTS_PREFIX, VNF_STATUS_PREFIX
from common.etcd import Etcd, StoreUnavailable, delete, put
from nfv.host.ovsdb import Ovsdb, OvsdbError
from nfv.host.runtime import Runtime
from nfv.host.spec import VnfError, VnfSpec, VnfStatus

log = logging.getLogger("nfv.host.agent")
AGENT_TTL = 5  # seconds: a dead agent's VNFs read as gone this long after its last renewal
AGENT_INTERVAL = 0.5


class Placer:
    """Stops what is no longer wanted or has changed, takes over what an earlier runtime
    left running with the same spec (its state and all), starts the rest; the first pass
    then reaps what nobody wants."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.specs: dict[str, VnfSpec] = {}
        self.leftovers_reaped = False

    def reconcile(self, wanted: Mapping[str, VnfSpec],
                  on_place: Callable[[str], None] = lambda _instance: None,
                  on_error: Callable[[str, Exception], None] | None = None) -> None:
        """`on_place(instance)` runs before an instance is placed (the controller marks
        its arms as VNF ports). An instance that cannot be placed raises, or with
        `on_error` is reported there and the others go on (it is tried again next time)."""
        for instance, spec in list(self.specs.items()):
            if wanted.get(instance) != spec:
                self.runtime.stop(instance)
                del self.specs[instance]
        for instance, spec in wanted.items():
            if instance in self.specs:
                continue
            on_place(instance)
            try:
                self._place(instance, spec)
            except (VnfError, OSError) as exc:
                if on_error is None:
                    raise
                on_error(instance, exc)
        if not self.leftovers_reaped:
            reaped = self.runtime.reap()
            if any(reaped.values()):
                log.info("removed VNF leftovers of an earlier run: %s", reaped)
            self.leftovers_reaped = True


    def _place(self, instance: str, spec: VnfSpec) -> None:
        if not self.leftovers_reaped and self.runtime.adopt(spec) is not None:
            log.info("VNF %s (%s) on %s taken over, state and all", instance, spec.kind,
                     spec.switch)
        else:
            self.runtime.start(spec)
            log.info("VNF %s (%s) placed on %s", instance, spec.kind, spec.switch)
        self.specs[instance] = spec


def spec_to_json(spec: VnfSpec) -> dict[str, Any]:
    return {**asdict(spec), "config": dict(spec.config)}


def spec_from_json(data: Mapping[str, Any]) -> VnfSpec:
    """A spec as the leader wrote it; ValueError or TypeError when it is not one."""
    names = {f.name for f in fields(VnfSpec)}
    return VnfSpec(**{k: v for k, v in data.items() if k in names})


def status_from_json(data: Mapping[str, Any]) -> VnfStatus:
    names = {f.name for f in fields(VnfStatus)}
    return VnfStatus(**{k: data[k] for k in names})


class Agent:
    """One machine's agent on etcd: a tick every AGENT_INTERVAL seconds."""

    def __init__(self, etcd: Etcd, host: str, runtime: Runtime,
                 bridges: Callable[[], list[str]] | None = None) -> None:
        self.etcd = etcd
        self.host = host
        self.runtime = runtime
        self.placer = Placer(runtime)
        self.bridges = bridges or _OvsBridges()
        self.lease: int | None = None
        self._published: dict[str, Any] = {}
        self._failed: dict[str, str] = {}  # instance -> why it could not be placed
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except StoreUnavailable as exc:
                log.warning("store unreachable: %s (VNFs keep running)", exc)
            except OvsdbError as exc:
                log.warning("Open vSwitch unreachable: %s (VNFs keep running)", exc)
            except Exception:  # the loop must outlive any one tick
                log.exception("agent tick failed; trying again")
            self._stop.wait(AGENT_INTERVAL)

    def stop(self) -> None:
        """The VNFs stay: the next agent on this machine takes them over."""
        self._stop.set()

    def tick(self) -> None:
        if self.lease is None or self.etcd.keepalive(self.lease) <= 0:
            self.lease, _ttl = self.etcd.grant(AGENT_TTL)
            self._published = {}  # the keys went with the old lease
        self._publish(AGENTS_PREFIX + self.host, {"host": self.host, "bridges": self.bridges()})
        wanted = self._assignments()
        self.placer.reconcile(wanted, on_error=self._not_placed)
        self._failed = {i: why for i, why in self._failed.items() if i in wanted}
        running = {status.name: status for status in self.runtime.list()}
        for instance, status in running.items():
            self._publish(VNF_STATUS_PREFIX + instance, {**status.to_dict(), "host": self.host,
                                                         "agent_pid": os.getpid()})
        for key in [k for k in self._published if k.startswith(VNF_STATUS_PREFIX)
                    and k[len(VNF_STATUS_PREFIX):] not in running]:
            self.etcd.txn([], [delete(key)])
            del self._published[key]

    def _not_placed(self, instance: str, exc: Exception) -> None:
        """Tried again every tick; said once per reason."""
        if self._failed.get(instance) != str(exc):
            log.warning("VNF %s not placed (trying again): %s", instance, exc)
            self._failed[instance] = str(exc)

    def _assignments(self) -> dict[str, VnfSpec]:
        prefix = f"{ASSIGNMENTS_PREFIX}{self.host}/"
        wanted = {}
        for entry in self.etcd.get_prefix(prefix):
            instance = entry.key[len(prefix):]
            try:
                wanted[instance] = spec_from_json(json.loads(entry.value))
            except (ValueError, TypeError) as exc:
                log.warning("assignment %s ignored: %s", entry.key, exc)
        return wanted

    def _publish(self, key: str, value: dict[str, Any]) -> None:
        """Write `key` under the agent's lease when it changed (statuses change with every
        stats sample, so at most once a tick)."""
        if self._published.get(key) != value:
            self.etcd.txn([], [put(key, value, self.lease or 0)])
            self._published[key] = value


class _OvsBridges:
    """This machine's Open vSwitch bridges, over one OVSDB connection kept open (a new
    one per tick would fetch the schema every half second)."""

    def __init__(self) -> None:
        self._db: Ovsdb | None = None

    def __call__(self) -> list[str]:
        if self._db is None:
            self._db = Ovsdb()
        try:
            return sorted(self._db.bridges())
        except OvsdbError:
            self._db.close()
            self._db = None
            raise
