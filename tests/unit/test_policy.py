"""Policy schema v1: what loads, what is rejected, and where the error is reported."""

import json
import random
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from common.contract import vip_mac
from sdn.policy.load import load_policy
from sdn.policy.problems import PolicyError, Problem, format_path
from sdn.policy.schema import Firewall, LoadBalancer, Match, Policy

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((Path(__file__).parent / "bad_policies").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EXPECT = re.compile(r"# expect: (?P<field>\S+) @ (?P<line>\d+)$")
LIVE = {"s1": 1, "s2": 2, "s3": 3}


def problems_of(text: str, **kwargs) -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        load_policy(text, "p.yaml", **kwargs)
    return info.value.problems


def fields_of(text: str, **kwargs) -> set[str]:
    return {p.field for p in problems_of(text, **kwargs)}


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_large_enough():
    assert len(BAD) >= 35


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_policy_is_rejected_at_its_field_and_line(path):
    text = path.read_text()
    m = EXPECT.match(text.splitlines()[0])
    assert m, f"{path.name}: first line must be '# expect: <field> @ <line>'"
    field = "" if m["field"] == "-" else m["field"]
    problems = problems_of(text, hosts={})
    assert [(p.field, p.line) for p in problems] == [(field, int(m["line"]))], "\n".join(
        map(str, problems)
    )
    assert problems[0].file == "p.yaml"
    assert problems[0].message


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_load(path):
    policy = load_policy(path.read_text(), str(path), hosts={}, switches=LIVE)
    assert policy.version == 1
    json.dumps(policy.canonical())


def test_required_examples_exist():
    assert {"minimal", "priorities", "web-chain"} <= {p.stem for p in EXAMPLES}


# --------------------------------------------------------------------------- error reporting


MANY_MISTAKES = """\
version: 1
routing: {metric: hop}
classes:
  - name: voice
    match: {proto: udp, dst_prot: 5000}
vnfs:
  fw: {type: firewall, switch: s1}
  fw: {type: analyzer, switch: s2}
  lb: {type: loadbalancer, switch: s2, backends: [10.0.0.3]}
"""


def test_all_problems_are_collected_in_file_order():
    problems = problems_of(MANY_MISTAKES)
    assert [(p.line, p.field) for p in problems] == [
        (2, "routing.metric"),
        (5, "classes[0].match.dst_prot"),
        (8, "vnfs.fw"),
        (9, "vnfs.lb.vip"),
    ]


def test_error_text_is_file_line_col_field_message():
    with pytest.raises(PolicyError) as info:
        load_policy(MANY_MISTAKES, "policy.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("policy.yaml:2:11: routing.metric: ")
    assert lines[1] == (
        "policy.yaml:5:25: classes[0].match.dst_prot: unknown field 'dst_prot' "
        "(did you mean 'dst_port'?)"
    )
    assert lines[2] == "policy.yaml:8:3: vnfs.fw: duplicate key 'fw' (first defined at line 7)"


def test_problem_without_field_omits_it():
    assert str(Problem("f.yaml", 3, 1, "", "YAML syntax error")) == "f.yaml:3:1: YAML syntax error"


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


def test_format_path():
    assert format_path(("vnfs", "fw", "rules", 2, "dst_port")) == "vnfs.fw.rules[2].dst_port"
    assert format_path(()) == ""


def test_semantic_problems_are_all_reported():
    text = """\
version: 1
vnfs:
  fw: {type: firewall, switch: core}
chains:
  - {name: a, match: {proto: tcp}, through: [fw, nat]}
  - {name: a, match: {proto: udp}, through: [fw, fw]}
"""
    assert fields_of(text) == {
        "vnfs.fw.switch",
        "chains[0].through[1]",
        "chains[1].name",
        "chains[1].through[1]",
    }


def test_multiple_documents_are_rejected():
    problems = problems_of("version: 1\n---\nversion: 1\n")
    assert problems[0].line == 2
    assert "single document" in problems[0].message


def test_python_tags_are_refused():
    problems = problems_of("version: 1\nrouting: !!python/object/apply:os.system ['true']\n")
    assert ("routing", 2, 10) in {(p.field, p.line, p.column) for p in problems}
    assert any("unsupported YAML tag" in p.message for p in problems)
    problems = problems_of("version: !!python/name:os.system 1\n")
    assert any("could not determine a constructor" in p.message for p in problems)


def test_alias_bomb_is_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    problems = problems_of("version: 1\n" + "\n".join(lines) + "\n")
    assert "too large" in problems[0].message


def test_nested_lists_are_not_mapping_document():
    assert problems_of("[1, 2]\n")[0].message.endswith("this document is a list")


# --------------------------------------------------------------------------- references


def test_live_switches_make_unknown_switches_errors():
    text = "version: 1\nvnfs:\n  fw: {type: firewall, switch: s9}\n"
    load_policy(text)  # s9 is dpid 9 by Mininet naming: fine without live facts
    problems = problems_of(text, switches=LIVE)
    assert [(p.field, p.line) for p in problems] == [("vnfs.fw.switch", 3)]
    assert "known: s1, s2, s3" in problems[0].message


def test_live_switch_known_by_dpid_or_by_policy_topology():
    text = """\
version: 1
topology: {switches: {edge: 42}}
vnfs:
  fw: {type: firewall, switch: edge}
  mon: {type: analyzer, switch: s7}
"""
    policy = load_policy(text, switches={"of:7": 7})
    assert policy.dpid_of("edge") == 42
    assert policy.dpid_of("s7") == 7
    assert policy.dpid_of("core") is None


def test_unknown_hosts_only_checked_when_hosts_are_given():
    text = "version: 1\nclasses:\n  - {name: a, match: {src: h1}}\n"
    load_policy(text)
    assert fields_of(text, hosts={}) == {"classes[0].match.src"}
    load_policy(text, hosts={"h1": {"ip": "10.0.0.1"}})


def test_live_host_facts_resolve_addresses_for_shadowing():
    text = """\
version: 1
classes:
  - {name: lan, match: {dst: 10.0.0.0/24}}
  - {name: h3, match: {dst: h3}}
"""
    load_policy(text)  # h3's address is unknown: cannot tell it is covered
    assert fields_of(text, hosts={"h3": {"ip": "10.0.0.3"}}) == {"classes[1].match"}
    load_policy(text, hosts={"h3": {"ip": "192.168.0.3"}})


# --------------------------------------------------------------------------- the model


WEB = (ROOT / "examples" / "web-chain.yaml").read_text()


def test_web_chain_model():
    p = load_policy(WEB)
    fw, lb, mon = p.vnfs["fw"], p.vnfs["lb"], p.vnfs["mon"]
    assert isinstance(fw, Firewall)
    assert fw.rules[1].dst_port == (20, 23)
    assert fw.memory == 256_000_000
    assert isinstance(lb, LoadBalancer)
    assert [(b.ip, b.port, b.weight) for b in lb.backends] == [
        ("10.0.0.3", 80, 2),
        ("10.0.0.4", None, 1),
    ]
    assert [lb.backend_port(b) for b in lb.backends] == [80, 80]
    assert lb.health_check.interval == pytest.approx(0.2)
    assert mon.type == "analyzer" and mon.active_timeout == 60.0
    assert p.chains[0].through == ("fw", "lb", "mon")
    assert p.chains[0].match.dst == "10.0.0.100/32"
    assert p.topology.links[0].capacity == 10**9
    assert p.topology.links[0].latency == pytest.approx(0.001)


def test_defaults():
    p = load_policy("version: 1\nvnfs:\n  fw: {type: firewall, switch: s1}\n")
    assert (p.routing.metric, p.routing.ecmp, p.routing.protection) == (
        "hops",
        True,
        "fast-failover",
    )
    fw = p.vnfs["fw"]
    assert (fw.replicas, fw.failure_mode, fw.default, fw.offload, fw.rules) == (
        1,
        "closed",
        "drop",
        False,
        (),
    )


def test_vip_mac_is_derived_from_the_name_unless_given():
    text = WEB
    lb = load_policy(text).vnfs["lb"]
    assert lb.mac_for("lb") == vip_mac("lb")
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", vip_mac("lb"))
    assert vip_mac("lb") != vip_mac("lb2")
    given = text.replace("vip: 10.0.0.100\n", 'vip: 10.0.0.100\n    vip_mac: "02:AA:00:00:00:01"\n')
    assert load_policy(given).vnfs["lb"].mac_for("lb") == "02:aa:00:00:00:01"


@pytest.mark.parametrize(
    ("written", "proto", "number"),
    [
        ("tcp", "tcp", 6),
        ("UDP", "udp", 17),
        (6, "tcp", 6),
        (1, "icmp", 1),
        (47, 47, 47),
        ("any", None, None),
    ],
)
def test_proto_is_normalised(written, proto, number):
    m = Match.model_validate({"proto": written})
    assert (m.proto, m.ip_proto) == (proto, number)


def test_class_dscp_marks():
    text = """\
version: 1
classes:
  - {name: a, match: {dscp: 1}, priority: high}
  - {name: b, match: {dscp: 2}}
  - {name: c, match: {dscp: 3}, priority: low}
"""
    assert [c.dscp_mark for c in load_policy(text).classes] == [46, 26, 10]


def test_models_are_frozen():
    p = load_policy(WEB)
    with pytest.raises(ValidationError):
        p.routing.ecmp = False  # type: ignore[misc]


def test_yaml_merge_keys_work_and_explicit_keys_win():
    text = """\
version: 1
vnfs:
  fw1: &fw {type: firewall, switch: s1, default: allow, cpu: 0.5}
  fw2:
    <<: *fw
    switch: s2
"""
    p = load_policy(text)
    assert (p.vnfs["fw2"].switch, p.vnfs["fw2"].default, p.vnfs["fw2"].cpu) == ("s2", "allow", 0.5)


def test_error_inside_merged_mapping_points_to_the_anchor():
    text = """\
version: 1
vnfs:
  fw1: &fw {type: firewall, switch: s1, cpu: lots}
  fw2:
    <<: *fw
    switch: s2
"""
    assert {(p.field, p.line) for p in problems_of(text)} == {
        ("vnfs.fw1.cpu", 3),
        ("vnfs.fw2.cpu", 3),
    }


# --------------------------------------------------------------------------- coverage of matches


def resolve_none(_name):
    return None


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        ({}, {"proto": "tcp", "dst_port": 80}, True),
        ({"proto": "tcp"}, {"proto": "udp"}, False),
        ({"proto": "tcp"}, {}, False),
        ({"src": "10.0.0.0/16"}, {"src": "10.0.1.0/24"}, True),
        ({"src": "10.0.1.0/24"}, {"src": "10.0.0.0/16"}, False),
        ({"src": "10.0.0.0/16"}, {}, False),
        ({"proto": "tcp", "dst_port": "1-1024"}, {"proto": "tcp", "dst_port": 80}, True),
        ({"proto": "tcp", "dst_port": "1-1024"}, {"proto": "tcp", "dst_port": "1000-2000"}, False),
        ({"proto": "tcp", "dst_port": 80}, {"proto": "tcp"}, False),
        ({"dscp": 46}, {"dscp": 46, "proto": "udp"}, True),
        ({"dscp": 46}, {"dscp": 10}, False),
        ({"in_host": "h1"}, {"in_host": "h1", "dst": "h2"}, True),
        ({"dst": "h2"}, {"dst": "h2"}, True),
        ({"dst": "h2"}, {"dst": "h3"}, False),
    ],
)
def test_match_covers(outer, inner, covered):
    assert Match.model_validate(outer).covers(Match.model_validate(inner), resolve_none) is covered


