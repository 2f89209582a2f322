"""`python -m sdn.controller.tc_helper apply PLAN_JSON`: put a `QueuePlan` on the ports.

A helper process because pyroute2's netlink sockets fail inside the eventlet-patched
controller. Each port is read first and left alone when it already holds the planned HTB
tree, so applying the same plan again changes nothing (and drops no queued packet);
otherwise its root qdisc, whatever it was, is replaced: the plan owns the port's egress.
A port in the plan's `remove` list loses its root qdisc only when that is ours.
Prints a JSON report on stdout.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import TC_H_ROOT

from sdn.compile.queues import HANDLE_MAJOR, ROOT_MINOR, PortQueues, QueuePlan

ETH_P_IP = 0x0800
# A u32 key reads the 32-bit word at an offset: at byte 1 of the IP header its top byte
# is the TOS byte, whose upper six bits are the DSCP. (pyroute2 moves any key to the
# offset of its mask's first non-zero byte; this is already that form.)
TOS_OFFSET = 1
TOS_MASK = 0xFC000000
FILTER_PRIO = 1
SEL_HEADER_BYTES = 20  # struct tc_u32_sel after its netlink attribute header
KEY_BYTES = 16  # struct tc_u32_key: be32 mask, be32 value, int off, int offmask
BURST_SECONDS = 0.002  # tokens an HTB class may spend at once (tc's default is one tick)
QUANTUM_BYTES = 3028  # two full frames: classes share excess by priority, not by quantum
MTU_BYTES = 1600


def handle(minor: int) -> int:
    return (HANDLE_MAJOR << 16) | minor


def dscp_key(dscp: int) -> str:
    """A u32 key matching DSCP `dscp`, as pyroute2 reads it: "value/mask+offset"."""
    return f"0x{_dscp_word(dscp):08x}/0x{TOS_MASK:08x}+{TOS_OFFSET}"


def _dscp_word(dscp: int) -> int:
    return (dscp << 2) << 24


def _attrs(msg) -> dict:
    return dict(msg["attrs"])


def _options(msg) -> dict:
    options = _attrs(msg).get("TCA_OPTIONS")
    return dict(options["attrs"]) if options else {}


def wanted_state(queues: PortQueues) -> tuple:
    """What reading a port back gives when it holds `queues` (rates in bytes/s, as the
    kernel keeps them)."""
    classes = {handle(ROOT_MINOR): (queues.capacity // 8, queues.capacity // 8, 0)}
    filters = set()
    for c in queues.classes:
        classes[handle(c.minor)] = (c.rate // 8, c.ceil // 8, c.prio)
        filters |= {(handle(c.minor), _dscp_word(d), TOS_MASK, TOS_OFFSET) for d in c.dscp}
    return queues.default, classes, frozenset(filters)


def held_state(ipr: IPRoute, index: int) -> tuple | None:
    """The port's HTB tree in `wanted_state` form, or None when the root is not ours."""
    root = [q for q in ipr.get_qdiscs(index=index) if q["parent"] == TC_H_ROOT]
    if not root or root[0]["handle"] != handle(0) or _attrs(root[0]).get("TCA_KIND") != "htb":
        return None
    default = _options(root[0])["TCA_HTB_INIT"]["defcls"]
    classes = {}
    for c in ipr.get_classes(index=index):
        parms = _options(c).get("TCA_HTB_PARMS")
        if parms is None:
            continue
        opts = _options(c)
        rate = opts.get("TCA_HTB_RATE64") or parms["rate"]
        ceil = opts.get("TCA_HTB_CEIL64") or parms["ceil"]
        classes[c["handle"]] = (rate, ceil, parms["prio"])
    filters = set()
    for f in ipr.get_filters(index=index, parent=handle(0)):
        opts = _options(f)
        if "TCA_U32_CLASSID" not in opts:
            continue
        filters |= {(opts["TCA_U32_CLASSID"], *key) for key in u32_keys(opts["TCA_U32_SEL"])}
    return default, classes, frozenset(filters)


def u32_keys(sel) -> list[tuple[int, int, int]]:
    """(value, mask, offset) of each key of a u32 selector, read from the raw attribute:
    pyroute2 0.9.7 decodes them from 4 bytes too early (the selector is 20 bytes with its
    attribute header, not 16)."""
    first = sel.offset + SEL_HEADER_BYTES
    keys = []
    for i in range(sel["nkeys"]):
        mask, value = struct.unpack_from("!II", sel.data, first + KEY_BYTES * i)
        (offset,) = struct.unpack_from("=i", sel.data, first + KEY_BYTES * i + 8)
        keys.append((value, mask, offset))
    return keys


def _htb_class(rate: int, ceil: int, prio: int) -> dict:
    return {"rate": f"{rate}bit", "ceil": f"{ceil}bit", "prio": prio,
            "burst": _burst(rate), "cburst": _burst(ceil), "quantum": QUANTUM_BYTES,
            "mtu": MTU_BYTES}


def _burst(rate: int) -> int:
    return MTU_BYTES + int(rate / 8 * BURST_SECONDS)


def install(ipr: IPRoute, index: int, queues: PortQueues) -> None:
    ipr.tc("add", "htb", index, handle(0), default=queues.default)
    ipr.tc("add-class", "htb", index, handle(ROOT_MINOR), parent=handle(0),
           **_htb_class(queues.capacity, queues.capacity, 0))
    for c in queues.classes:
        ipr.tc("add-class", "htb", index, handle(c.minor), parent=handle(ROOT_MINOR),
               **_htb_class(c.rate, c.ceil, c.prio))
        for dscp in c.dscp:
            ipr.tc("add-filter", "u32", index, parent=handle(0), prio=FILTER_PRIO,
                   protocol=ETH_P_IP, target=handle(c.minor), keys=[dscp_key(dscp)])


def remove_root(ipr: IPRoute, index: int) -> None:
    ipr.tc("del", index=index, parent=TC_H_ROOT)


def apply(plan: QueuePlan) -> dict[str, list[str]]:
    report: dict[str, list[str]] = {"changed": [], "unchanged": [], "removed": [],
                                    "missing": []}
    with IPRoute() as ipr:
        for name, queues in sorted(plan.ports.items()):
            index = _index(ipr, name)
            if index is None:
                report["missing"].append(name)
                continue
            held = held_state(ipr, index)
            if held == wanted_state(queues):
                report["unchanged"].append(name)
                continue
            if _has_root(ipr, index):
                remove_root(ipr, index)
            install(ipr, index, queues)
            report["changed"].append(name)
        for name in sorted(plan.remove):
            index = _index(ipr, name)
            if index is None:
                report["missing"].append(name)
            elif held_state(ipr, index) is not None:
                remove_root(ipr, index)
                report["removed"].append(name)
    return report


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _has_root(ipr: IPRoute, index: int) -> bool:
    """A root qdisc someone configured (the kernel's defaults have handle 0)."""
    return any(q["parent"] == TC_H_ROOT and q["handle"] for q in ipr.get_qdiscs(index=index))


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "apply":
        print("usage: python -m sdn.controller.tc_helper apply PLAN_JSON", file=sys.stderr)
        return 2
    try:
        report = apply(QueuePlan.from_json(json.loads(argv[1])))
    except (OSError, NetlinkError, ValueError, KeyError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
