"""Northbound REST API (JSON over HTTP, Falcon), served inside the controller process."""

from __future__ import annotations

import hmac

import falcon
import networkx as nx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.etcd import StoreUnavailable
from sdn.compile import routing
from sdn.compile.chain_model import BYPASS_IDLE_TIMEOUT
from sdn.controller.apply import ApplyFailed, PolicyEngine
from sdn.controller.cluster import ClusterMember
from sdn.controller.port_stats import PortStats
from sdn.controller.state import ControllerState
from sdn.controller.trace import TraceError, find_host, probe_for, trace_in
from sdn.controller.verify import VerifyError, object_names, verify
from sdn.model.rules import FlowRule, Group
from sdn.northbound.forward import LeaderForward
from sdn.northbound.web import TOKEN_COOKIE, add_web
from sdn.policy.problems import PolicyError
from sdn.policy.source import MAX_POLICY_BYTES
from sdn.policy.store import RevisionNotFound, StoreError
from sdn.reconcile.drift import describe

MAX_BODY = MAX_POLICY_BYTES + (64 << 10)  # a policy as JSON, and room for the rest
MAX_AUTHOR = 128
MAX_HISTORY = 10_000  # revisions one history request returns at most
MAX_REV = (1 << 63) - 1  # SQLite's integers
MAX_FILENAME = 256


def dpid_name(dpid: int) -> str:
    return f"{dpid:016x}"


def rule_json(rule: FlowRule) -> dict:
    return {
        "table": rule.table, "priority": rule.priority, "cookie": f"{rule.cookie:#018x}",
        "match": {k: list(v) if isinstance(v, tuple) else v for k, v in rule.match},
        "actions": [list(a) for a in rule.actions], "goto": rule.goto, "meter": rule.meter,
        "write_metadata": [f"{v:#x}" for v in rule.write_metadata] if rule.write_metadata
        else None,
    }


def group_json(group: Group) -> dict:
    return {
        "group_id": group.group_id, "type": group.type,
        "buckets": [{"actions": [list(a) for a in b.actions], "watch_port": b.watch_port,
                     "watch_group": b.watch_group, "weight": b.weight} for b in group.buckets],
    }


class Resource:
    def __init__(self, state: ControllerState, engine: PolicyEngine) -> None:
        self.ctl = state
        self.engine = engine


class Health(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok", "switches": len(self.ctl.switches),
                      "ready": sum(c.ready for c in self.ctl.switches.values())}


class TopologyView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        topology = self.ctl.topology
        snap = topology.snapshot()
        names = topology.bridge_names

        def port_name(dpid: int, port: int) -> str:
            return topology.port_names.get(dpid, {}).get(port, "")

        resp.media = {
            "switches": [{"dpid": dpid_name(d), "name": names.get(d, ""), "ports": sorted(p),
                          "connected": d in self.ctl.switches}
                         for d, p in sorted(snap.switches.items())],
            "links": [{"a": dpid_name(lk.a), "a_port": lk.a_port, "b": dpid_name(lk.b),
                       "b_port": lk.b_port, "a_name": port_name(lk.a, lk.a_port),
                       "b_name": port_name(lk.b, lk.b_port),
                       "weight": snap.weights.get(frozenset((lk.a, lk.b)), 1.0)}
                      for lk in snap.links],
            "hosts": [{"mac": h.mac, "ips": list(h.ips), "switch": dpid_name(h.dpid),
                       "port": h.port, "port_name": port_name(h.dpid, h.port)}
                      for h in snap.hosts],
        }


class PathView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        src = self._host(req.get_param("src", required=True))
        dst = self._host(req.get_param("dst", required=True))
        snap = self.ctl.topology.snapshot()
        graph = snap.graph()
        try:
            switches = routing.shortest_path(graph, src.dpid, dst.dpid)
        except (nx.NetworkXNoPath, nx.NodeNotFound) as exc:
            raise falcon.HTTPNotFound(title="no path", description=str(exc)) from exc
        hops, in_port = [], src.port
        for here, nxt in zip(switches, [*switches[1:], None], strict=True):
            if nxt is None:
                out_port, weight = dst.port, 0.0
            else:
                edge = graph[here][nxt]
                out_port, weight = edge["link"].port_at(here), edge["weight"]
            hops.append({"switch": dpid_name(here),
                         "name": self.ctl.topology.bridge_names.get(here, ""), "in_port": in_port,
                         "out_port": out_port, "weight": weight})
            if nxt is not None:
                in_port = graph[here][nxt]["link"].port_at(nxt)
        resp.media = {"src": src.mac, "dst": dst.mac, "hops": hops,
                      "cost": sum(h["weight"] for h in hops)}

    def _host(self, key: str):
        host = find_host(self.ctl, key)
        if host is None:
            raise falcon.HTTPNotFound(title="unknown host",
                                      description=f"no host named {key!r} (name, IP or MAC)")
        return host


