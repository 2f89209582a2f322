"""The VNF runtime on a real Open vSwitch bridge (userspace datapath), with real traffic.

Topology: host namespaces nf3h1 and nf3h2 on bridge nf3br0, OpenFlow rules steering
h1 -> VNF ingress, VNF egress -> h2 and back, so packets only pass through the VNF.
Everything created here is named nf3*; fixtures remove it by name, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfv.host.instance import EXT_NETNS
from nfv.host.netns import tx_checksum_enabled
from nfv.host.ovsdb import Ovsdb, detect_datapath, kernel_datapath_loaded
from nfv.host.runtime import Runtime
from nfv.host.spec import VnfError, VnfSpec, VnfStatus
from nfv.host.supervisor import Backoff, State, has_exited

pytestmark = pytest.mark.integration

BRIDGE = "nf3br0"
PREFIX = "nf3vnf-"
PORT_PREFIX = "nf3"
HOSTS = {"nf3h1": "10.203.0.1", "nf3h2": "10.203.0.2"}
WORKER = [sys.executable, "-m", "nfv.datapath.worker"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def ofport(ifname: str) -> int:
    return int(sh("ovs-vsctl", "get", "Interface", ifname, "ofport").stdout)


def netns_list() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line]


def bridge_ports() -> list[str]:
    return sh("ovs-vsctl", "list-ports", BRIDGE).stdout.split()


def cleanup_hosts() -> None:
    for host in HOSTS:
        sh("ip", "link", "del", f"{host}-sw", check=False)
        sh("ip", "netns", "del", host, check=False)


@pytest.fixture
def bridge() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root")
    sh("ovs-vsctl", "--if-exists", "del-br", BRIDGE)
    cleanup_hosts()
    sh("ovs-vsctl", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
       "fail_mode=secure", "protocols=OpenFlow13")
    try:
        for host, ip in HOSTS.items():
            sh("ip", "netns", "add", host)
            sh("ip", "link", "add", f"{host}-sw", "type", "veth", "peer", "name", "eth0",
               "netns", host)
            for ns, dev in ((None, f"{host}-sw"), (host, "eth0")):
                run = (lambda *a, ns=ns: in_ns(ns, *a)) if ns else sh
                run("ethtool", "-K", dev, "tx", "off")
                run("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
                run("ip", "link", "set", dev, "up")
            in_ns(host, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ovs-vsctl", "add-port", BRIDGE, f"{host}-sw")
        yield BRIDGE
    finally:
        cleanup_hosts()
        sh("ovs-vsctl", "--if-exists", "del-br", BRIDGE, check=False)


@pytest.fixture
def runtime(tmp_path: Path, bridge: str) -> Iterator[Runtime]:
    rt = Runtime(status_file=tmp_path / "vnfs.json", run_dir=tmp_path / "run",
                 netns_prefix=PREFIX, port_prefix=PORT_PREFIX, worker=WORKER,
                 backoff=Backoff(initial=0.2, maximum=1.0, max_failures=3))
    try:
        yield rt
    finally:
        rt.close()
        rt.reap(PREFIX)


def steer_through(status: VnfStatus) -> None:
    """h1 <-> VNF ingress, VNF egress <-> h2: no other way across the bridge."""
    h1, h2 = ofport("nf3h1-sw"), ofport("nf3h2-sw")
    vin, vout = status.ports["ingress"], status.ports["egress"]
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", BRIDGE)
    for src, dst in ((h1, vin), (vout, h2), (h2, vout), (vin, h1)):
        sh("ovs-ofctl", "-O", "OpenFlow13", "add-flow", BRIDGE,
           f"priority=100,in_port={src},actions=output:{dst}")


UDP_RECEIVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 5001)); s.settimeout(3)
    n = 0
    try:
        while True:
            s.recv(2048); n += 1
    except socket.timeout:
        pass
    print(n)
""")
UDP_SENDER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count, gap = int(sys.argv[1]), float(sys.argv[2])
    for i in range(count):
        s.sendto(b"x" * 64, ("10.203.0.2", 5001)); time.sleep(gap)
""")
TCP_SERVER = textwrap.dedent("""
    import socket
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 5002)); srv.listen(1); srv.settimeout(10)
    conn, _ = srv.accept(); conn.settimeout(10)
    n = 0
    while True:
        b = conn.recv(65536)
        if not b:
            break
        n += len(b)
    print(n)
