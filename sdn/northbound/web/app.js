// The live web view: draws /v1/view with Cytoscape.js, redraws on every server-sent
// event from /v1/events, and draws a trace (/v1/trace) over the graph.
"use strict";

const cy = cytoscape({
  container: document.getElementById("graph"),
  style: [
    { selector: "node", style: { label: "data(label)", "font-size": 10, "text-valign": "bottom" } },
    { selector: "node.switch", style: { shape: "round-rectangle", "background-color": "#357",
                                        width: 34, height: 22 } },
    { selector: "node.host", style: { shape: "ellipse", "background-color": "#999",
                                      width: 12, height: 12 } },
    { selector: "node.vnf", style: { shape: "diamond", "background-color": "#85c",
                                     width: 20, height: 20 } },
    { selector: "node.vnf.failed", style: { "background-color": "#d22" } },
    { selector: "node.traced", style: { "border-width": 4, "border-color": "#17f" } },
    { selector: "edge", style: { width: 3, "line-color": "#bbb", "curve-style": "bezier" } },
    { selector: "edge.attach", style: { width: 1, "line-color": "#ccc" } },
    { selector: "edge.rate1", style: { "line-color": "#2a2" } },
    { selector: "edge.rate2", style: { "line-color": "#e90" } },
    { selector: "edge.rate3", style: { "line-color": "#d22", width: 5 } },
    { selector: "edge.down", style: { "line-color": "#d22", "line-style": "dashed" } },
    { selector: "edge.chain", style: { "line-color": "#85c", width: 2, "line-style": "dotted",
                                       "target-arrow-shape": "triangle",
                                       "target-arrow-color": "#85c", label: "data(label)",
                                       "font-size": 9, color: "#85c" } },
    { selector: "edge.traced", style: { "line-color": "#17f", width: 6 } },
  ],
});
window.cy = cy;  // for the browser test and the curious
let updates = 0;
let traced = { nodes: new Set(), edges: new Set() };

function rateClass(bps) {
  if (bps < 1e3) return "";
  if (bps < 1e6) return "rate1";
  return bps < 1e8 ? "rate2" : "rate3";
}

function linkId(a, b) { return "l:" + [a, b].sort().join("|"); }

function elementsOf(view) {
  const els = [];
  for (const sw of view.switches) {
    els.push({ group: "nodes", data: { id: "s:" + sw, label: sw }, classes: "switch" });
  }
  for (const h of view.hosts) {
    const id = "h:" + h.mac;
    els.push({ group: "nodes", data: { id, label: h.name || h.ips[0] || h.mac },
               classes: "host" });
    els.push({ group: "edges", data: { id: "e:" + id, source: id, target: "s:" + h.switch },
               classes: "attach" });
  }
  for (const v of view.vnfs) {
    const id = "v:" + v.name;
    els.push({ group: "nodes",
               data: { id, label: `${v.name} ${v.state} ${v.rx_pps}/${v.tx_pps} pps` },
               classes: "vnf" + (v.state === "running" ? "" : " failed") });
    if (view.switches.includes(v.switch)) {
      els.push({ group: "edges", data: { id: "e:" + id, source: id, target: "s:" + v.switch },
                 classes: "attach" });
    }
  }
  for (const l of view.links) {
    const id = linkId(l.a, l.b);
    if (els.some((e) => e.data.id === id)) continue;  // parallel links: one line
    els.push({ group: "edges", data: { id, source: "s:" + l.a, target: "s:" + l.b },
               classes: l.state === "down" ? "down" : rateClass(l.rate_bps) });
  }
  const running = new Set(view.vnfs.map((v) => v.vnf));
  for (const c of view.chains) {
    const hops = c.through.filter((name) => running.has(name));
    for (let i = 0; i + 1 < hops.length; i++) {
      const from = view.vnfs.find((v) => v.vnf === hops[i]);
      const to = view.vnfs.find((v) => v.vnf === hops[i + 1]);
      els.push({ group: "edges", classes: "chain",
                 data: { id: `c:${c.name}:${i}`, source: "v:" + from.name,
                         target: "v:" + to.name, label: c.name } });
    }
  }
  return els;
}

