"""Three controllers on etcd, one Mininet ring connected to all of them: the policy
applied through a standby, the leader killed under a 1000 pps stream, a leader paused
past its lease, the switches' own fencing, etcd members lost."""

from __future__ import annotations

import signal
import socket
import struct
import time

import pytest

from testing.cluster import (
    LEASE_TTL,
    agent,
    controllers,
    flow_mods,
    history,
    leader_of,
    masters,
    status,
    udp_stream,
)
from testing.etcd import EtcdCluster
from testing.harness import (
    REPO,
    dump_flows,
    free_port,
    http_get,
    network,
    ping,
    stop_process,
    wait_until,
    web_servers,
)
from tests.integration.test_chains import POLICY as CHAIN_POLICY
from tests.integration.test_chains import VIP, backends_healthy
from topologies.sdn_topos import LinearTopo, RingTopo

pytestmark = pytest.mark.integration
SWITCHES = 4
POLICY = REPO / "examples/priorities.yaml"  # classes: DSCP marks and meters


def test_takeover_without_loss_and_a_paused_leader_is_fenced(tmp_path):
    with EtcdCluster(1) as etcd, controllers(tmp_path, etcd) as (c0, c1, c2), \
            network(RingTopo(n=SWITCHES), c0, wait=False, others=(c1, c2)) as net:
        c0.wait_topology(SWITCHES, SWITCHES)
        for ctl in (c0, c1, c2):
            wait_until(lambda ctl=ctl: leader_of(ctl) == "c0", 10, what="c0 leads")
        wait_until(lambda: masters(c2, "c0") == SWITCHES, 10, what="c0 master everywhere")

        # The policy goes in through a standby; every member shows the same history.
        assert "24 FlowMods" in c1.apply(POLICY)  # sent by the leader, c0
        assert history(c0) == history(c1) == history(c2) and len(history(c2)) == 1
        assert ping(net.get("h1"), net.get("h3").IP(), count=3).received == 3
        roles = {m["node"]: set(m["switches"].values()) for m in status(c2)["controllers"]}
        assert roles == {"c0": {"master"}, "c1": {"slave"}, "c2": {"slave"}}, roles
        assert flow_mods(c1) == flow_mods(c2) == 0  # standbys never write

        # Leader killed under a 1000 pps stream: nothing lost, a new leader within 3 s,
        # and it sends no FlowMod: the network it finds is the one it wants.
        finish = udp_stream(net, "h1", "h3", 8.0, tmp_path)
        time.sleep(1.5)
        c0.proc.kill()
        killed = time.monotonic()
        c0.proc.wait(5)
        new_name = wait_until(lambda: next((n for n in ("c1", "c2")
                                            if masters(c1, n) == SWITCHES), None),
                              10, interval=0.05, what="a new master")
        takeover = time.monotonic() - killed
        sent, received = finish()
        assert sent - received == 0, f"{sent - received} of {sent} packets lost in takeover"
        new, other, other_name = ((c1, c2, "c2") if new_name == "c1" else (c2, c1, "c1"))
        assert takeover < 3.0, f"new leader master at every switch after {takeover:.2f}s"
        time.sleep(4)  # past the warm-restart grace: the new leader has reconciled
        assert flow_mods(new) == 0, f"{flow_mods(new)} FlowMods after takeover"
        assert leader_of(other) == new_name
        generation = status(new)["leader"]["generation"]

        # The new leader paused past its lease: the third one takes over; the paused
        # one, woken, steps down without sending anything. A policy applied through the
        # third during the election waits for it to be elected, then goes in.
        before = flow_mods(new)
        new.proc.send_signal(signal.SIGSTOP)
        try:
            applied = other.sdnctl("policy", "apply", "-f", str(REPO / "examples/minimal.yaml"))
            assert applied.returncode == 0, applied.stderr
            wait_until(lambda: masters(other, other_name) == SWITCHES, 10, interval=0.1,
                       what="the third controller master everywhere")
        finally:
            new.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: "no longer leader" in new.log_file.read_text(), 10,
                   what="the paused leader to step down")
        time.sleep(1)
        assert flow_mods(new) == before
        assert leader_of(new) == other_name and status(new)["leading"] is False
        assert status(other)["leader"]["generation"] > generation
        assert ping(net.get("h2"), net.get("h4").IP(), count=3).received == 3
        assert history(c1) == history(c2) and len(history(c1)) == 2
        assert history(c1)[0]["summary"].startswith("-host h1"), history(c1)[0]

        # The switches fence by generation id themselves: the deposed leader's generation
        # is refused as stale, and a slave's FlowMod is refused.
        switch = net.get("s1")
        refusals = role_refusals(switch, stale=generation,
                                 current=status(other)["leader"]["generation"])
        assert refusals == {"stale": True, "is_slave": True}, refusals

        # A link cut while no controller leads: fast failover repairs it in the switches;
        # the next leader finds the cut and routes around it for good.
        hops = other.get("/v1/path", src="10.0.0.1", dst="10.0.0.3")["hops"]
        cut = (hops[0]["name"], hops[1]["name"])
        finish = udp_stream(net, "h1", "h3", 6.0, tmp_path)
        time.sleep(1.0)
        other.proc.kill()
        other.proc.wait(5)
        net.configLinkStatus(*cut, "down")
        wait_until(lambda: status(new)["leading"], 10, interval=0.1, what="new leader")
        sent, received = finish()
        assert sent - received < 100, f"{sent - received} of {sent} lost: no fast failover?"
        rerouted = wait_until(lambda: new.get("/v1/path", src="10.0.0.1", dst="10.0.0.3"),
                              10, what="a path")
        assert [h["name"] for h in rerouted["hops"][:2]] != list(cut), rerouted
        assert flow_mods(new) > before, "the new leader did not re-optimise"
        assert ping(net.get("h1"), net.get("h3").IP(), count=3).received == 3
        for ctl in (new, other):
            assert ctl.errors() == [], ctl.errors()