""")
TCP_CLIENT = textwrap.dedent("""
    import socket
    c = socket.create_connection(("10.203.0.2", 5002), timeout=10)
    c.sendall(b"y" * 1_000_000); c.close()
""")


def udp_across(count: int = 200, gap: float = 0.002) -> int:
    receiver = subprocess.Popen(["ip", "netns", "exec", "nf3h2", sys.executable, "-c",
                                 UDP_RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        in_ns("nf3h1", sys.executable, "-c", UDP_SENDER, str(count), str(gap))
        out, _ = receiver.communicate(timeout=15)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return int(out)


def tcp_across() -> int:
    server = subprocess.Popen(["ip", "netns", "exec", "nf3h2", sys.executable, "-c",
                               TCP_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        in_ns("nf3h1", sys.executable, "-c", TCP_CLIENT)
        out, _ = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return int(out)


def test_detect_datapath_matches_the_kernel() -> None:
    assert detect_datapath() == ("system" if kernel_datapath_loaded() else "netdev")


def test_forward_vnf_lifecycle(runtime: Runtime, tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    runtime.on_state_change(lambda st, prev: events.append((prev.value, st.state)))
    spec = VnfSpec(name="fw", kind="forward", switch=BRIDGE, cpu=0.5, memory=64 * 2**20)

    t0 = time.perf_counter()
    placed = runtime.start(spec)
    placed_s = time.perf_counter() - t0
    status = runtime.wait_for("fw", [State.RUNNING], timeout=15)
    running_s = time.perf_counter() - t0
    print(f"VNF placed in {placed_s * 1000:.0f} ms, running after {running_s * 1000:.0f} ms")

    # placement: namespace, both arms on the bridge with the ofports the status reports
    ns = "nf3vnf-fw"
    assert placed.netns == ns and ns in netns_list()
    assert placed.interfaces == {"ingress": "nf3fw-i", "egress": "nf3fw-e"}
    for side, ifname in placed.interfaces.items():
        assert ofport(ifname) == placed.ports[side] > 0
        assert ifname in bridge_ports()
        ids = sh("ovs-vsctl", "get", "Port", ifname, "external_ids").stdout
        assert f'{EXT_NETNS}={ns}' in ids.replace('"', "")
    # offloads off and IPv6 off on both ends, interfaces up with the same MTU
    for ifname in placed.interfaces.values():
        assert tx_checksum_enabled(ifname) == []
        assert sh("sysctl", "-n", f"net.ipv6.conf.{ifname}.disable_ipv6").stdout.strip() == "1"
        assert "state UP" in sh("ip", "link", "show", ifname).stdout
    for inside in ("ingress", "egress"):
        assert "tx-checksumming: off" in in_ns(ns, "ethtool", "-k", inside).stdout
        assert in_ns(ns, "sysctl", "-n", f"net.ipv6.conf.{inside}.disable_ipv6").stdout == "1\n"
        link = in_ns(ns, "ip", "link", "show", inside).stdout
        assert "mtu 1500" in link and "state UP" in link
    assert "inet6" not in in_ns(ns, "ip", "addr").stdout
    # the worker runs in the namespace and in the cgroups with the limits
    pid = status.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    cgroup = runtime.cgroup("fw")
    assert cgroup is not None
    assert cgroup.read("cpu.cfs_quota_us") == "50000"
    assert cgroup.read("cpu.cfs_period_us") == "100000"
    assert cgroup.read("memory.limit_in_bytes") == str(64 * 2**20)
    for path in cgroup.paths:
        assert str(pid) in (path / "cgroup.procs").read_text().split()
    # the published status file
    doc = json.loads((tmp_path / "vnfs.json").read_text())
    assert doc["version"] == 1 and doc["vnfs"][0]["name"] == "fw"
    assert doc["vnfs"][0]["ports"] == placed.ports

    # traffic crosses the VNF and only the VNF
    steer_through(placed)
    assert in_ns("nf3h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", HOSTS["nf3h2"],
                 check=False).returncode == 0
    assert udp_across() == 200
    assert tcp_across() == 1_000_000
    time.sleep(1.6)  # two stats periods
    after = runtime.status("fw")
    assert after.rx_packets >= 200 + 6 and after.tx_packets >= 200 + 6

    # rates: two samples during a steady stream
    sender = subprocess.Popen(["ip", "netns", "exec", "nf3h1", sys.executable, "-c", UDP_SENDER,
                               "1500", "0.002"])
    try:
        time.sleep(2.5)
        busy = runtime.status("fw")
    finally:
        sender.wait(timeout=20)
    assert busy.rx_pps > 50 and busy.tx_pps > 50

    # kill the worker: restarted with backoff, running again, traffic flows again
    os.kill(pid, signal.SIGKILL)
    runtime.wait_for("fw", [State.BACKOFF], timeout=5)
    again = runtime.wait_for("fw", [State.RUNNING], timeout=15)
    assert again.restarts == 1 and again.pid not in (None, pid)
    assert ("running", "backoff") in events and ("starting", "running") in events
    assert "killed" in (again.last_error or "") or "-9" in (again.last_error or "")
    assert udp_across(count=50) == 50

    # stop: no trace left
    paths = list(cgroup.paths)
    runtime.stop("fw")
    assert ns not in netns_list()
    assert not {"nf3fw-i", "nf3fw-e"} & set(bridge_ports())
    assert sh("ip", "link", "show", "nf3fw-i", check=False).returncode != 0
    assert sh("ip", "link", "show", "nf3fw-e", check=False).returncode != 0
    assert not any(p.exists() for p in paths)
    assert not (tmp_path / "run" / ns).exists()
    assert subprocess.run(["kill", "-0", str(again.pid)], capture_output=True).returncode != 0
    assert json.loads((tmp_path / "vnfs.json").read_text())["vnfs"] == []
    assert events[-1] == ("running", "stopped")


def test_worker_that_keeps_dying_ends_failed(runtime: Runtime) -> None:
    runtime.worker = ["/bin/sh", "-c", "echo boom >&2; exit 7", "worker"]
    runtime.start(VnfSpec(name="bad", kind="forward", switch=BRIDGE))
    failed = runtime.wait_for("bad", [State.FAILED], timeout=20)
    assert failed.restarts == 3  # max_failures=3: three restarts, then the fourth failure
    assert "code 7" in (failed.last_error or "") and "boom" in (failed.last_error or "")
    runtime.stop("bad")
    assert "nf3vnf-bad" not in netns_list()


def test_start_on_missing_bridge_leaves_nothing(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError, match="no Open vSwitch bridge"):
        runtime.start(VnfSpec(name="lost", kind="forward", switch="nf3nobridge"))
    assert "nf3vnf-lost" not in netns_list()
    assert sh("ip", "link", "show", "nf3lost-i", check=False).returncode != 0
    assert runtime.list() == []


CRASHING_RUNTIME = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nfv.host.runtime import Runtime, VnfSpec
    rt = Runtime(run_dir=Path(sys.argv[1]), netns_prefix="nf3vnf-", port_prefix="nf3",
                 worker=sys.argv[2:])
    st = rt.start(VnfSpec(name="orphan", kind="forward", switch="nf3br0", cpu=0.2))
    rt.wait_for("orphan", ["running"], timeout=15)
    print(rt.status("orphan").pid, flush=True)
    time.sleep(600)
""")