# --------------------------------------------------------------------------- canonical form and ids


def test_canonical_ignores_spelling_and_explicit_defaults():
    terse = "version: 1\nclasses:\n  - {name: web, match: {proto: 6, dst: 10.0.0.1}}\n"
    verbose = """\
version: 1
routing: {metric: hops, ecmp: true, protection: fast-failover}
classes:
  - name: web
    priority: medium
    match: {proto: tcp, dst: 10.0.0.1/32}
vnfs: {}
"""
    a, b = load_policy(terse), load_policy(verbose)
    assert a.canonical() == b.canonical()
    assert a.canonical_json() == b.canonical_json()
    assert a.digest() == b.digest()
    assert a.object_ids() == b.object_ids()


def test_canonical_is_json_and_sorted():
    c = load_policy(WEB).canonical()
    assert json.loads(json.dumps(c)) == c
    assert list(c) == sorted(c)
    assert list(c["vnfs"]) == ["fw", "lb", "mon"]
    assert c["vnfs"]["fw"]["rules"][1]["dst_port"] == "20-23"
    assert c["vnfs"]["fw"]["rules"][0]["dst_port"] == 80


def test_object_ids_keys_and_range():
    ids = load_policy(WEB).object_ids()
    assert list(ids) == [
        "routing",
        "topology",
        "host:h1",
        "host:h2",
        "host:h3",
        "host:h4",
        "class:web",
        "vnf:fw",
        "vnf:lb",
        "vnf:mon",
        "chain:web",
    ]
    assert all(0 < v < (1 << 64) - 1 for v in ids.values())
    assert len(set(ids.values())) == len(ids)


