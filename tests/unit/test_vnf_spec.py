"""VnfSpec validation and instance naming."""

import pytest

from nfv.host.instance import default_worker
from nfv.host.spec import VnfSpec


def test_instance_names() -> None:
    assert VnfSpec(name="fw", kind="firewall", switch="s1").instance == "fw"
    assert VnfSpec(name="fw", kind="firewall", switch="s1", replica=2).instance == "fw-2"


@pytest.mark.parametrize("bad", [
    {"name": "Fw"}, {"name": "1fw"}, {"name": "x" * 33}, {"kind": "router"},
    {"failure_mode": "maybe"}, {"replica": -1}, {"cpu": 0}, {"memory": -5},
])
def test_invalid_specs(bad: dict) -> None:
    args = {"name": "fw", "kind": "forward", "switch": "s1", **bad}
    with pytest.raises(ValueError):
        VnfSpec(**args)


def test_default_worker_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDN_VNF_WORKER", raising=False)
    assert default_worker()[1:] == ["-m", "nfv.datapath.worker"]
    monkeypatch.setenv("SDN_VNF_WORKER", "/usr/bin/python3 '/a b/w.py'")
    assert default_worker() == ["/usr/bin/python3", "/a b/w.py"]
