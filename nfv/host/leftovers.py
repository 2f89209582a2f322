"""Leftovers of VNFs that no live runtime manages any more (a controller killed with
SIGKILL, a crash): found by name and by the markers placement leaves, and removed."""

from __future__ import annotations

import shutil
from pathlib import Path

from nfv.host import netns
from nfv.host.cgroups import leftover_groups
from nfv.host.instance import (
    EXT_NETNS,
    EXT_OWNER,
    lingering,
)
from nfv.host.ovsdb import Ovsdb
from nfv.host.supervisor import (
    kill_pids,
    token_alive,
)


def alive_foreign(token: str | None, own_token: str) -> bool:
    """`token` names another runtime process that is still alive."""
    return token is not None and token != own_token and token_alive(token)


def foreign_owner(run_dir: Path, ns_name: str, own_token: str) -> str | None:
    """The token of another live runtime that placed `ns_name`, if there is one."""
    try:
        token = (run_dir / ns_name / "owner").read_text().strip()
    except OSError:
        return None
    return token if alive_foreign(token, own_token) else None


def reap_leftovers(prefix: str, live: set[str], run_dir: Path, own_token: str, ovsdb_remote: str
                   ) -> dict[str, list[str]]:
    """Remove leftovers of VNFs whose namespace name starts with `prefix`.

    Recognised as ours: namespaces by name, OVS ports by their external_ids marker,
    cgroups and run directories by name. Kept: instances this runtime manages, and
    those of another runtime process that is still alive (its token is recorded in
    the run directory and on the OVS ports); `live` are the namespaces the calling runtime
    manages. Returns what was removed, by category.
    """
    if not prefix:
        raise ValueError("refusing to reap with an empty prefix")

    def owned(ns_name: str) -> bool:
        return (ns_name.startswith(prefix) and ns_name not in live
                and foreign_owner(run_dir, ns_name, own_token) is None)

    removed: dict[str, list[str]] = {"processes": [], "ports": [], "netns": [],
                                     "cgroups": [], "dirs": []}
    for ns_name in filter(owned, netns.list_netns(prefix)):
        removed["processes"] += [str(p) for p in kill_pids(netns.netns_pids(ns_name))]
    with Ovsdb(ovsdb_remote) as db:
        ports = [name for name, ids in db.ports_with_external_id(EXT_NETNS).items()
                 if owned(ids[EXT_NETNS]) and not alive_foreign(ids.get(EXT_OWNER), own_token)]
        removed["ports"] = db.del_ports(ports)
    for ns_name in filter(owned, netns.list_netns(prefix)):
        netns.remove_netns(ns_name)
        removed["netns"].append(ns_name)
    netns.delete_links_helper(lingering(ports))
    for group in leftover_groups(prefix):
        if owned(group.name):
            procs = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            removed["processes"] += [str(p) for p in kill_pids(procs)]
            group.rmdir()
            removed["cgroups"].append(str(group))
    if run_dir.is_dir():
        for d in run_dir.iterdir():
            if d.is_dir() and owned(d.name):
                shutil.rmtree(d, ignore_errors=True)
                removed["dirs"].append(str(d))
    return removed
