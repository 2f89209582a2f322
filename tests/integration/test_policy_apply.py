"""`sdnctl policy` against a live network: minimal updates, rejected input changes
nothing, revisions and rollback, and a controller restart that traffic does not notice."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from testing.harness import REPO, Controller, dump_flows, network, ping, ping_all
from topologies.sdn_topos import RingTopo

BAD = sorted((REPO / "tests/unit/bad_policies").glob("*.yaml"))


def write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


NO_PROTECTION = "version: 1\nrouting: {metric: hops, ecmp: false, protection: none}\n"


def test_apply_is_minimal_and_recorded(controller, tmp_path):
    with network(RingTopo(n=4), controller) as net:
        assert ping_all(net) == []
        minimal = REPO / "examples/minimal.yaml"
        first = controller.sdnctl("policy", "apply", "-f", str(minimal), "-o", "json")
        assert first.returncode == 0, first.stderr
        again = controller.sdnctl("policy", "apply", "-f", str(minimal), "-o", "json")
        assert again.returncode == 0, again.stderr
        assert '"flow_mods": 0' in again.stdout and '"changed": false' in again.stdout

        other = write_policy(tmp_path, NO_PROTECTION)
        diff = controller.sdnctl("policy", "diff", "-f", str(other), "-o", "json")
        assert diff.returncode == 0 and '"flow_mods": 0' not in diff.stdout, diff.stdout
        before_dry = {s.name: dump_flows(s) for s in net.switches}
        dry = controller.sdnctl("policy", "apply", "-f", str(other), "--dry-run")
        assert dry.returncode == 0
        assert {s.name: dump_flows(s) for s in net.switches} == before_dry

        applied = controller.sdnctl("policy", "apply", "-f", str(other))
        assert applied.returncode == 0, applied.stderr
        groups = net.get("s1").cmd("ovs-ofctl -O OpenFlow13 dump-groups s1")
        assert "type=ff" not in groups  # protection off: no fast-failover groups left
        assert ping_all(net) == []

        history = controller.sdnctl("policy", "history")
        assert history.stdout.count("\nr") + history.stdout.startswith("r") == 2, history.stdout
        back = controller.sdnctl("policy", "rollback", "1")
        assert back.returncode == 0, back.stderr
        assert "type=ff" in net.get("s1").cmd("ovs-ofctl -O OpenFlow13 dump-groups s1")
        got = controller.sdnctl("policy", "get")
        assert "fast-failover" in got.stdout


def test_rejected_policies_change_nothing(controller, tmp_path):
    assert len(BAD) >= 30
    with network(RingTopo(n=4), controller) as net:
        assert controller.sdnctl("policy", "apply", "-f",
                      str(REPO / "examples/minimal.yaml")).returncode == 0
        assert ping_all(net) == []  # every host known: nothing left to learn
        before = {s.name: dump_flows(s) for s in net.switches}
        for path in BAD:
            expect = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
            field, _, line = expect.partition(" @ ")
            result = controller.sdnctl("policy", "apply", "-f", str(path))
            assert result.returncode != 0, path.name
            assert f"{path}:{line}:" in result.stderr, (path.name, result.stderr)
            if field != "-":
                assert field in result.stderr, (path.name, result.stderr)
        # the server validates too: a switch the network does not have
        unknown = write_policy(tmp_path, "version: 1\nvnfs:\n  fw: {type: firewall, "
                               "switch: s99, default: allow}\n", "unknown-switch.yaml")
        result = controller.sdnctl("policy", "apply", "-f", str(unknown))
        assert result.returncode != 0 and "s99" in result.stderr, result.stderr
        assert {s.name: dump_flows(s) for s in net.switches} == before
        history = controller.sdnctl("policy", "history", "-o", "json")
        assert history.stdout.count('"rev"') == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_controller_restart_keeps_traffic_and_sends_nothing(controller, sig):
    """Stopped (SIGTERM) or killed, the controller leaves the switches as they are: a
    100 pps stream loses nothing, and the next controller sends no FlowMod."""
    with network(RingTopo(n=4), controller) as net:
        h1, h3 = net.get("h1"), net.get("h3")
        assert ping_all(net) == []
        before = {s.name: dump_flows(s) for s in net.switches}
        stream = h1.popen(["ping", "-n", "-i", "0.01", "-c", "1500", h3.IP()],
                          stdout=subprocess.PIPE, text=True)
        try:
            controller.stop(sig)
            time.sleep(4)  # longer than a link's LLDP timeout
            assert {s.name: dump_flows(s) for s in net.switches} == before
            controller.start()
            controller.wait_topology(4, 4)
            out, _ = stream.communicate(timeout=60)
        finally:
            if stream.poll() is None:
                stream.kill()
        assert " 0% packet loss" in out, out[-400:]
        assert {s.name: dump_flows(s) for s in net.switches} == before
        time.sleep(3)  # past the reconcile grace period
        assert controller.metric("sdn_flow_mods_total") == 0
        assert ping(h1, h3.IP()).received == 1


def test_api_requires_token_off_loopback(tmp_path, monkeypatch):
    token = "s3cret-token"
    monkeypatch.setenv("SDN_API_TOKEN", token)
    ctl = Controller(tmp_path / "ctl", api_host="0.0.0.0").start()
    try:
        assert requests.get(f"http://{ctl.api}/v1/health", timeout=2).status_code == 401
        ok = requests.get(f"http://{ctl.api}/v1/health", timeout=2,
                          headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    finally:
        ctl.stop()
