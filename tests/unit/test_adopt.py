"""Taking over VNF workers a dead runtime left running: the process stand-in, and the
cases where there is nothing to take over (the real take-over runs in
tests/integration/test_chains.py, with a controller killed and restarted)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from nfv.host.runtime import Runtime
from nfv.host.spec import VnfSpec
from nfv.host.supervisor import Adopted, terminate

SPEC = VnfSpec(name="fw", kind="firewall", switch="s1", config={"default": "allow"})


def test_an_adopted_worker_is_watched_and_stopped_like_a_child():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        adopted = Adopted(proc.pid)
        assert adopted.poll() is None
        assert terminate(adopted, grace=5) == -1  # not our child: the code is unknown
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_nothing_to_take_over_without_a_placement_or_with_another_config(tmp_path: Path):
    with Runtime(run_dir=tmp_path) as runtime:
        assert runtime.adopt(SPEC) is None  # never placed here
        placed = tmp_path / "vnf-fw"
        placed.mkdir()
        (placed / "config.json").write_text(json.dumps({"default": "drop"}))
        (placed / "stats.json").write_text(json.dumps({"pid": 1, "updated": 0, "ports": {}}))
        assert runtime.adopt(SPEC) is None  # placed with another configuration
        assert runtime.list() == []
