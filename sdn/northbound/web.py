"""The live web view: one page drawing the network the controller sees (Cytoscape.js,
vendored into the package by `make setup`), kept current by server-sent events.

`/ui` serves the page, `/v1/view` what it draws as JSON, `/v1/events` the same as a
stream (an event when it changes, a comment every KEEPALIVE seconds, closed after
STREAM_SECONDS: the browser's EventSource reconnects). Same port and token as the API; a
browser cannot send the header, so `/ui?token=…` sets it as a cookie once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon
from os_ken.lib import hub

from sdn.controller.apply import PolicyEngine
from sdn.controller.port_stats import PortStats
from sdn.controller.state import ControllerState
from sdn.policy.store import StoreError

WEB_DIR = Path(__file__).resolve().parent / "web"
FILES = {"": ("index.html", "text/html; charset=utf-8"),
         "app.js": ("app.js", "text/javascript; charset=utf-8"),
         "cytoscape.min.js": ("vendor/cytoscape.min.js", "text/javascript; charset=utf-8")}
TOKEN_COOKIE = "sdn_token"
EVENT_INTERVAL = 1.0  # seconds between looks for a change
KEEPALIVE = 10.0
STREAM_SECONDS = 300.0
LOST_LINK_SECONDS = 300.0  # a link that went away is drawn as down this long
HISTORY = 8


class View:
    """What the page draws. Remembers links that went away, to draw them as down."""

    def __init__(self, state: ControllerState, engine: PolicyEngine,
                 stats: PortStats | None) -> None:
        self.ctl = state
        self.engine = engine
        self.stats = stats
        self._seen: dict[tuple, dict[str, Any]] = {}
        self._lost: dict[tuple, tuple[dict[str, Any], float]] = {}

    def current(self) -> dict[str, Any]:
        topology = self.ctl.topology
        snap = topology.snapshot()

        def name(dpid: int) -> str:
            return topology.bridge_names.get(dpid) or f"{dpid:016x}"

        links = {}
        for lk in snap.links:
            rate = self.stats.link_rate(lk.a, lk.a_port, lk.b, lk.b_port) if self.stats else 0
            links[(lk.a, lk.a_port, lk.b, lk.b_port)] = {
                "a": name(lk.a), "b": name(lk.b), "rate_bps": round(rate), "state": "up"}
        now = time.monotonic()
        for key, link in self._seen.items():
            if key not in links:
                self._lost.setdefault(key, ({**link, "rate_bps": 0, "state": "down"}, now))
        self._lost = {k: v for k, v in self._lost.items()
                      if k not in links and now - v[1] < LOST_LINK_SECONDS}
        self._seen = links
        policy = self.ctl.policy
        return {
            "switches": sorted(name(d) for d in snap.switches),
            "links": [*links.values(), *(link for link, _since in self._lost.values())],
            "hosts": [{"mac": h.mac, "name": h.name, "ips": list(h.ips),
                       "switch": name(h.dpid)} for h in snap.hosts],
            "vnfs": [{"name": v["name"], "vnf": v.get("vnf", v["name"]),
                      "switch": v["switch"], "state": v["state"],
                      "rx_pps": round(v.get("rx_pps") or 0), "tx_pps": round(v.get("tx_pps") or 0)}
                     for v in (self.ctl.vnfs.status() if self.ctl.vnfs else [])],
            "chains": [{"name": c.name, "through": list(c.through)}
                       for c in (policy.chains if policy else ())],
            "history": self._history(),
        }

    def _history(self) -> list[dict[str, Any]]:
        try:
            return [r.to_json() for r in self.engine.store.history(HISTORY)]
        except StoreError:
            return []


class Page:
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str = "") -> None:
        if name not in FILES:
            raise falcon.HTTPNotFound()
        token = req.get_param("token")
        if token:  # TokenAuth has checked it: keep it as a cookie and drop it from the URL
            resp.set_cookie(TOKEN_COOKIE, token, http_only=True, secure=False,
                            same_site="Strict", path="/")
            raise falcon.HTTPSeeOther("/ui")
        path, content_type = FILES[name]
        try:
            resp.data = (WEB_DIR / path).read_bytes()
        except OSError as exc:
            raise falcon.HTTPServiceUnavailable(
                title="web view not built", description="run `make setup`") from exc
        resp.content_type = content_type


class ViewResource:
    def __init__(self, view: View) -> None:
        self.view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.view.current()


class Events:
    def __init__(self, view: View) -> None:
        self.view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        # eventlet's server holds back chunks smaller than 4 KiB: an event must go at once.
        req.env["eventlet.minimum_write_chunk_size"] = 0
        resp.stream = self._stream()

    def _stream(self) -> Iterator[bytes]:
        started = last_sent = time.monotonic()
        previous = None
        while time.monotonic() - started < STREAM_SECONDS:
            current = json.dumps(self.view.current(), sort_keys=True)
            if current != previous:
                yield f"data: {current}\n\n".encode()
                previous, last_sent = current, time.monotonic()
            elif time.monotonic() - last_sent > KEEPALIVE:
                yield b": keepalive\n\n"
                last_sent = time.monotonic()
            hub.sleep(EVENT_INTERVAL)


def add_web(api: falcon.App, state: ControllerState, engine: PolicyEngine,
            stats: PortStats | None) -> None:
    view = View(state, engine, stats)
    api.add_route("/ui", Page())
    api.add_route("/ui/{name}", Page())
    api.add_route("/v1/view", ViewResource(view))
    api.add_route("/v1/events", Events(view))
