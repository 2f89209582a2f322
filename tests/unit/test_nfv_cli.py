"""`sdnctl vnf`: config loading, spec building, status file merging, table output."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nfv.cli import app, build_spec, format_table, load_config, read_status_files
from nfv.host.supervisor import process_token


def test_load_config_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"default": "drop"}')
    (tmp_path / "b.yaml").write_text("default: allow\nrules: []\n")
    assert load_config(tmp_path / "a.json") == {"default": "drop"}
    assert load_config(tmp_path / "b.yaml") == {"default": "allow", "rules": []}


@pytest.mark.parametrize(("name", "text"), [("x.yaml", "- a\n- b\n"), ("x.json", "{nope")])
def test_load_config_errors_name_the_file(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(typer.BadParameter, match=name):
        load_config(tmp_path / name)


def test_build_spec_options_win_and_placement_keys_are_stripped() -> None:
    cfg = {"type": "firewall", "switch": "s1", "cpu": 0.5, "memory": "64mb",
           "failure_mode": "open", "default": "drop", "rules": []}
    spec = build_spec(cfg, name=None, kind=None, switch="s9", cpu=None, memory="1MiB",
                      source=Path("/x/fw.yaml"))
    assert (spec.name, spec.kind, spec.switch, spec.cpu, spec.memory) == (
        "fw", "firewall", "s9", 0.5, 2**20)
    assert spec.failure_mode == "open"
    assert dict(spec.config) == {"default": "drop", "rules": []}


def test_build_spec_needs_kind_and_switch() -> None:
    with pytest.raises(typer.BadParameter, match="kind"):
        build_spec({}, name="a", kind=None, switch="s1", cpu=None, memory=None,
                   source=Path("a.yaml"))
    with pytest.raises(typer.BadParameter, match="switch"):
        build_spec({}, name="a", kind="forward", switch=None, cpu=None, memory=None,
                   source=Path("a.yaml"))


def _vnf(name: str) -> dict:
    return {"name": name, "kind": "forward", "state": "running", "switch": "s1",
            "ports": {"ingress": 3, "egress": 4}, "pid": 123, "restarts": 1,
            "rx_pps": 10.4, "tx_pps": 9.6, "drops": 2, "malformed": 0}


def _dead_token() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = process_token(child.pid)
    child.wait()
    assert token is not None
    return token


def test_read_status_files_merges_live_and_skips_dead(tmp_path: Path) -> None:
    now = time.time()
    mine = process_token(os.getpid())
    (tmp_path / "vnfs.json").write_text(json.dumps(
        {"version": 1, "updated": now, "pid": os.getpid(), "owner": mine, "vnfs": [_vnf("a")]}))
    (tmp_path / "vnfs-run-b.json").write_text(json.dumps(
        {"version": 1, "updated": now - 60, "pid": os.getpid(), "owner": mine,
         "vnfs": [_vnf("b")]}))
    (tmp_path / "vnfs-run-c.json").write_text(json.dumps(
        {"version": 1, "updated": now, "pid": 1, "owner": _dead_token(), "vnfs": [_vnf("c")]}))
    merged = read_status_files(tmp_path, now=now)
    assert [v["name"] for v in merged["vnfs"]] == ["a", "b"]
    by_file = {Path(s["file"]).name: s for s in merged["sources"]}
    assert not by_file["vnfs.json"]["stale"]
    assert by_file["vnfs-run-b.json"]["stale"] and by_file["vnfs-run-b.json"]["alive"]
    assert not by_file["vnfs-run-c.json"]["alive"]


def test_format_table() -> None:
    lines = format_table([_vnf("fw"), _vnf("analyzer-1")]).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATE", "SWITCH", "IN", "OUT", "PID",
                                "RESTARTS", "RX_PPS", "TX_PPS", "DROPS", "MALFORMED"]
    assert lines[2].split() == ["analyzer-1", "forward", "running", "s1", "3", "4", "123", "1",
                                "10", "10", "2", "0"]
    placed_by_agent = format_table([{**_vnf("fw"), "host": "host0"}]).splitlines()[1]
    assert placed_by_agent.split()[3] == "host0:s1"


def test_list_command(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(app, ["list", "--state-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "no VNFs" in empty.output
    (tmp_path / "vnfs.json").write_text(json.dumps(
        {"version": 1, "updated": time.time(), "pid": os.getpid(),
         "owner": process_token(os.getpid()), "vnfs": [_vnf("fw")]}))
    table = runner.invoke(app, ["list", "--state-dir", str(tmp_path)])
    assert table.exit_code == 0 and table.output.splitlines()[1].startswith("fw ")
    out = runner.invoke(app, ["list", "-o", "json"], env={"SDN_STATE_DIR": str(tmp_path)})
    assert out.exit_code == 0 and json.loads(out.output)["vnfs"][0]["name"] == "fw"
