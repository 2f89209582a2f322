"""Network namespaces and the veth pairs that connect a VNF to its switch (pyroute2 only).

A VNF arm is a veth pair: one end stays in the root namespace and becomes an Open vSwitch
port, the other is moved into the VNF's namespace. Both ends get TX checksum offload off
(the userspace datapath forwards frames with unfinished checksums otherwise, which kills
TCP) and IPv6 off (no router solicitations or MLD reports in captures).

pyroute2's netlink sockets do not work in a process that eventlet has patched (the
controller), so the runtime runs the netlink work in a short-lived helper,
`python -m nfv.host.netns setup|delete JSON`, through `setup_arms()` / `delete_links_helper()`.
Everything else here is plain file and libc work that is safe in any process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.process import ChildProcess

from common.helper import run_helper

IFNAMSIZ = 15  # usable characters in a Linux interface name
HELPER_TIMEOUT = 30.0  # seconds for the helper to set up or delete a VNF's links
NETNS_DIR = Path(pr_netns.NETNS_RUN_DIR)
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class ArmNames:
    """Names of one arm: the switch-side port, its temporary peer name, the inside name."""

    outside: str
    peer: str
    inside: str


def arm_names(instance: str, side: str, port_prefix: str = "v") -> ArmNames:
    """Deterministic interface names for one arm of VNF instance `instance`.

    The switch side is `<prefix><instance>-<i|e>` when that fits in 15 characters, else
    the instance name is shortened and a hash of the full name keeps it unique. The peer
    is created under a unique temporary name and renamed to `side` (`ingress`/`egress`)
    when it moves into the namespace, where it has no neighbours to clash with.
    """
    tag = side[0]
    base = f"{port_prefix}{instance}"
    if len(base) + 2 > IFNAMSIZ:
        digest = hashlib.sha1(instance.encode()).hexdigest()[:6]
        keep = IFNAMSIZ - 2 - len(digest)
        base = f"{base[:keep]}{digest}"
    return ArmNames(outside=f"{base}-{tag}", peer=f"{base}.{tag}", inside=side)


def list_netns(prefix: str) -> list[str]:
    return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))


def create_netns(name: str) -> None:
    pr_netns.create(name)


def remove_netns(name: str) -> bool:
    """Unmount and delete a named namespace; False if it did not exist."""
    if name not in pr_netns.listnetns():
        return False
    pr_netns.remove(name)
    return True


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (to clean up after a crash)."""
    return sorted(pr_netns.ns_pids().get(name, []))


def setns_fd(fd: int) -> None:
    """Move the calling thread into the namespace `fd`; safe to call in a preexec_fn."""
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _disable_ipv6_in_child(netns: str, ifnames: list[str]) -> bytes:
    """Runs in a forked child: /proc/sys/net follows the caller's namespace."""
    pr_netns.setns(netns, flags=0, fork=False)
    for name in ["default", "all", *ifnames]:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    return b""


def _ipv6_present() -> bool:
    return Path("/proc/sys/net/ipv6").is_dir()


def _disable_ipv6_here(ifname: str) -> None:
    if _ipv6_present():
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")


def tx_checksum_off(ethtool: Ethtool, ifname: str) -> None:
    """The equivalent of `ethtool -K IF tx off` through the ethtool ioctl."""
    features = ethtool.get_features(ifname)
    changed = False
    for name, feature in features.features.items():
        if name.startswith("tx-checksum") and feature.available and feature.enable:
            feature.enable = False
            changed = True
    if changed:
        ethtool.set_features(ifname, features)


def tx_checksum_enabled(ifname: str) -> list[str]:
    """The TX checksum features still on for `ifname` in the caller's namespace."""
    with Ethtool() as ethtool:
        features = ethtool.get_features(ifname).features
    return sorted(n for n, f in features.items() if n.startswith("tx-checksum") and f.enable)


def create_arms(netns: str, arms: Sequence[ArmNames], mtu: int) -> None:
    """Create the veth pairs of `arms`, fix offloads and IPv6, move peers into `netns`, up.

    Features set on a device survive its move between namespaces; its IPv6 settings do
    not (they are re-created from the target namespace's defaults), so IPv6 is turned off
    inside only after the move and before any link is up.
    """
    with IPRoute() as ipr:
        for arm in arms:
            ipr.link("add", ifname=arm.outside, kind="veth", mtu=mtu,
                     peer={"ifname": arm.peer, "mtu": mtu})
        with Ethtool() as ethtool:
            for arm in arms:
                tx_checksum_off(ethtool, arm.outside)
                tx_checksum_off(ethtool, arm.peer)
        for arm in arms:
            _disable_ipv6_here(arm.outside)
            (peer_index,) = ipr.link_lookup(ifname=arm.peer)
            ipr.link("set", index=peer_index, net_ns_fd=netns, ifname=arm.inside)
        if _ipv6_present():
            with ChildProcess(target=_disable_ipv6_in_child,
                              args=[netns, [a.inside for a in arms]]) as child:
                child.communicate()
        with IPRoute(netns=netns) as inside:
            for arm in arms:
                (index,) = inside.link_lookup(ifname=arm.inside)
                inside.link("set", index=index, state="up")
        for arm in arms:
            (index,) = ipr.link_lookup(ifname=arm.outside)
            ipr.link("set", index=index, state="up")


def delete_links(names: Iterable[str]) -> list[str]:
    """Delete root-namespace links by name (a veth takes its peer with it)."""
    removed = []
    with IPRoute() as ipr:
        for name in names:
            indexes = ipr.link_lookup(ifname=name)
            if not indexes:
                continue
            try:
                ipr.link("del", index=indexes[0])
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise
                continue
            removed.append(name)
    return removed


def link_exists(name: str) -> bool:
    """Whether a root-namespace link exists (sysfs, so no netlink socket is needed)."""
    return (Path("/sys/class/net") / name).exists()


def setup_arms(netns: str, arms: Sequence[ArmNames], mtu: int) -> None:
    """Create namespace `netns` with `arms` (see create_arms), in the helper process."""
    run_helper("nfv.host.netns", "setup", {"netns": netns, "mtu": mtu,
                                      "arms": [[a.outside, a.peer, a.inside] for a in arms]},
               HELPER_TIMEOUT)


def delete_links_helper(names: Iterable[str]) -> None:
    """delete_links() in the helper process, started only if one of the links exists."""
    existing = [n for n in names if link_exists(n)]
    if existing:
        run_helper("nfv.host.netns", "delete", {"links": existing}, HELPER_TIMEOUT)


def main(argv: Sequence[str]) -> int:
    """`python -m nfv.host.netns setup|delete JSON`: the helper's entry point."""
    if len(argv) != 2 or argv[0] not in ("setup", "delete"):
        print("usage: python -m nfv.host.netns setup|delete JSON", file=sys.stderr)
        return 2
    args = json.loads(argv[1])
    try:
        if argv[0] == "setup":
            create_netns(args["netns"])
            create_arms(args["netns"], [ArmNames(*a) for a in args["arms"]], args["mtu"])
        else:
            delete_links(args["links"])
    except (OSError, NetlinkError, ValueError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
