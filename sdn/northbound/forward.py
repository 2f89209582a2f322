"""In a cluster, a standby's API sends what needs the leader on to the leader.

Applies, rollbacks, diffs, verify and every view of the live network are the leader's
(it alone hears the switches and writes to them). Revisions are read from etcd by any
member, and health, metrics and the cluster's status are each member's own. While no
controller leads (an election, or etcd without quorum) a request waits up to
`ELECTION_WAIT` seconds for one, then is refused with 503 and changes nothing.
"""

from __future__ import annotations

import time
from functools import partial

import falcon
import requests
from os_ken.lib import hub

from common.blocking import run_blocking
from sdn.controller.cluster import ClusterMember
from sdn.controller.leadership import LeaderRecord

ELECTION_WAIT = 8.0  # seconds: longer than a lease plus an election
FORWARD_TIMEOUT = 120.0  # an apply waits for every switch's barrier
FORWARD_SLOTS = 8  # forwards at once: each holds an OS thread (eventlet's pool has 20,
# which compiling and etcd need too) until the leader answers
FORWARDED = "X-Sdn-Forwarded-By"
NOT_LEADER = "X-Sdn-Not-Leader"  # on a forwarded request's refusal: nothing ran, send again
LOCAL = {("GET", "/v1/policy"), ("GET", "/v1/policy/history"), ("GET", "/v1/health"),
         ("GET", "/v1/cluster"), ("GET", "/metrics"), ("GET", "/v1/view"),
         ("GET", "/v1/events")}
LOCAL_PREFIXES = ("/ui",)  # the web page; a standby draws the network it follows


class LeaderForward:
    """Falcon middleware: requests a standby cannot answer go to the leader."""

    def __init__(self, member: ClusterMember) -> None:
        self.member = member
        self.slots = hub.BoundedSemaphore(FORWARD_SLOTS)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if ((req.method, req.path) in LOCAL or req.path.startswith(LOCAL_PREFIXES)
                or self.member.leading()):
            return
        if req.get_header(FORWARDED):
            raise falcon.HTTPServiceUnavailable(
                title="not the leader",
                description=f"{req.get_header(FORWARDED)} forwarded this request here, but "
                            "this controller no longer leads; retry",
                headers={NOT_LEADER: self.member.node})
        # Parsed, not read raw: falcon keeps the parsed body for the resource in case
        # this controller is elected while the request waits.
        body = req.get_media(default_when_empty=None) if req.content_length else None
        deadline = time.monotonic() + ELECTION_WAIT
        tried = "no leader elected"
        while time.monotonic() < deadline:
            if self.member.leading():  # elected while waiting: answer here
                return
            leader = self.member.known_leader()
            if leader is not None and leader.node != self.member.node and leader.api:
                answer, tried = self._forward(req, leader, body)
                if answer is not None and answer.headers.get(NOT_LEADER):
                    # Refused before anything ran (it had just lost its lease, e.g. while
                    # etcd elected a leader of its own): wait for the next leader, maybe it.
                    answer, tried = None, f"{leader.node} no longer led when it got it"
                if answer is not None:
                    resp.status = falcon.code_to_http_status(answer.status_code)
                    resp.content_type = answer.headers.get("Content-Type", falcon.MEDIA_JSON)
                    resp.data = answer.content
                    resp.set_header("X-Sdn-Leader", leader.node)
                    resp.complete = True
                    return
                deadline = max(deadline, time.monotonic() + ELECTION_WAIT / 2)
            hub.sleep(0.1)
        raise falcon.HTTPServiceUnavailable(
            title="no leader",
            description=f"no controller of the cluster could take the request within "
                        f"{ELECTION_WAIT:g}s ({tried}); nothing was changed. Is etcd up "
                        "with a quorum? `sdnctl cluster status` shows the members")

    def _forward(self, req: falcon.Request, leader: LeaderRecord, body: object
                 ) -> tuple[requests.Response | None, str]:
        """Send the request to `leader`; give up waiting as soon as another is elected (a
        paused leader accepts connections but never answers; woken, it refuses what it
        was sent, since it no longer leads)."""
        done: dict[str, object] = {}

        def call() -> None:
            try:
                done["answer"] = run_blocking(partial(
                    requests.request, req.method, leader.api + req.relative_uri, json=body,
                    timeout=FORWARD_TIMEOUT,
                    headers={**_passed_headers(req), FORWARDED: self.member.node}))
            except requests.RequestException as exc:
                done["error"] = f"leader {leader.node} at {leader.api} did not answer: {exc}"
            finally:
                self.slots.release()

        if not self.slots.acquire(blocking=False):
            raise falcon.HTTPServiceUnavailable(
                title="busy", description=f"{FORWARD_SLOTS} requests are already waiting for "
                                          f"the leader; retry, or ask the leader directly")
        hub.spawn(call)
        while not done:
            current = self.member.known_leader()
            if current is None or current.generation != leader.generation:
                # Abandoned: the call ends with its timeout or the old leader's refusal,
                # and only then gives its slot back.
                return None, f"leader {leader.node} was replaced while it had the request"
            hub.sleep(0.05)
        answer = done.get("answer")
        return (answer, "") if isinstance(answer, requests.Response) else (None,
                                                                           str(done["error"]))


def _passed_headers(req: falcon.Request) -> dict[str, str]:
    return {name: value for name in ("Content-Type", "Authorization")
            if (value := req.get_header(name))}
