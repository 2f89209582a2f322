"""The worker's pieces that run without root: function loading, stats files, bad start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.files import write_atomic
from nfv.datapath import worker
from nfv.functions.firewall import Firewall
from nfv.functions.forward import Forward


def test_load_function_by_kind() -> None:
    assert isinstance(worker.load_function("forward", {}), Forward)
    assert isinstance(worker.load_function("firewall", {"default": "allow"}), Firewall)
    with pytest.raises(ValueError):
        worker.load_function("firewall", {"default": "sometimes"})


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"b": 2}')
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_bad_config_or_interface_exits_nonzero(tmp_path: Path) -> None:
    cfg = tmp_path / "fw.json"
    cfg.write_text(json.dumps({"default": "nope"}))
    argv = ["--kind", "firewall", "--config", str(cfg), "--ingress", "nf1-none0",
            "--egress", "nf1-none1", "--stats", str(tmp_path / "s.json")]  # fmt: skip
    assert worker.main(argv) == 1
    cfg.write_text("{}")
    assert worker.main(argv) == 1  # no such interface (or no permission)
    assert not (tmp_path / "s.json").exists()