OFP_VERSION, OFPT_HELLO, OFPT_ERROR, OFPT_FLOW_MOD = 4, 0, 1, 14
OFPT_ROLE_REQUEST, OFPT_ROLE_REPLY = 24, 25
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY = 20, 21
OFPCR_ROLE_MASTER, OFPCR_ROLE_SLAVE = 2, 3


def role_refusals(switch, stale: int, current: int) -> dict[str, bool]:
    """Connect to `switch` as a fourth controller (a passive OpenFlow port added for the
    test): ask to be master with the `stale` generation id, then become slave under the
    `current` one and send a FlowMod. What did the switch refuse?"""
    port = free_port()
    targets = switch.vsctl("get-controller", switch.name).split()
    switch.vsctl("set-controller", switch.name, *targets, f"ptcp:{port}:127.0.0.1")
    try:
        sock = wait_until(lambda: _connect(port), 10, what="the switch's passive port")
        with sock:
            _send(sock, OFPT_HELLO, b"")
            _send(sock, OFPT_ROLE_REQUEST, struct.pack("!I4xQ", OFPCR_ROLE_MASTER, stale))
            kind, body = _next(sock, (OFPT_ERROR, OFPT_ROLE_REPLY))
            # OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE
            stale_refused = kind == OFPT_ERROR and struct.unpack("!HH", body[:4]) == (11, 0)
            _send(sock, OFPT_ROLE_REQUEST, struct.pack("!I4xQ", OFPCR_ROLE_SLAVE, current))
            assert _next(sock, (OFPT_ERROR, OFPT_ROLE_REPLY))[0] == OFPT_ROLE_REPLY
            # Adds a rule with no instructions to table 200, which nothing uses: harmless
            # if the switch wrongly took it, and then the assertion below fails.
            flow_mod = struct.pack("!QQBBHHHIIIH2x", 0, 0, 200, 0, 0, 0, 1, 0xFFFFFFFF,
                                   0xFFFFFFFF, 0xFFFFFFFF, 0) + struct.pack("!HH4x", 1, 4)
            _send(sock, OFPT_FLOW_MOD, flow_mod)
            _send(sock, OFPT_BARRIER_REQUEST, b"")
            kind, body = _next(sock, (OFPT_ERROR, OFPT_BARRIER_REPLY))
            # OFPET_BAD_REQUEST, OFPBRC_IS_SLAVE
            slave_refused = kind == OFPT_ERROR and struct.unpack("!HH", body[:4]) == (1, 10)
    finally:
        switch.vsctl("set-controller", switch.name, *targets)
    return {"stale": stale_refused, "is_slave": slave_refused}


def _connect(port: int) -> socket.socket | None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None
    return sock


def _send(sock: socket.socket, kind: int, body: bytes) -> None:
    sock.sendall(struct.pack("!BBHI", OFP_VERSION, kind, 8 + len(body), 7) + body)


def _next(sock: socket.socket, kinds: tuple[int, ...]) -> tuple[int, bytes]:
    """The next message of one of `kinds` (others, such as packet-ins, are skipped)."""
    while True:
        header = _read(sock, 8)
        _version, kind, length, _xid = struct.unpack("!BBHI", header)
        body = _read(sock, length - 8)
        if kind in kinds:
            return kind, body


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the switch closed the connection")
        data += chunk
    return data


