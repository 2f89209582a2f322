"""The live web view in headless Chromium: the page draws the switches of a Mininet network
that starts, colours a link that is cut, draws a chain after `policy apply` — all without
a reload — and a trace drawn over the graph."""

from __future__ import annotations

import json
import os

import pytest

from testing.browser import Browser
from testing.harness import REPO, network, ping_all, wait_until
from topologies.sdn_topos import RingTopo

pytestmark = pytest.mark.integration
CHAIN = """\
version: 1
vnfs:
  fw:  {type: firewall, switch: s1, default: allow}
  mon: {type: analyzer, switch: s3, failure_mode: open}
chains:
  - {name: web, match: {proto: tcp, dst_port: 80}, through: [fw, mon]}
"""


def summary(browser: Browser) -> dict:
    text = browser.eval("JSON.stringify(document.getElementById('summary').dataset)")
    return json.loads(text) if text else {}


def test_the_web_view_follows_the_network_live(controller, tmp_path):
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"http://{controller.api}/ui")
        wait_until(lambda: summary(browser).get("switches") == "0", 20, what="an empty page")
        browser.eval("window.firstLoad = performance.timeOrigin")
        with network(RingTopo(n=4), controller) as net:
            assert ping_all(net) == []
            wait_until(lambda: summary(browser).get("switches") == "4"
                       and summary(browser).get("linksUp") == "4", 20, what="4 switches")
            assert browser.eval("cy.nodes('.switch').length") == 4

            net.configLinkStatus("s1", "s2", "down")
            try:
                wait_until(lambda: summary(browser).get("linksDown") == "1", 20,
                           what="a cut link")
            except TimeoutError as exc:
                status = browser.eval("document.getElementById('status').textContent")
                raise AssertionError(f"{summary(browser)} {status}") from exc
            assert browser.eval("cy.edges('.down').length") == 1
            assert browser.eval("cy.edges('.down')[0].style('line-color')") == "rgb(221,34,34)"

            policy = tmp_path / "chain.yaml"
            policy.write_text(CHAIN)
            controller.apply(policy)
            wait_until(lambda: summary(browser).get("chains") == "web"
                       and browser.eval("cy.edges('.chain').length") == 1, 30,
                       what="the chain drawn")
            assert browser.eval("window.firstLoad === performance.timeOrigin")  # no reload
            # mon fails open: until it runs, the chain (and so the trace) goes around it
            wait_until(lambda: all(v["state"] == "running"
                                   for v in controller.get("/v1/vnfs")["vnfs"]), 20,
                       what="fw and mon running")

            browser.eval("""(() => { const f = document.getElementById('trace-form');
                f.src.value = '10.0.0.1'; f.dst.value = '10.0.0.3'; f.proto.value = 'tcp';
                f.dport.value = '80'; f.querySelector('button').click(); })()""")
            wait_until(lambda: browser.eval("cy.nodes('.traced').length") or 0, 10,
                       what="the trace drawn")
            assert "through fw, mon" in browser.eval(
                "document.getElementById('trace-out').textContent")
            shot = tmp_path / "web.png"
            browser.screenshot(shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
            if os.environ.get("SDN_WEB_SCREENSHOT"):  # refreshes the README's picture
                (REPO / "docs/img/web.png").write_bytes(shot.read_bytes())