def _by_table(rule: FlowRule) -> tuple:
    """Table by table, highest priority first; matches mix ints and masked tuples."""
    return rule.table, -rule.priority, repr(rule.match)


class FlowsView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = req.get_param("switch")
        out = {}
        objects = object_names(self.ctl)
        for dpid, conn in sorted(self.ctl.switches.items()):
            name = dpid_name(dpid)
            bridge = self.ctl.topology.bridge_names.get(dpid, "")
            if wanted and wanted not in (name, str(dpid), f"s{dpid}", bridge):
                continue
            out[name] = {
                "name": bridge,
                "flows": [{**rule_json(r), "object": describe(r.cookie, objects)}
                          for r in sorted(conn.held.flows.values(), key=_by_table)],
                "groups": [group_json(g) for g in sorted(conn.held.groups.values())],
                "flow_mods_sent": conn.flow_mods_sent,
            }
        if wanted and not out:
            raise falcon.HTTPNotFound(title="unknown switch", description=wanted)
        resp.media = out


class PolicyView(Resource):
    """GET the current revision; POST {text, filename, author, dry_run} to apply."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        current = self.engine.store.current()
        if current is None:
            raise falcon.HTTPNotFound(title="no policy", description="nothing applied yet")
        resp.media = {**current.to_json(), "source": current.source,
                      "canonical": current.canonical}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise falcon.HTTPBadRequest(title="bad request",
                                        description="expected JSON {text, filename?, dry_run?}")
        filename = _label(body, "filename", "<policy>", MAX_FILENAME)
        author = _label(body, "author", "api", MAX_AUTHOR)
        try:
            plan, revision = self.engine.apply(body["text"], filename, author,
                                               dry_run=bool(body.get("dry_run")))
        except PolicyError as exc:
            raise _invalid(exc) from exc
        except ApplyFailed as exc:
            raise falcon.HTTPConflict(title="apply failed, previous state restored",
                                      description=str(exc)) from exc
        current = self.engine.store.current()
        resp.media = {**plan.to_json(), "dry_run": bool(body.get("dry_run")),
                      "changed": revision is not None,
                      "revision": (revision or current).to_json() if (revision or current)
                      else None}


class HistoryView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_HISTORY, default=50)
        resp.media = [r.to_json() for r in self.engine.store.history(limit)]


class RollbackView(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        rev = body.get("rev") if isinstance(body, dict) else None
        if isinstance(rev, bool) or not isinstance(rev, int) or not 1 <= rev <= MAX_REV:
            raise falcon.HTTPBadRequest(title="bad request", description="expected {rev: N}")
        try:
            plan, revision = self.engine.rollback(rev, _label(body, "author", "api", MAX_AUTHOR))
        except RevisionNotFound as exc:
            raise falcon.HTTPNotFound(title="unknown revision", description=str(exc)) from exc
        except PolicyError as exc:
            raise _invalid(exc) from exc
        except ApplyFailed as exc:
            raise falcon.HTTPConflict(title="rollback failed, previous state restored",
                                      description=str(exc)) from exc
        resp.media = {**plan.to_json(), "revision": revision.to_json()}


def _label(body: dict, field: str, default: str, limit: int) -> str:
    """A short printable string from the request (it goes into logs and the history)."""
    value = body.get(field) or default
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise falcon.HTTPBadRequest(
            title="bad request",
            description=f"{field}: a printable string of at most {limit} characters")
    return value


def _invalid(exc: PolicyError) -> falcon.HTTPError:
    return falcon.HTTPUnprocessableEntity(title="invalid policy", description=str(exc))


class TokenAuth:
    """Requests must carry `Authorization: Bearer <token>` when a token is configured
    (it is, whenever the API listens beyond loopback) — or, from the web view, the cookie
    `/ui?token=…` set."""

    def __init__(self, token: str) -> None:
        self.token = token

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            given = (req.cookies.get(TOKEN_COOKIE)
                     or (req.get_param("token") if req.path == "/ui" else None) or "")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise falcon.HTTPUnauthorized(title="token required",
                                          description="send Authorization: Bearer <token>")


class BodyLimit:
    """Requests with a body must say how long it is, and be at most `limit` bytes: a
    request is read whole before it is handled, on the controller's only event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method not in ("POST", "PUT", "PATCH"):
            return
        if req.content_length is None:
            raise falcon.HTTPLengthRequired(title="length required",
                                            description="send a Content-Length header")
        if req.content_length > self.limit:
            raise falcon.HTTPContentTooLarge(
                title="body too large",
                description=f"{req.content_length} bytes; at most {self.limit} are accepted")