def test_losing_etcd_members(tmp_path):
    """etcd over TLS with client certificates. One of three members down: applies go on.
    Two down: applies are refused with a clear message, the switches keep every rule and
    traffic between known hosts flows."""
    with EtcdCluster(3, tls=True) as etcd, controllers(tmp_path, etcd, size=2) as (c0, c1), \
            network(RingTopo(n=SWITCHES), c0, wait=False, others=(c1,)) as net:
        c0.wait_topology(SWITCHES, SWITCHES)
        wait_until(lambda: masters(c1, "c0") == SWITCHES, 10, what="c0 master everywhere")
        c1.apply(REPO / "examples/minimal.yaml")
        etcd.members[2].stop()
        time.sleep(LEASE_TTL + 1)
        assert status(c1)["leader"]["node"] == "c0"
        c1.apply(POLICY)
        assert len(history(c1)) == 2 and history(c0) == history(c1)

        # ARP answers come from the leader: resolve before the leader is gone (the
        # README's limits say so), and pin what was resolved, so that a neighbour entry
        # going stale while nobody leads is not what this checks.
        h1, h3 = net.get("h1", "h3")
        assert ping(h1, h3.IP(), count=1).received == 1
        for host, other in ((h1, h3), (h3, h1)):
            host.cmd(f"ip neigh replace {other.IP()} lladdr {other.MAC()} "
                     f"dev {host.defaultIntf()} nud permanent")
        flows = settled_flows(net)
        etcd.members[1].stop()
        time.sleep(LEASE_TTL + 1)
        refused = c0.sdnctl("policy", "apply", "-f", str(POLICY))
        assert refused.returncode != 0
        # Refused by the leader while it still holds its lease (etcd cannot commit), or by
        # every member once it has stepped down: either way clearly, and nothing changes.
        assert (("no leader" in refused.stderr and "nothing was changed" in refused.stderr)
                or "revision store unavailable: etcd did not answer" in refused.stderr), \
            refused.stderr
        now = {s.name: sorted(dump_flows(s)) for s in net.switches}
        assert ping(h1, h3.IP(), count=3).received == 3, (
            f"flows unchanged: {now == flows}; h1: {h1.cmd('ip neigh')} "
            f"h3: {h3.cmd('ip neigh')}")
        assert now == flows


def test_a_chain_placed_by_a_host_agent_survives_a_takeover(tmp_path):
    """The policy applied through a standby; the leader assigns the VNFs to the host
    agent, which places them; killed, the next leader finds the same workers through the
    agent's reports and sends no FlowMod. A restarted agent takes its VNFs over."""
    with EtcdCluster(1) as etcd, controllers(tmp_path, etcd) as (c0, c1, c2), \
            agent(tmp_path / "agent", etcd) as agent_proc, \
            network(LinearTopo(n=3, hosts_per_switch=2), c0, wait=False,
                    others=(c1, c2)) as net, \
            web_servers(net, ("h5", "h6"), tmp_path / "www"):
        c0.wait_topology(3, 2)
        wait_until(lambda: masters(c2, "c0") == 3, 10, what="c0 master everywhere")
        wait_until(lambda: {b for a in status(c1)["agents"] for b in a["bridges"]}
                   >= {"s1", "s2", "s3"}, 10, what="the agent to report the bridges")
        policy = tmp_path / "chain.yaml"
        policy.write_text(CHAIN_POLICY)
        c2.apply(policy)
        running = wait_until(lambda: (v := c1.get("/v1/vnfs")["vnfs"]) and len(v) == 3 and {
            x["state"] for x in v} == {"running"} and v, 30, what="the three VNFs running")
        assert {v["host"] for v in running} == {"host0"}  # placed by the agent
        assert agent_proc.poll() is None
        for host in net.hosts:
            ping(host, "10.0.0.3")
        wait_until(lambda: backends_healthy(c1), 20, what="backends healthy")
        client = net.get("h1")
        assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
        pids = {v["name"]: v["pid"] for v in running}
        assert len(pids) == 3 and None not in pids.values(), pids

        c0.proc.kill()
        c0.proc.wait(5)
        new = wait_until(lambda: next((c for c, n in ((c1, "c1"), (c2, "c2"))
                                       if masters(c1, n) == 3), None), 10, what="new master")
        time.sleep(3.5)  # past the reconcile grace
        assert {v["name"]: v["pid"] for v in new.get("/v1/vnfs")["vnfs"]} == pids
        assert flow_mods(new) == 0
        assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
        assert http_get(net.get("h2"), f"http://{VIP}/id", timeout=1) is None  # fw drops

        stop_process(agent_proc)  # a new agent on the machine takes the workers over
        with agent(tmp_path / "agent", etcd) as again:
            wait_until(lambda: {v["name"]: v["pid"] for v in new.get("/v1/vnfs")["vnfs"]
                                if v["state"] == "running" and v["agent_pid"] == again.pid
                                } == pids, 20, what="the same workers reported by the new agent")
            assert http_get(client, f"http://{VIP}/id") in ("h5", "h6")
        for ctl in (c1, c2):
            assert ctl.errors() == [], ctl.errors()


def settled_flows(net) -> dict[str, list[str]]:
    """Every switch's rules once they stop changing (a ping just taught the controller
    two hosts: their routes are still being installed)."""
    def read() -> dict[str, list[str]]:
        return {s.name: sorted(dump_flows(s)) for s in net.switches}
    previous = read()
    for _ in range(20):
        time.sleep(1.0)
        current = read()
        if current == previous:
            return current
        previous = current
    raise AssertionError("the switches' rules kept changing for 20 s")
