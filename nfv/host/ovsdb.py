"""A small synchronous Open vSwitch database client for attaching VNF arms to bridges.

Talks OVSDB (RFC 7047) over the database socket through the `ovs` Python IDL, the
library Open vSwitch itself ships, so product code never shells out to `ovs-vsctl`.
One `Ovsdb` object holds one IDL connection; every call runs the IDL loop until the
answer is in, so it can be used from plain threads as well as from os-ken's hub.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pyroute2.netlink.generic import GenericNetlinkSocket

with warnings.catch_warnings():  # ovs.poller imports eventlet, which warns on every import
    warnings.simplefilter("ignore")
    from ovs import jsonrpc, poller, stream
    from ovs.db import idl as ovs_idl

DEFAULT_REMOTE = "unix:/var/run/openvswitch/db.sock"
DB_NAME = "Open_vSwitch"

# Only what the runtime reads or writes: keeps the initial sync and the monitor small.
_COLUMNS: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "datapath_types", "iface_types"],
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "ofport", "error", "external_ids", "type"],
}

T = TypeVar("T")


class OvsdbError(RuntimeError):
    """The database refused a change, or an answer did not arrive in time."""


def _fetch_schema(remote: str, timeout: float) -> dict[str, Any]:
    """Ask the server for its schema, so the IDL matches whatever OVS version runs."""
    error, strm = stream.Stream.open_block(stream.Stream.open(remote), int(timeout * 1000))
    if error:
        raise OvsdbError(f"cannot connect to OVSDB at {remote}: error {error}")
    rpc = jsonrpc.Connection(strm)
    try:
        error, reply = rpc.transact_block(jsonrpc.Message.create_request("get_schema", [DB_NAME]))
        if error or reply.error:
            raise OvsdbError(f"get_schema failed on {remote}: {error or reply.error}")
        return reply.result
    finally:
        rpc.close()


class Ovsdb:
    """A connection to the local Open vSwitch database; use as a context manager."""

    def __init__(self, remote: str = DEFAULT_REMOTE, timeout: float = 10.0) -> None:
        self.remote = remote
        self.timeout = timeout
        helper = ovs_idl.SchemaHelper(schema_json=_fetch_schema(remote, timeout))
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        self._idl = ovs_idl.Idl(remote, helper)
        self._lock = threading.Lock()
        self._wait_until(lambda: self._idl.has_ever_connected() and self._synced(), "initial sync")

    def __enter__(self) -> Ovsdb:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._idl.close()

    # -- the IDL loop -------------------------------------------------------------------

    def _synced(self) -> bool:
        return bool(self._idl.tables["Open_vSwitch"].rows)

    def _wait_until(self, ready: Callable[[], T], what: str) -> T:
        """Run the IDL until `ready()` returns something truthy or the timeout passes."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._idl.run()
            result = ready()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OvsdbError(f"OVSDB at {self.remote}: timed out waiting for {what}")
            p = poller.Poller()
            self._idl.wait(p)
            p.timer_wait(int(min(remaining, 0.1) * 1000))
            p.block()

    def _commit(self, build: Callable[[ovs_idl.Transaction], None], what: str) -> None:
        txn = ovs_idl.Transaction(self._idl)
        build(txn)
        status = txn.commit_block()
        if status not in (ovs_idl.Transaction.SUCCESS, ovs_idl.Transaction.UNCHANGED):
            raise OvsdbError(f"OVSDB transaction '{what}' failed: {status} {txn.get_error()}")

    def _rows(self, table: str) -> Iterable[Any]:
        return self._idl.tables[table].rows.values()

    def _bridge(self, name: str) -> Any:
        for row in self._rows("Bridge"):
            if row.name == name:
                return row
        raise OvsdbError(f"no Open vSwitch bridge named {name!r}")

    # -- queries ------------------------------------------------------------------------

    def datapath_types(self) -> list[str]:
        """The datapath types this ovs-vswitchd was built with (not all may work here)."""
        with self._lock:
            self._idl.run()
            root = next(iter(self._rows("Open_vSwitch")))
            return sorted(root.datapath_types)

    def bridges(self) -> dict[str, str]:
        """Bridge name -> datapath type ('' means the default, 'system')."""
        with self._lock:
            self._idl.run()
            return {row.name: row.datapath_type for row in self._rows("Bridge")}

    def port_bridge(self, port: str) -> str | None:
        """The bridge a port is on, or None."""
        with self._lock:
            self._idl.run()
            for br in self._rows("Bridge"):
                if any(p.name == port for p in br.ports):
                    return br.name
            return None

    def ports_with_external_id(self, key: str) -> dict[str, dict[str, str]]:
        """Ports carrying external_ids[key], as port name -> its external_ids."""
        with self._lock:
            self._idl.run()
            return {
                row.name: dict(row.external_ids)
                for row in self._rows("Port")
                if key in row.external_ids
            }

    # -- changes ------------------------------------------------------------------------

    def add_ports(self, bridge: str, ports: Mapping[str, Mapping[str, str]]) -> dict[str, int]:
        """Attach existing Linux interfaces to `bridge` in one transaction; return ofports.

        `ports` maps interface name -> external_ids for both its Port and Interface row.
        Waits until ovs-vswitchd has opened every interface and assigned it an OpenFlow
        port number, because the controller steers traffic by those numbers.
        """
        with self._lock:
            self._idl.run()
            br = self._bridge(bridge)

            def build(txn: ovs_idl.Transaction) -> None:
                for name, ids in ports.items():
                    iface = txn.insert(self._idl.tables["Interface"])
                    iface.name = name
                    iface.external_ids = dict(ids)
                    port = txn.insert(self._idl.tables["Port"])
                    port.name = name
                    port.interfaces = [iface.uuid]
                    port.external_ids = dict(ids)
                    br.addvalue("ports", port.uuid)

            self._commit(build, f"add ports {sorted(ports)} to {bridge}")
            return self._wait_until(lambda: self._ofports(ports), f"ofports of {sorted(ports)}")

    def ofports(self, names: Iterable[str]) -> dict[str, int] | None:
        """OpenFlow port numbers of these interfaces; None unless every one has one."""
        with self._lock:
            self._idl.run()
            return self._ofports(names)

    def _ofports(self, names: Iterable[str]) -> dict[str, int] | None:
        wanted = set(names)
        found: dict[str, int] = {}
        for row in self._rows("Interface"):
            if row.name not in wanted or not row.ofport:
                continue
            ofport = row.ofport[0]
            if ofport == -1:
                error = row.error[0] if row.error else "unknown error"
                raise OvsdbError(f"ovs-vswitchd could not open interface {row.name}: {error}")
            found[row.name] = ofport
        return found if set(found) == wanted else None

    def add_bridge(self, name: str, datapath_type: str) -> None:
        """Create a bridge (no-op if it exists) with its internal port, like add-br."""
        with self._lock:
            self._idl.run()
            if any(row.name == name for row in self._rows("Bridge")):
                return
            root = next(iter(self._rows("Open_vSwitch")))

            def build(txn: ovs_idl.Transaction) -> None:
                iface = txn.insert(self._idl.tables["Interface"])
                iface.name, iface.type = name, "internal"
                port = txn.insert(self._idl.tables["Port"])
                port.name, port.interfaces = name, [iface.uuid]
                br = txn.insert(self._idl.tables["Bridge"])
                br.name, br.ports, br.datapath_type = name, [port.uuid], datapath_type
                root.addvalue("bridges", br.uuid)

            self._commit(build, f"add bridge {name}")

    def del_bridge(self, name: str) -> bool:
        """Delete a bridge and its ports; False if there was none."""
        with self._lock:
            self._idl.run()
            doomed = [row for row in self._rows("Bridge") if row.name == name]
            if not doomed:
                return False
            root = next(iter(self._rows("Open_vSwitch")))
            self._commit(lambda _txn: root.delvalue("bridges", doomed[0].uuid),
                         f"delete bridge {name}")
            return True

    def del_ports(self, names: Iterable[str]) -> list[str]:
        """Detach ports (from whatever bridge holds them); return the names really removed."""
        wanted = set(names)
        with self._lock:
            self._idl.run()
            doomed = [
                (br, port)
                for br in self._rows("Bridge")
                for port in br.ports
                if port.name in wanted
            ]
            if not doomed:
                return []

            def build(txn: ovs_idl.Transaction) -> None:
                for br, port in doomed:
                    br.delvalue("ports", port.uuid)

            self._commit(build, f"delete ports {sorted(wanted)}")
            return sorted(port.name for _, port in doomed)


