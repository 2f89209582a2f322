"""sdnctl: run the controller and talk to it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli import DEFAULT_API, ApiOpt, Output, api_call, api_get, default_state_dir
from nfv.cli import agent_app
from nfv.cli import app as vnf_app

app = typer.Typer(help="An OpenFlow 1.3 SDN controller with a chain of network functions.",
                  no_args_is_help=True)
controller_app = typer.Typer(help="Run the controller.", no_args_is_help=True)
topo_app = typer.Typer(help="Inspect the network the controller sees.", no_args_is_help=True)
app.add_typer(controller_app, name="controller")
app.add_typer(topo_app, name="topo")
policy_app = typer.Typer(help="Apply, inspect and roll back the network policy.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(vnf_app, name="vnf", help="Run and inspect network functions.")
cluster_app = typer.Typer(help="A cluster of controllers on etcd.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
app.add_typer(agent_app, name="agent")

OutOpt = Annotated[Output, typer.Option("-o", "--output", help="Output format.")]


@controller_app.command("run")
def controller_run(
    ofp_port: Annotated[int, typer.Option(help="OpenFlow listen port.")] = 6653,
    ofp_host: Annotated[str, typer.Option(help="OpenFlow listen address.")] = "0.0.0.0",
    api: Annotated[str, typer.Option(help="REST API listen address host:port.")] = DEFAULT_API,
    state_dir: Annotated[Path | None, typer.Option(
        help="Where state and logs live [default: /var/lib/sdnctl as root, "
             "~/.local/state/sdnctl otherwise, or $SDN_STATE_DIR].")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
    api_max_body: Annotated[int | None, typer.Option(
        min=1024, help="Largest request body the REST API reads, in bytes "
                       "[default: 4 MiB + 64 KiB].")] = None,
    allow_dpid: Annotated[list[str] | None, typer.Option(
        help="Only these switches may connect (datapath id; repeat the option).")] = None,
    ofp_tls_key: Annotated[Path | None, typer.Option(
        help="OpenFlow over TLS only: the controller's private key (PEM).")] = None,
    ofp_tls_cert: Annotated[Path | None, typer.Option(
        help="OpenFlow over TLS only: the controller's certificate (PEM).")] = None,
    ofp_tls_ca: Annotated[Path | None, typer.Option(
        help="OpenFlow over TLS only: the CA certificate switches' certificates must be "
             "signed by (PEM).")] = None,
    store: Annotated[str | None, typer.Option(
        help="Run as a member of a cluster: etcd://HOST:PORT[,HOST:PORT...] [default: "
             "no cluster, revisions in SQLite in the state dir].")] = None,
    node: Annotated[str | None, typer.Option(
        help="Cluster: this controller's name [default: HOSTNAME-APIPORT].")] = None,
    advertise_api: Annotated[str | None, typer.Option(
        help="Cluster: the URL other members reach this API at [default: from --api].")
    ] = None,
    lease_ttl: Annotated[int, typer.Option(
        min=2, help="Cluster: seconds a leader that stops renewing keeps its leadership.")
    ] = 2,
    store_ca: Annotated[Path | None, typer.Option(
        help="Cluster: TLS to etcd, the CA that signed the members' certificates (PEM).")
    ] = None,
    store_cert: Annotated[Path | None, typer.Option(
        help="Cluster: this controller's client certificate for etcd (PEM).")] = None,
    store_key: Annotated[Path | None, typer.Option(
        help="Cluster: the key of --store-cert (PEM).")] = None,
) -> None:
    """Run the controller in the foreground until SIGINT or SIGTERM."""
    argv = [sys.executable, "-m", "sdn.northbound.main", "--ofp-host", ofp_host,
            "--ofp-port", str(ofp_port), "--api", api,
            "--state-dir", str(state_dir or default_state_dir())]
    if api_max_body is not None:
        argv += ["--api-max-body", str(api_max_body)]
    for value in allow_dpid or ():
        argv += ["--allow-dpid", value]
    for option, path in (("--ofp-tls-key", ofp_tls_key), ("--ofp-tls-cert", ofp_tls_cert),
                         ("--ofp-tls-ca", ofp_tls_ca)):
        if path is not None:
            argv += [option, str(path)]
    for option, text in (("--store", store), ("--node", node),
                         ("--advertise-api", advertise_api), ("--store-ca", store_ca),
                         ("--store-cert", store_cert), ("--store-key", store_key)):
        if text is not None:
            argv += [option, str(text)]
    argv += ["--lease-ttl", str(lease_ttl)]

    os.execv(sys.executable, [*argv, "--verbose"] if verbose else argv)


def _emit(data: Any, output: Output, render) -> None:
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(data)


@topo_app.command("show")
def topo_show(api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table) -> None:
    """Switches, links and hosts."""

    def render(topo: dict) -> None:
        typer.echo(f"switches ({len(topo['switches'])}):")
        for sw in topo["switches"]:
            state = "" if sw["connected"] else "  (disconnected)"
            typer.echo(f"  {sw['name'] or '-':8} {sw['dpid']}  ports {sw['ports']}{state}")
        typer.echo(f"links ({len(topo['links'])}):")
        for lk in topo["links"]:
            a = lk.get("a_name") or f"{lk['a']}:{lk['a_port']}"
            b = lk.get("b_name") or f"{lk['b']}:{lk['b_port']}"
            typer.echo(f"  {a} <-> {b}  weight {lk['weight']:g}")
        typer.echo(f"hosts ({len(topo['hosts'])}):")
        for h in topo["hosts"]:
            where = h.get("port_name") or f"{h['switch']}:{h['port']}"
            typer.echo(f"  {h['mac']}  {','.join(h['ips']) or '-'}  at {where}")

    _emit(api_get(api, "/v1/topology"), output, render)


@app.command("path")
def path(
    src: Annotated[str, typer.Argument(help="Source host: name, IP or MAC.")],
    dst: Annotated[str, typer.Argument(help="Destination host: name, IP or MAC.")],
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """The switches, ports and weights traffic from SRC to DST takes."""

    def render(p: dict) -> None:
        typer.echo(f"{p['src']} -> {p['dst']}  cost {p['cost']:g}")
        for hop in p["hops"]:
            typer.echo(f"  {hop['name'] or '-':8} {hop['switch']}  in {hop['in_port']} -> "
                       f"out {hop['out_port']}"
                       f"  weight {hop['weight']:g}")

    _emit(api_get(api, "/v1/path", src=src, dst=dst), output, render)


@app.command("verify")
def verify(
    repair: Annotated[bool, typer.Option(help="Send the switches the difference.")] = False,
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """Compare what the switches hold with what the controller wants.

    Reads every switch's flows, groups and meters back and reports drift by policy object;
    exits 1 on drift (with --repair: when it could not be repaired)."""

    def render(report: dict) -> None:
        for switch, found in report["switches"].items():
            for kind in ("missing", "extra", "changed"):
                for entry in found[kind]:
                    typer.echo(f"{switch}: {kind:7} {entry['what']}  [{entry['object']}]")
        state = "repaired" if report["repaired"] else "drifted"
        typer.echo(f"{report['checked']} switches checked, {report['drifted']} rules "
                   + (state if report["drifted"] else "drifted: in sync"))

    report = api_call("POST", api, "/v1/verify", {"repair": repair})
    _emit(report, output, render)
    if report["drifted"] and not report["repaired"]:
        raise typer.Exit(1)


@app.command("flows")
def flows(
    switch: Annotated[str | None, typer.Argument(help="dpid (hex or decimal) or sN.")] = None,
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """Flow rules and groups the controller keeps on each switch."""

    def render(data: dict) -> None:
        from sdn.northbound.render import flow_text, group_text

        for dpid, sw in data.items():
            typer.echo(f"{sw.get('name') or dpid} ({dpid}): {len(sw['flows'])} flows, "
                       f"{len(sw['groups'])} groups")
            for f in sw["flows"]:
                typer.echo(f"  {flow_text(f)}")
            for g in sw["groups"]:
                typer.echo(f"  {group_text(g)}")

    _emit(api_get(api, "/v1/flows", switch=switch), output, render)


@app.command("trace")
def trace(
    src: Annotated[str, typer.Argument(help="Source host: name, IP or MAC.")],
    dst: Annotated[str, typer.Argument(help="Destination: a host (name, IP, MAC) or a VIP.")],
    proto: Annotated[str | None, typer.Option(help="tcp, udp or icmp.")] = None,
    sport: Annotated[int | None, typer.Option(min=0, max=65535)] = None,
    dport: Annotated[int | None, typer.Option(min=0, max=65535)] = None,
    installed: Annotated[bool, typer.Option(
        "--installed", help="Trace the rules read from the switches, not the compiled ones.")
    ] = False,
    reply: Annotated[bool, typer.Option(
        "--reply", help="Trace the answer back (from a VIP: from its first backend).")
    ] = False,
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """Where a packet from SRC to DST goes, switch by switch, which rule (and policy
    object) sends it there, and what each VNF does to it. ECMP: every path the switches'
    hash may pick is shown; a load balancer: every backend."""

    def render(result: dict) -> None:
        from sdn.northbound.render import flow_text

        pkt = result["packet"]
        ports = "".join(f" {pkt[k]}" for k in ("tcp_src", "udp_src") if k in pkt) + "".join(
            f" -> {pkt[k]}" for k in ("tcp_dst", "udp_dst") if k in pkt)
        typer.echo(f"{pkt['ipv4_src']} -> {pkt['ipv4_dst']} {proto or 'ip'}{ports} "
                   f"({result['rules']} rules)")
        for visit in result["visits"]:
            came = f"  (from [{visit['from']}])" if visit["from"] is not None else ""
            typer.echo(f"[{visit['visit']}] {visit['switch']} in {visit['in_port']}{came}")
            for rule in visit["rules"]:
                typer.echo(f"      {flow_text(rule)}")
            for group in visit["groups"]:
                typer.echo(f"      group {group['group_id']}: bucket(s) "
                           f"{','.join(map(str, group['buckets']))}")
            for out in visit["out"]:
                where = f": {out['to']}" if out["to"] else ""
                typer.echo(f"      -> {out['port']} ({out['kind']}{where})")
            if visit["to_controller"]:
                typer.echo("      -> controller")
        for note in result["vnfs"]:
            typer.echo(f"VNF {note['vnf']} ({note['side']} arm): {note['verdict']}")
        outcome = result["outcome"]
        typer.echo("delivered to: " + (", ".join(outcome["delivered"]) or "nobody")
                   + ("; through " + ", ".join(outcome["through_vnfs"])
                      if outcome["through_vnfs"] else "")
                   + ("; LOOPED" if outcome["looped"] else "")
                   + ("; dropped" if outcome["dropped"] else ""))

    _emit(api_get(api, "/v1/trace", src=src, dst=dst, proto=proto, sport=sport, dport=dport,
                  installed="true" if installed else None, reply="true" if reply else None),
          output, render)


FileOpt = Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False,
                                       readable=True, help="Policy file (YAML).")]


def _read_policy(path: Path) -> str:
    """Validate locally first, so mistakes are reported against the real file name."""
    from sdn.policy.load import load_policy
    from sdn.policy.problems import PolicyError
    from sdn.policy.source import MAX_POLICY_BYTES, decode_policy

    try:
        with path.open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        typer.echo(f"{path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    try:
        text = decode_policy(data, str(path))
        load_policy(text, str(path), hosts={})  # host names come from the policy only
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    return text


def _render_plan(result: dict) -> None:
    typer.echo(f"{result['summary']}: {result['flow_mods']} FlowMods")
    for switch, c in result["switches"].items():
        typer.echo(f"  {switch}: +{c['flows_added']} -{c['flows_removed']} flows, "
                   f"+{c['groups_added']} ~{c['groups_changed']} -{c['groups_removed']} groups")
    behaviour = result.get("behaviour")
    if behaviour is not None:
        typer.echo(f"traffic that changes ({len(behaviour)}):" if behaviour else
                   "traffic that changes: none of the packets traced (one per chain and "
                   "class, and a sample of host pairs)")
        for change in behaviour:
            typer.echo(f"  {change['traffic']}: {change['before']}\n"
                       f"  {' ' * len(change['traffic'])}  becomes {change['after']}")
    revision = result.get("revision")
    if revision:
        typer.echo(f"revision {revision['rev']} recorded")


@policy_app.command("apply")
def policy_apply(
    file: FileOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """Validate FILE, send the switches only what changed, record a revision."""
    text = _read_policy(file)
    result = api_call("POST", api, "/v1/policy", {
        "text": text, "filename": str(file), "dry_run": dry_run,
        "author": os.environ.get("USER", "sdnctl")})
    _emit(result, output, _render_plan)


@policy_app.command("diff")
def policy_diff(file: FileOpt, api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table) -> None:
    """What applying FILE would change: objects, and rules per switch."""
    text = _read_policy(file)
    result = api_call("POST", api, "/v1/policy", {
        "text": text, "filename": str(file), "dry_run": True})
    _emit(result, output, _render_plan)


@policy_app.command("get")
def policy_get(api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table) -> None:
    """The policy in force (its source as applied)."""
    _emit(api_get(api, "/v1/policy"), output, lambda r: typer.echo(r["source"], nl=False))


@policy_app.command("history")
def policy_history(api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table) -> None:
    """Applied revisions, newest first."""

    def render(revs: list) -> None:
        for r in revs:
            typer.echo(f"r{r['rev']}  {r['created']}  {r['author']}  {r['summary']}")

    _emit(api_get(api, "/v1/policy/history"), output, render)


@policy_app.command("rollback")
def policy_rollback(
    rev: Annotated[int, typer.Argument(help="Revision to go back to.")],
    api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table,
) -> None:
    """Re-apply an earlier revision (recorded as a new revision)."""
    result = api_call("POST", api, "/v1/policy/rollback",
                   {"rev": rev, "author": os.environ.get("USER", "sdnctl")})
    _emit(result, output, _render_plan)


def main() -> None:
    app()


@cluster_app.command("status")
def cluster_status(api: ApiOpt = DEFAULT_API, output: OutOpt = Output.table) -> None:
    """etcd members, the leader and its generation id, each controller's role per switch."""

    def render(status: dict) -> None:
        leader = status["leader"]
        typer.echo(f"leader: {leader['node']} (generation {leader['generation']}, "
                   f"{leader['api']})" if leader else "leader: none (election under way?)")
        typer.echo(f"etcd ({len(status['etcd'])} members):")
        for member in status["etcd"]:
            health = "up" if member["healthy"] else "DOWN"
            typer.echo(f"  {member['name'] or '-':12} {health:5} "
                       f"{','.join(member['client_urls'])}")
        controllers = sorted(status["controllers"], key=lambda c: c["node"])
        typer.echo(f"controllers ({len(controllers)}):")
        for ctl in controllers:
            roles: dict[str, int] = {}
            for role in ctl["switches"].values():
                roles[role] = roles.get(role, 0) + 1
            summary = ", ".join(f"{n} {r}" for r, n in sorted(roles.items())) or "no switches"
            mark = "*" if ctl["leading"] else " "
            typer.echo(f" {mark}{ctl['node']:20} {ctl['api']:28} {summary}")
        agents = sorted(status.get("agents", []), key=lambda a: a["host"])
        typer.echo(f"host agents ({len(agents)}):" + "".join(
            f"\n  {a['host']:20} bridges {', '.join(a['bridges']) or '-'}" for a in agents))
        switches = sorted({d for c in controllers for d in c["switches"]})
        if switches:
            typer.echo("roles per switch: " + "  ".join(c["node"] for c in controllers))
            for dpid in switches:
                cells = "  ".join(f"{c['switches'].get(dpid, '-'):{len(c['node'])}}"
                                  for c in controllers)
                typer.echo(f"  {dpid}  {cells}")

    _emit(api_get(api, "/v1/cluster"), output, render)