function render(view) {
  const before = new Set(cy.nodes().map((n) => n.id()));
  const els = elementsOf(view);
  const after = new Set(els.filter((e) => e.group === "nodes").map((e) => e.data.id));
  const relayout = before.size !== after.size || [...after].some((id) => !before.has(id));
  const positions = {};
  cy.nodes().forEach((n) => { positions[n.id()] = { ...n.position() }; });
  cy.batch(() => {
    cy.elements().remove();
    cy.add(els.map((e) => (positions[e.data.id] ? { ...e, position: positions[e.data.id] } : e)));
    cy.nodes().filter((n) => traced.nodes.has(n.id())).addClass("traced");
    cy.edges().filter((e) => traced.edges.has(e.id())).addClass("traced");
  });
  if (relayout) cy.layout({ name: "cose", animate: false, randomize: false }).run();
  const up = view.links.filter((l) => l.state === "up").length;
  const summary = document.getElementById("summary");
  Object.assign(summary.dataset, {
    switches: view.switches.length, linksUp: up, linksDown: view.links.length - up,
    hosts: view.hosts.length, vnfs: view.vnfs.length,
    chains: view.chains.map((c) => c.name).join(","), updates: ++updates,
  });
  summary.textContent = `${view.switches.length} switches, ${up} links up, ` +
    `${view.links.length - up} down, ${view.hosts.length} hosts, ${view.vnfs.length} VNFs`;
  document.getElementById("vnfs").innerHTML = view.vnfs.map((v) =>
    `<tr><td>${esc(v.name)}</td><td>${esc(v.switch)}</td><td>${esc(v.state)}</td>` +
    `<td>${v.rx_pps}/${v.tx_pps} pps</td></tr>`).join("");
  document.getElementById("chains").textContent =
    view.chains.map((c) => `${c.name}: ${c.through.join(" → ")}`).join("\n") || "none";
  document.getElementById("history").innerHTML = view.history.map((r) =>
    `<tr><td>r${r.rev}</td><td>${esc(r.created.slice(0, 19))}</td>` +
    `<td>${esc(r.summary)}</td></tr>`).join("");
}

function esc(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                   '"': "&quot;" })[c]);
}

async function traceFromForm(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const query = new URLSearchParams();
  for (const [k, v] of form) if (v) query.set(k, v);
  const out = document.getElementById("trace-out");
  const answer = await fetch("/v1/trace?" + query);
  const result = await answer.json();
  if (!answer.ok) { out.textContent = `${result.title}: ${result.description}`; return; }
  traced = { nodes: new Set(), edges: new Set() };
  const switchOf = (visit) => "s:" + visit.switch;
  for (const visit of result.visits) {
    traced.nodes.add(switchOf(visit));
    if (visit.from !== null) {
      const parent = result.visits[visit.from];
      if (parent.switch !== visit.switch) traced.edges.add(linkId(parent.switch, visit.switch));
    }
  }
  const o = result.outcome;
  out.textContent = `delivered to ${o.delivered.join(", ") || "nobody"}` +
    (o.through_vnfs.length ? ` through ${o.through_vnfs.join(", ")}` : "") +
    "\n" + result.vnfs.map((n) => `${n.vnf}: ${n.verdict}`).join("\n");
  cy.elements().removeClass("traced");
  cy.nodes().filter((n) => traced.nodes.has(n.id())).addClass("traced");
  cy.edges().filter((e) => traced.edges.has(e.id())).addClass("traced");
}

window.addEventListener("error", (event) => {  // say so rather than go stale silently
  document.getElementById("status").textContent = "page error: " + event.message;
  document.getElementById("summary").dataset.error = event.message;
});
document.getElementById("trace-form").addEventListener("submit", traceFromForm);
fetch("/v1/view").then((r) => r.json()).then(render);
const events = new EventSource("/v1/events");
events.onmessage = (message) => {
  document.getElementById("status").textContent = "live";
  render(JSON.parse(message.data));
};
events.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