def test_reap_after_a_crash(bridge: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashing = subprocess.Popen([sys.executable, "-c", CRASHING_RUNTIME, str(run_dir),
                                 *WORKER], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(crashing.stdout.readline())  # type: ignore[union-attr]
    finally:
        crashing.kill()
        crashing.wait()
    ns = "nf3vnf-orphan"
    assert ns in netns_list() and "nf3orphan-i" in bridge_ports()
    assert Path(f"/proc/{worker_pid}").exists()

    with Runtime(run_dir=run_dir, netns_prefix=PREFIX, port_prefix=PORT_PREFIX) as rt:
        removed = rt.reap(PREFIX)
    assert removed["netns"] == [ns]
    assert sorted(removed["ports"]) == ["nf3orphan-e", "nf3orphan-i"]
    assert str(worker_pid) in removed["processes"]
    assert any(g.endswith(ns) for g in removed["cgroups"])
    assert ns not in netns_list()
    assert not {"nf3orphan-i", "nf3orphan-e"} & set(bridge_ports())
    assert has_exited(worker_pid)  # exited; its new parent reaps it
    assert not (run_dir / ns).exists()


def test_reap_spares_a_live_runtime(runtime: Runtime, tmp_path: Path) -> None:
    runtime.start(VnfSpec(name="alive", kind="forward", switch=BRIDGE))
    with Runtime(run_dir=tmp_path / "run", netns_prefix=PREFIX, port_prefix=PORT_PREFIX) as other:
        other._token = "1:0"  # pretend to be another process (tokens differ per process)
        removed = other.reap(PREFIX)
        with pytest.raises(VnfError, match="another runtime"):
            other.start(VnfSpec(name="alive", kind="forward", switch=BRIDGE))
    assert removed["netns"] == [] and removed["ports"] == []
    with pytest.raises(VnfError, match="already running"):
        runtime.start(VnfSpec(name="alive", kind="forward", switch=BRIDGE))
    assert runtime.wait_for("alive", [State.RUNNING], timeout=15).restarts == 0
    assert "nf3vnf-alive" in netns_list()


UNDER_EVENTLET = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import json, sys
    from pathlib import Path
    from nfv.host.runtime import Runtime, VnfSpec
    with Runtime(run_dir=Path(sys.argv[1]), netns_prefix="nf3vnf-", port_prefix="nf3",
                 worker=sys.argv[2:]) as rt:
        rt.start(VnfSpec(name="green", kind="forward", switch="nf3br0", memory=2**26))
        status = rt.wait_for("green", ["running"], timeout=15)
        print(json.dumps(status.to_dict()))
""")


def test_runtime_works_in_an_eventlet_patched_process(bridge: str, tmp_path: Path) -> None:
    """The controller runs on eventlet, where pyroute2's sockets do not work in-process."""
    done = sh(sys.executable, "-W", "ignore", "-c", UNDER_EVENTLET, str(tmp_path / "run"),
              *WORKER)
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status["state"] == "running" and status["ports"]["ingress"] > 0
    assert "nf3vnf-green" not in netns_list()
    assert not {"nf3green-i", "nf3green-e"} & set(bridge_ports())


def test_ovsdb_bridge_create_and_delete() -> None:
    name = "nf3br9"
    sh("ovs-vsctl", "--if-exists", "del-br", name)
    try:
        with Ovsdb() as db:
            db.add_bridge(name, detect_datapath())
            db.add_bridge(name, detect_datapath())  # idempotent
            assert db.bridges()[name] == detect_datapath()
        assert sh("ovs-vsctl", "get", "Bridge", name, "datapath_type").stdout.strip() == (
            detect_datapath())
        with Ovsdb() as db:
            assert db.del_bridge(name) and not db.del_bridge(name)
        assert sh("ovs-vsctl", "br-exists", name, check=False).returncode == 2
    finally:
        sh("ovs-vsctl", "--if-exists", "del-br", name, check=False)


def test_cli_run_in_the_foreground_and_list(bridge: str, tmp_path: Path) -> None:
    """`sdnctl vnf run` places the VNF, `vnf list` shows it, SIGINT removes it."""
    config = tmp_path / "nf3cli.yaml"
    config.write_text("type: forward\nswitch: nf3br0\ncpu: 0.25\n")
    env = {**os.environ, "SDN_STATE_DIR": str(tmp_path / "state")}
    env.pop("SDN_VNF_WORKER", None)
    cli = [sys.executable, "-W", "ignore", "-c", "from nfv.cli import app; app()"]
    proc = subprocess.Popen([*cli, "run", "-c", str(config), "--interval", "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "running" in line:
                break
        assert any("placed" in line for line in lines), lines
        listed = subprocess.run([*cli, "list", "-o", "json"], env=env, capture_output=True,
                                text=True, timeout=30)
        vnfs = json.loads(listed.stdout)["vnfs"]
        assert [(v["name"], v["state"]) for v in vnfs] == [("nf3cli", "running")]
        assert "vnf-nf3cli" in netns_list()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Runtime().reap("vnf-nf3cli")
    assert "vnf-nf3cli" not in netns_list()
    assert not {"vnf3cli-i", "vnf3cli-e"} & set(bridge_ports())
    assert not list((tmp_path / "state").glob("vnfs-run-*.json"))
