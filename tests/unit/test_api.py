"""The REST API through falcon's test client, against controller state with fake
switches (testing.fakes): status codes, bodies, auth."""

from __future__ import annotations

import falcon.testing
import pytest

from sdn.controller.apply import PolicyEngine
from sdn.northbound.api import make_api
from sdn.policy.store import PolicyStore
from testing.fakes import connected_state

VOICE = """version: 1
classes:
  - {name: voice, match: {proto: udp, dst_port: 5004}, priority: high}
"""


@pytest.fixture
def api(tmp_path):
    state = connected_state()
    state.topology.learn_host("00:00:00:00:00:01", 1, 3, "10.0.0.1", trusted=True)
    state.topology.learn_host("00:00:00:00:00:02", 2, 3, "10.0.0.2", trusted=True)
    return falcon.testing.TestClient(make_api(state, PolicyEngine(state, PolicyStore(tmp_path))))


def test_health_topology_and_path(api):
    assert api.simulate_get("/v1/health").json == {"status": "ok", "switches": 2, "ready": 2}
    topo = api.simulate_get("/v1/topology").json
    assert [s["name"] for s in topo["switches"]] == ["s1", "s2"]
    assert len(topo["links"]) == 1 and len(topo["hosts"]) == 2
    path = api.simulate_get("/v1/path", params={"src": "10.0.0.1", "dst": "10.0.0.2"}).json
    assert [(h["name"], h["in_port"], h["out_port"]) for h in path["hops"]] == [
        ("s1", 3, 1), ("s2", 2, 3)]
    missing = api.simulate_get("/v1/path", params={"src": "10.0.0.1", "dst": "10.9.9.9"})
    assert missing.status_code == 404


def test_apply_history_and_rollback(api):
    dry = api.simulate_post("/v1/policy", json={"text": VOICE, "dry_run": True})
    assert dry.status_code == 200 and not dry.json["changed"] and dry.json["flow_mods"] > 0
    assert api.simulate_get("/v1/policy").status_code == 404
    done = api.simulate_post("/v1/policy", json={"text": VOICE, "author": "alice"})
    assert done.json["changed"] and done.json["revision"]["rev"] == 1
    assert api.simulate_get("/v1/policy").json["source"] == VOICE
    assert [r["rev"] for r in api.simulate_get("/v1/policy/history").json] == [1]
    flows = api.simulate_get("/v1/flows", params={"switch": "s1"}).json
    assert list(flows) == ["0000000000000001"] and flows["0000000000000001"]["flows"]
    gone = api.simulate_post("/v1/policy/rollback", json={"rev": 7})
    assert gone.status_code == 404


def test_bad_requests_get_4xx_with_a_reason(api):
    invalid = api.simulate_post("/v1/policy", json={"text": VOICE.replace("5004", "70000"),
                                                    "filename": "bad.yaml"})
    assert invalid.status_code == 422 and "bad.yaml:3:" in invalid.json["description"]
    assert api.simulate_post("/v1/policy", json={"nothing": 1}).status_code == 400
    assert api.simulate_post("/v1/policy/rollback", json={"rev": "1"}).status_code == 400
    assert api.simulate_get("/v1/flows", params={"switch": "s9"}).status_code == 404


def test_a_token_is_required_when_configured(tmp_path):
    state = connected_state()
    app = make_api(state, PolicyEngine(state, PolicyStore(tmp_path)), token="s3cret")
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/v1/health").status_code == 401
    assert client.simulate_get("/v1/health", headers={"Authorization": "Bearer nope"}
                               ).status_code == 401
    assert client.simulate_get("/v1/health", headers={"Authorization": "Bearer s3cret"}
                               ).status_code == 200


def test_labels_and_numbers_from_requests_are_bounded(api):
    for body in ({"text": VOICE, "author": "x" * 129}, {"text": VOICE, "author": "a\r\nb"},
                 {"text": VOICE, "filename": "f" * 257}, {"text": VOICE, "author": 7}):
        assert api.simulate_post("/v1/policy", json=body).status_code == 400, body
    for rev in (True, 1 << 63, 0, -1, 1.0):
        assert api.simulate_post("/v1/policy/rollback", json={"rev": rev}).status_code == 400
    for limit in ("1e23", str(10**23), "0"):
        assert api.simulate_get("/v1/policy/history", params={"limit": limit}
                                ).status_code == 400


def test_the_token_must_come_as_a_bearer_token(tmp_path):
    state = connected_state()
    app = make_api(state, PolicyEngine(state, PolicyStore(tmp_path)), token="s3cret")
    client = falcon.testing.TestClient(app)
    for header in ("s3cret", "Basic s3cret", "Bearer", "Bearers3cret", "Bearer s3cret2"):
        assert client.simulate_get("/v1/health", headers={"Authorization": header}
                                   ).status_code == 401, header
    assert client.simulate_get("/v1/health", headers={"Authorization": "bearer s3cret"}
                               ).status_code == 200


def test_a_store_that_disappeared_answers_503(api, tmp_path):
    (tmp_path / "state.db").unlink()
    resp = api.simulate_get("/v1/policy/history")
    assert resp.status_code == 503 and "disappeared" in resp.json["description"]
    assert api.simulate_post("/v1/policy", json={"text": VOICE}).status_code == 409