def test_object_ids_change_only_for_the_changed_object():
    before = load_policy(WEB).object_ids()
    after = load_policy(WEB.replace("new_conn_rate: 1000", "new_conn_rate: 500")).object_ids()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"vnf:fw"}
    assert load_policy(WEB).object_ids() == before


def test_same_content_under_two_names_gets_two_ids():
    text = """\
version: 1
vnfs:
  a: {type: analyzer, switch: s1}
  b: {type: analyzer, switch: s1}
"""
    ids = load_policy(text).object_ids()
    assert ids["vnf:a"] != ids["vnf:b"]


def test_policy_is_a_pydantic_model():
    p = load_policy(WEB)
    assert isinstance(p, Policy)
    assert Policy.model_validate(p.canonical()) == p


def test_example_in_docs_loads():
    doc = (ROOT / "docs" / "policy.md").read_text()
    block = doc.split("## A complete example")[1].split("```yaml\n")[1].split("```")[0]
    policy = load_policy(block, "docs/policy.md", switches=LIVE, hosts={})
    assert [c.name for c in policy.chains] == ["web"]


def test_sections_left_empty_mean_empty():
    p = load_policy("version: 1\nclasses:\nvnfs:\n# fw: {type: firewall, switch: s1}\n")
    assert (p.classes, p.vnfs) == ((), {})
    assert fields_of("version:\n") == {"version"}


