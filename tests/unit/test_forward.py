"""A standby's API (sdn.northbound.forward): what it answers itself, what it sends on to
the leader, and what it refuses — against a stand-in leader on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import falcon
import falcon.testing
import pytest

from sdn.controller.leadership import LeaderRecord
from sdn.northbound import forward
from sdn.northbound.forward import FORWARDED, NOT_LEADER, LeaderForward


class Member:
    def __init__(self, leader: LeaderRecord | None, leading: bool = False) -> None:
        self.node = "standby"
        self.leader = leader
        self.is_leading = leading

    def leading(self) -> bool:
        return self.is_leading

    def known_leader(self) -> LeaderRecord | None:
        return self.leader


class Local:
    def on_get(self, req, resp) -> None:
        resp.media = {"served_by": "standby"}

    on_post = on_get


@pytest.fixture
def leader():
    """A leader that echoes what it got; the first `refusals[0]` requests it refuses as one
    that has just lost its lease."""
    seen: list[dict] = []
    refusals = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"] or 0))
            seen.append({"path": self.path, "body": json.loads(body or b"null"),
                         "forwarded_by": self.headers[FORWARDED],
                         "auth": self.headers["Authorization"]})
            answer = json.dumps({"served_by": "leader"}).encode()
            refuse = refusals[0] > 0
            refusals[0] -= refuse
            self.send_response(503 if refuse else 409)
            if refuse:
                self.send_header(NOT_LEADER, "c0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen, refusals
    server.shutdown()
    server.server_close()


def client(member: Member) -> falcon.testing.TestClient:
    app = falcon.App(middleware=[LeaderForward(member)])
    for path in ("/v1/policy", "/v1/policy/history", "/v1/topology", "/v1/cluster"):
        app.add_route(path, Local())
    return falcon.testing.TestClient(app)


def test_reads_of_the_store_and_the_cluster_are_answered_here(leader):
    url, seen, _ = leader
    api = client(Member(LeaderRecord("c0", url, 5)))
    for path in ("/v1/policy", "/v1/policy/history", "/v1/cluster"):
        assert api.simulate_get(path).json == {"served_by": "standby"}
    assert seen == []


def test_writes_and_live_views_go_to_the_leader_with_the_clients_token(leader):
    url, seen, _ = leader
    api = client(Member(LeaderRecord("c0", url, 5)))
    answer = api.simulate_post("/v1/policy?dry_run=1", json={"text": "version: 1"},
                               headers={"Authorization": "Bearer t"})
    assert answer.status_code == 409 and answer.json == {"served_by": "leader"}
    assert answer.headers["X-Sdn-Leader"] == "c0"
    assert seen == [{"path": "/v1/policy?dry_run=1", "body": {"text": "version: 1"},
                     "forwarded_by": "standby", "auth": "Bearer t"}]


def test_the_leader_answers_for_itself():
    api = client(Member(None, leading=True))
    assert api.simulate_post("/v1/policy", json={}).json == {"served_by": "standby"}


def test_a_request_forwarded_to_a_member_that_no_longer_leads_is_refused():
    api = client(Member(LeaderRecord("c1", "http://127.0.0.1:9", 7)))
    answer = api.simulate_post("/v1/policy", json={}, headers={FORWARDED: "c2"})
    assert answer.status_code == 503 and "no longer leads" in answer.json["description"]
    assert answer.headers[NOT_LEADER] == "standby"  # so the sender knows nothing ran


def test_a_leader_that_lost_its_lease_when_the_request_came_is_asked_again(leader):
    """It refused before anything ran; re-elected (same record), it takes the request."""
    url, seen, refusals = leader
    refusals[0] = 2
    answer = client(Member(LeaderRecord("c0", url, 5))).simulate_post("/v1/policy", json={})
    assert answer.status_code == 409 and answer.json == {"served_by": "leader"}
    assert len(seen) == 3


def test_without_a_leader_a_write_is_refused_after_the_wait(monkeypatch):
    monkeypatch.setattr(forward, "ELECTION_WAIT", 0.3)
    answer = client(Member(None)).simulate_post("/v1/policy", json={})
    assert answer.status_code == 503
    assert "nothing was changed" in answer.json["description"]