def kernel_datapath_loaded() -> bool:
    """True when the kernel has the openvswitch datapath: the module is loaded (the check
    Open vSwitch's own scripts make), or its generic netlink family answers (built in).
    The netlink probe cannot run under eventlet; the sysfs check can."""
    if Path("/sys/module/openvswitch").is_dir():
        return True
    try:
        sock = GenericNetlinkSocket()
        try:
            sock.discovery("ovs_datapath")
        finally:
            sock.close()
    except Exception:  # NetlinkError: no such family; others: pyroute2 under eventlet
        return False
    return True


def choose_datapath(available: Iterable[str], kernel_loaded: bool) -> str:
    """Prefer the kernel datapath; fall back to the userspace one where the kernel has none.

    ovs-vswitchd lists 'system' among its datapath types even when the kernel module is
    missing, so the list alone cannot decide.
    """
    types = set(available)
    if "system" in types and kernel_loaded:
        return "system"
    if "netdev" in types:
        return "netdev"
    raise OvsdbError(f"no usable Open vSwitch datapath (types {sorted(types)}, "
                     f"kernel module {'loaded' if kernel_loaded else 'absent'})")


def detect_datapath(remote: str = DEFAULT_REMOTE) -> str:
    """'system' (kernel datapath) or 'netdev' (userspace): what new bridges should use."""
    with Ovsdb(remote) as db:
        available = db.datapath_types()
    return choose_datapath(available, kernel_datapath_loaded())