def test_shadowing_found_by_the_index_equals_the_pairwise_definition():
    rng = random.Random(5)
    classes = []
    for i in range(400):
        match = {}
        if rng.random() < 0.7:
            match["proto"] = rng.choice(["tcp", "udp"])
        if rng.random() < 0.6:
            lo = rng.randrange(1, 40)
            match["dst_port"] = lo if rng.random() < 0.6 else f"{lo}-{lo + rng.randrange(1, 20)}"
        if rng.random() < 0.4:
            match["dst"] = rng.choice(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3"])
        if rng.random() < 0.2:
            match["dscp"] = rng.choice([10, 46])
        classes.append({"name": f"c{i}", "match": match or {"proto": "tcp"},
                        "priority": "low"})
    text = yaml.safe_dump({"version": 1, "classes": classes}, default_flow_style=True)
    matches = [Match.model_validate(c["match"]) for c in classes]
    expected = {}
    for i, m in enumerate(matches):
        first = next((j for j in range(i) if matches[j].covers(m, lambda _: None)), None)
        if first is not None:
            expected[i] = first
    with pytest.raises(PolicyError) as err:
        load_policy(text, "p.yaml")
    found = {int(m.group(1)): int(m.group(2)) for m in re.finditer(
        r"classes\[(\d+)\]\.match: class '\w+' can never match: classes\[(\d+)\]", str(err.value))}
    assert found == expected and len(expected) > 50
