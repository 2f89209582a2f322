"""Northbound REST API (JSON over HTTP, Falcon), served inside the controller process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
import networkx as nx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sdn import routing
from sdn.flows import FlowRule, Group

if TYPE_CHECKING:
    from sdn.app import SdnController


def dpid_name(dpid: int) -> str:
    return f"{dpid:016x}"


def rule_json(rule: FlowRule) -> dict:
    return {
        "table": rule.table, "priority": rule.priority, "cookie": f"{rule.cookie:#018x}",
        "match": {k: list(v) if isinstance(v, tuple) else v for k, v in rule.match},
        "actions": [list(a) for a in rule.actions], "goto": rule.goto, "meter": rule.meter,
    }


def group_json(group: Group) -> dict:
    return {
        "group_id": group.group_id, "type": group.type,
        "buckets": [{"actions": [list(a) for a in b.actions], "watch_port": b.watch_port,
                     "watch_group": b.watch_group, "weight": b.weight} for b in group.buckets],
    }


class Resource:
    def __init__(self, controller: SdnController) -> None:
        self.ctl = controller


class Health(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok", "switches": len(self.ctl.switches),
                      "ready": sum(c.ready for c in self.ctl.switches.values())}


class TopologyView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        snap = self.ctl.topology.snapshot()
        resp.media = {
            "switches": [{"dpid": dpid_name(d), "ports": sorted(p),
                          "connected": d in self.ctl.switches}
                         for d, p in sorted(snap.switches.items())],
            "links": [{"a": dpid_name(lk.a), "a_port": lk.a_port, "b": dpid_name(lk.b),
                       "b_port": lk.b_port,
                       "weight": snap.weights.get(frozenset((lk.a, lk.b)), 1.0)}
                      for lk in snap.links],
            "hosts": [{"mac": h.mac, "ips": list(h.ips), "switch": dpid_name(h.dpid),
                       "port": h.port} for h in snap.hosts],
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
            hops.append({"switch": dpid_name(here), "in_port": in_port,
                         "out_port": out_port, "weight": weight})
            if nxt is not None:
                in_port = graph[here][nxt]["link"].port_at(nxt)
        resp.media = {"src": src.mac, "dst": dst.mac, "hops": hops,
                      "cost": sum(h["weight"] for h in hops)}

    def _host(self, key: str):
        topo = self.ctl.topology
        host = topo.hosts.get(key.lower()) or topo.host_by_ip(key)
        if host is None:
            host = next((h for h in topo.hosts.values() if h.name == key), None)
        if host is None:
            raise falcon.HTTPNotFound(title="unknown host",
                                      description=f"no host named {key!r} (name, IP or MAC)")
        return host


class FlowsView(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = req.get_param("switch")
        out = {}
        for dpid, conn in sorted(self.ctl.switches.items()):
            name = dpid_name(dpid)
            if wanted and wanted not in (name, str(dpid), f"s{dpid}"):
                continue
            out[name] = {
                "flows": [rule_json(r) for r in sorted(conn.held.flows.values())],
                "groups": [group_json(g) for g in sorted(conn.held.groups.values())],
                "flow_mods_sent": conn.flow_mods_sent,
            }
        if wanted and not out:
            raise falcon.HTTPNotFound(title="unknown switch", description=wanted)
        resp.media = out


class Metrics:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest()


def make_api(controller: SdnController) -> falcon.App:
    api = falcon.App()
    api.add_route("/v1/health", Health(controller))
    api.add_route("/v1/topology", TopologyView(controller))
    api.add_route("/v1/path", PathView(controller))
    api.add_route("/v1/flows", FlowsView(controller))
    api.add_route("/metrics", Metrics())
    return api
