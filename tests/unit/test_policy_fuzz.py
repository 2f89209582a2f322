"""The validator never crashes: seeded mutants of the examples are accepted or rejected
with file:line:col, through the loader, the REST API and the CLI; what it accepts can be
compiled and encoded for the switches."""

from __future__ import annotations

import random
import re
from pathlib import Path

import falcon.testing
import pytest
from typer.testing import CliRunner

from sdn.compile.chain_model import ChainError
from sdn.controller.apply import PolicyEngine
from sdn.northbound.api import make_api
from sdn.northbound.cli import app as sdnctl
from sdn.policy.load import load_policy
from sdn.policy.problems import PolicyError
from sdn.policy.store import PolicyStore
from sdn.southbound import codec
from testing.fakes import FakeDatapath, connected_state
from testing.policy_fuzz import NASTY_VALUES, mutate

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
MUTANTS = 2400
LOCATED = re.compile(r"^fuzz\.yaml:\d+:\d+: ")


def mutants(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = [p.read_text() for p in EXAMPLES]
    return [mutate(rng, rng.choice(texts)) for _ in range(count)]


def test_every_mutant_is_accepted_or_rejected_with_its_location():
    accepted = rejected = 0
    for text in mutants(seed=2026, count=MUTANTS):
        try:
            policy = load_policy(text, "fuzz.yaml", hosts={})  # as the controller loads it
        except PolicyError as exc:
            rejected += 1
            lines = str(exc).splitlines()
            assert lines and all(LOCATED.match(line) for line in lines), (text[:300], lines)
            continue
        accepted += 1
        installable(policy)
    assert rejected > MUTANTS // 4 and accepted > MUTANTS // 10  # the mutants exercise both


def installable(policy) -> None:
    """What the validator accepts compiles, and every rule and meter encodes."""
    state = connected_state((1, 2, 3, 4))
    try:
        desired = state.desired(policy)
    except ChainError:
        return  # reported as a policy problem at apply time (names the chain)
    dp = FakeDatapath(1)
    for rules in desired.values():
        for meter in rules.meters.values():
            codec.meter_mod(dp, meter, dp.ofproto.OFPMC_ADD).serialize()
        for rule in rules.flows.values():
            codec.flow_add_bytes(rule, 1)
        for group in rules.groups.values():
            codec.group_mod(dp, group, dp.ofproto.OFPGC_ADD).serialize()


def test_the_api_answers_every_mutant_without_a_server_error(tmp_path):
    state = connected_state((1, 2, 3, 4))
    client = falcon.testing.TestClient(make_api(state, PolicyEngine(state, PolicyStore(tmp_path))))
    statuses: dict[int, int] = {}
    for text in mutants(seed=11, count=MUTANTS // 2):
        resp = client.simulate_post("/v1/policy", json={"text": text, "dry_run": True})
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (text[:300], resp.text[:500])
    assert set(statuses) <= {200, 422} and statuses.get(422)


@pytest.mark.parametrize("value", NASTY_VALUES[:24])
def test_the_cli_reports_bad_files_without_a_traceback(tmp_path, value):
    path = tmp_path / "bad.yaml"
    path.write_text(f"version: 1\nclasses:\n  - {{name: a, match: {{dst_port: {value}}}, "
                    "priority: high}\n")
    result = CliRunner().invoke(sdnctl, ["policy", "apply", "--dry-run", "-f", str(path),
                                         "--api", "127.0.0.1:9"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_the_cli_names_where_a_file_stops_being_text(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"version: 1\nclasses:\n  - {name: a\xff}\n")
    result = CliRunner().invoke(sdnctl, ["policy", "apply", "--dry-run", "-f", str(path)])
    assert result.exit_code == 2
    assert f"{path}:3:13: not UTF-8 text (byte 0xff)" in result.output


@pytest.mark.parametrize(("text", "where"), [
    ("version: 1.0\n", "p.yaml:1:1: version: unsupported policy version 1.0"),
    ("version: 1\nbogus: null\n", "p.yaml:2:1: bogus: unknown field 'bogus'"),
    ("version: 1\nclasses:\n  - {name: a, match: {proto: tcp, dst_port: \uff18\uff10}, "
     "priority: high}\n", "classes[0].match.dst_port: invalid port"),
    ("version: 1\ntopology:\n  links:\n    - {between: [s1, s2], weight: .inf}\n",
     "topology.links[0].weight: Input should be a finite number"),
    ("version: 1\nclasses:\n  - {name: a, match: {proto: tcp}, priority: low, "
     "max_rate: 99999999999999999999tbit}\n", "classes[0].max_rate: rate"),
    ("version: 1\nhosts:\n  h1: {mac: \"01:00:5e:00:00:01\", ip: 10.0.0.1}\n",
     "hosts.h1.mac: 01:00:5e:00:00:01 is a multicast"),
    ("x: &a [*a]\n", "an alias that contains itself"),
    ("x: " + "[" * 1200 + "]" * 1200 + "\n", "nested more than 32 levels deep"),
    ("x: " + "9" * 5000 + "\n", "unreadable value"),
    ("version: 1\x00\n", "YAML error: unacceptable character #x0000"),
] + [(f"version: 1\nvnfs:\n  lb: {{type: loadbalancer, switch: s2, vip: {vip}, "
      f"backends: [{backend}]}}\n", f"{field}: {bad} is")
     for vip, backend, field, bad in [
         ("0.0.0.0", "10.0.0.3", "vnfs.lb.vip", "0.0.0.0"),
         ("255.255.255.255", "10.0.0.3", "vnfs.lb.vip", "255.255.255.255"),
         ("10.0.0.100", "127.0.0.1", "vnfs.lb.backends[0].ip", "127.0.0.1"),
         ("10.0.0.100", "224.0.0.1", "vnfs.lb.backends[0].ip", "224.0.0.1")]])
def test_what_once_crashed_or_slipped_through_is_rejected_with_a_reason(text, where):
    with pytest.raises(PolicyError) as err:
        load_policy(text, "p.yaml")
    assert where in str(err.value)
