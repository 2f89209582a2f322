"""FAUCET on the same bridges, as a peer for `bench.convergence`.

FAUCET (1.10, its own virtualenv `.venv-faucet`, which `make bench` builds) is given the
Mininet network as a stack: every switch a DP, every switch-to-switch link a stack link,
every host port a port of one VLAN, the busiest switch the stack's root. FAUCET then
learns the hosts and forwards over its spanning tree of the stack, which is what an
operator of a FAUCET network of this shape would run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from testing.harness import empty_tables, free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
FAUCET = REPO / ".venv-faucet" / "bin" / "faucet"
VLAN = "hosts"


def config(net: Any) -> dict[str, Any]:
    """The FAUCET configuration of a Mininet network: DPs, stack links, host ports."""
    switches = {sw.name: sw for sw in net.switches}
    interfaces: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in switches}
    degree = dict.fromkeys(switches, 0)
    for link in net.links:
        a, b = link.intf1, link.intf2
        ends = [(a, b), (b, a)]
        for mine, theirs in ends:
            if mine.node.name not in switches:
                continue
            port = mine.node.ports[mine]
            if theirs.node.name in switches:
                peer_port = theirs.node.ports[theirs]
                interfaces[mine.node.name][port] = {
                    "stack": {"dp": theirs.node.name, "port": peer_port}
                }
                degree[mine.node.name] += 1
            else:
                interfaces[mine.node.name][port] = {"native_vlan": VLAN}
    root = max(switches, key=lambda name: (degree[name], name))
    dps = {}
    for name, sw in switches.items():
        dp: dict[str, Any] = {
            "dp_id": int(sw.dpid, 16),
            "hardware": "Open vSwitch",
            "interfaces": interfaces[name],
        }
        if name == root:
            dp["stack"] = {"priority": 1}
        dps[name] = dp
    return {"vlans": {VLAN: {"vid": 100}}, "dps": dps}


@contextlib.contextmanager
def running(net: Any, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """FAUCET started for `net`, every bridge pointed at it (fail-mode secure, tables
    emptied); stopped by its pid on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "faucet.yaml"
    conf.write_text(yaml.safe_dump(config(net)))
    port = free_port()
    env = dict(
        os.environ,
        PATH=f"{FAUCET.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # it execs osken-manager
        FAUCET_CONFIG=str(conf),
        FAUCET_LOG=str(workdir / "faucet.log"),
        FAUCET_EXCEPTION_LOG=str(workdir / "faucet_exception.log"),
        FAUCET_PROMETHEUS_ADDR="127.0.0.1",
        FAUCET_PROMETHEUS_PORT=str(free_port()),
    )
    with open(workdir / "faucet.err", "wb") as err:  # the child keeps its own copy
        proc = subprocess.Popen(
            [str(FAUCET), "--ryu-ofp-tcp-listen-port", str(port), "--ryu-ofp-listen-host",
             "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        empty_tables(net)
        command = ["ovs-vsctl"]
        for name in (sw.name for sw in net.switches):
            command += ["--", "set-controller", name, f"tcp:127.0.0.1:{port}",
                        "--", "set-fail-mode", name, "secure",
                        "--", "set", "bridge", name, "protocols=OpenFlow13",
                        "rstp_enable=false", "stp_enable=false"]  # fmt: skip
        subprocess.run(command, check=True)
        yield proc
    finally:
        stop_process(proc)


def available() -> bool:
    return FAUCET.exists()