class VnfsView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"vnfs": self.ctl.vnfs.status() if self.ctl.vnfs else []}


class OffloadView(Resource):
    """Offloaded flows, active and recently ended, with what their bypass rules counted
    (OpenFlow flow statistics; an ended bypass keeps its rules' final counts)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        offload = self.ctl.offload
        resp.media = {"idle_timeout": BYPASS_IDLE_TIMEOUT, "settled": len(offload.flows),
                      "flows": offload.to_json()}


class VerifyView(Resource):
    """GET: read every switch's tables back and report drift from what the controller
    wants, by policy object. POST {"repair": true}: the same, then send the difference."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._verify(repair=False)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media(default_when_empty={})
        if not isinstance(body, dict) or not isinstance(body.get("repair", False), bool):
            raise falcon.HTTPBadRequest(title="bad request",
                                        description='expected {"repair": true|false}')
        resp.media = self._verify(repair=body.get("repair", False))

    def _verify(self, repair: bool) -> dict:
        try:
            return verify(self.ctl, repair)
        except VerifyError as exc:
            raise falcon.HTTPServiceUnavailable(title="verify incomplete",
                                                description=str(exc)) from exc


class TraceView(Resource):
    """GET ?src=&dst=[&proto=tcp|udp|icmp&sport=&dport=&installed=true&reply=true]: where
    that packet (or its answer) goes through the compiled rules (or the switches' own),
    hop by hop, and why."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ports = {name: req.get_param_as_int(name, min_value=0, max_value=65535)
                 for name in ("sport", "dport")}
        try:
            probe = probe_for(self.ctl, req.get_param("src", required=True),
                              req.get_param("dst", required=True), req.get_param("proto"),
                              ports["sport"], ports["dport"],
                              req.get_param_as_bool("reply") or False)
            resp.media = trace_in(self.ctl, probe, req.get_param_as_bool("installed") or False,
                                  rule_json)
        except TraceError as exc:
            raise falcon.HTTPNotFound(title="cannot trace", description=str(exc)) from exc
        except VerifyError as exc:
            raise falcon.HTTPServiceUnavailable(title="tables not read",
                                                description=str(exc)) from exc


class Metrics:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest()


class ClusterView:
    """This controller's cluster: members, leader, generation id, roles at the switches."""

    def __init__(self, member: ClusterMember | None) -> None:
        self.member = member

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.member is None:
            raise falcon.HTTPNotFound(title="not a cluster",
                                      description="this controller runs without --store")
        try:
            resp.media = self.member.status()
        except StoreUnavailable as exc:
            raise falcon.HTTPServiceUnavailable(title="etcd unavailable",
                                                description=str(exc)) from exc


def make_api(state: ControllerState, engine: PolicyEngine, token: str | None = None,
             max_body: int = MAX_BODY, member: ClusterMember | None = None,
             stats: PortStats | None = None) -> falcon.App:
    auth = [TokenAuth(token)] if token else []
    forward = [LeaderForward(member)] if member is not None else []
    api = falcon.App(middleware=[*auth, BodyLimit(max_body), *forward])
    routes = {"/v1/health": Health, "/v1/topology": TopologyView, "/v1/path": PathView,
              "/v1/flows": FlowsView, "/v1/policy": PolicyView,
              "/v1/policy/history": HistoryView, "/v1/policy/rollback": RollbackView,
              "/v1/vnfs": VnfsView, "/v1/offload": OffloadView, "/v1/verify": VerifyView,
              "/v1/trace": TraceView}
    for path, resource in routes.items():
        api.add_route(path, resource(state, engine))
    api.add_route("/metrics", Metrics())
    api.add_route("/v1/cluster", ClusterView(member))
    add_web(api, state, engine, stats)
    api.add_error_handler(StoreError, _store_unavailable)
    return api


def _store_unavailable(req: falcon.Request, resp: falcon.Response, exc: StoreError,
                       params: dict) -> None:
    raise falcon.HTTPServiceUnavailable(title="revision store unavailable",
                                        description=str(exc))
