"""In a cluster, a standby's API sends what needs the leader on to the leader.

Applies, rollbacks, diffs, verify and every view of the live network are the leader's
(it alone hears the switches and writes to them). Revisions are read from etcd by any
member, and health, metrics and the cluster's status are each member's own. While no
controller leads (an election, or etcd without quorum) a request waits up to
`ELECTION_WAIT` seconds for one, then is refused with 503 and changes nothing.
"""

from __future__ import annotations

import time

import falcon
import requests
from os_ken.lib import hub

from sdn.controller.cluster import ClusterMember

ELECTION_WAIT = 8.0  # seconds: longer than a lease plus an election
FORWARD_TIMEOUT = 120.0  # an apply waits for every switch's barrier
FORWARDED = "X-Sdn-Forwarded-By"
LOCAL = {("GET", "/v1/policy"), ("GET", "/v1/policy/history"), ("GET", "/v1/health"),
         ("GET", "/v1/cluster"), ("GET", "/metrics")}


class LeaderForward:
    """Falcon middleware: requests a standby cannot answer go to the leader."""

    def __init__(self, member: ClusterMember, session: requests.Session | None = None) -> None:
        self.member = member
        self.session = session or requests.Session()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if (req.method, req.path) in LOCAL or self.member.leading():
            return
        if req.get_header(FORWARDED):
            raise falcon.HTTPServiceUnavailable(
                title="not the leader",
                description=f"{req.get_header(FORWARDED)} forwarded this request here, but "
                            "this controller no longer leads; retry")
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
                try:
                    answer = self.session.request(
                        req.method, leader.api + req.relative_uri, json=body,
                        timeout=FORWARD_TIMEOUT,
                        headers={**_passed_headers(req), FORWARDED: self.member.node})
                except requests.RequestException as exc:
                    tried = f"leader {leader.node} at {leader.api} did not answer: {exc}"
                else:
                    resp.status = falcon.code_to_http_status(answer.status_code)
                    resp.content_type = answer.headers.get("Content-Type",
                                                           falcon.MEDIA_JSON)
                    resp.data = answer.content
                    resp.set_header("X-Sdn-Leader", leader.node)
                    resp.complete = True
                    return
            hub.sleep(0.1)
        raise falcon.HTTPServiceUnavailable(
            title="no leader",
            description=f"no controller of the cluster could take the request within "
                        f"{ELECTION_WAIT:g}s ({tried}); nothing was changed. Is etcd up "
                        "with a quorum? `sdnctl cluster status` shows the members")


def _passed_headers(req: falcon.Request) -> dict[str, str]:
    return {name: value for name in ("Content-Type", "Authorization")
            if (value := req.get_header(name))}
