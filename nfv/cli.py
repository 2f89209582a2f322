"""`sdnctl vnf`: run one VNF in the foreground, list the VNFs runtimes have published.

Every runtime writes its status to a JSON file in the state directory: the controller's
to `vnfs.json`, each `sdnctl vnf run` to `vnfs-run-<name>.json`. `list` merges them.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from common.cli import Output, api_get, default_state_dir
from common.contract import PLACEMENT_KEYS, VNF_KINDS
from common.units import parse_size

if TYPE_CHECKING:  # the runtime (pyroute2, OVSDB, eventlet) loads only when a command runs
    from nfv.host.spec import VnfSpec, VnfStatus

STATUS_FILE = "vnfs.json"
STALE_AFTER = 10.0  # seconds without an update before a status file is called stale


DEFAULT_STATE_DIR = default_state_dir()

app = typer.Typer(help="Run and inspect network functions (VNFs).", no_args_is_help=True)

StateDirOpt = Annotated[Path, typer.Option(
    "--state-dir", envvar="SDN_STATE_DIR", help="Where runtimes publish VNF status.")]


def load_config(path: Path) -> dict[str, Any]:
    """A VNF's config from JSON or YAML (by suffix); errors name the file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise typer.BadParameter(f"{path}: {e.strerror}") from e
    import yaml  # here, not at the top: every sdnctl command would pay ~10 ms for it

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise typer.BadParameter(f"{path}: not valid {path.suffix[1:] or 'YAML'}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of VNF settings at the top")
    return data


def build_spec(config: dict[str, Any], *, name: str | None, kind: str | None,
               switch: str | None, cpu: float | None, memory: str | None,
               source: Path) -> VnfSpec:
    """Options win over the file's placement keys; the rest of the file is the function's."""
    from nfv.host.spec import VnfSpec

    function_config = {k: v for k, v in config.items() if k not in PLACEMENT_KEYS}
    kind = kind or config.get("type")
    switch = switch or config.get("switch")
    if kind is None:
        raise typer.BadParameter(f"no --kind and no 'type' in {source}")
    if switch is None:
        raise typer.BadParameter(f"no --switch and no 'switch' in {source}")
    size = memory if memory is not None else config.get("memory")
    try:
        return VnfSpec(
            name=name or source.stem,
            kind=kind,
            switch=str(switch),
            config=function_config,
            cpu=cpu if cpu is not None else config.get("cpu"),
            memory=None if size is None else parse_size(size),
            failure_mode=config.get("failure_mode", "closed"),
        )
    except ValueError as e:
        raise typer.BadParameter(f"{source}: {e}") from e


def _describe(status: VnfStatus) -> str:
    from nfv.host.supervisor import State

    ports = f"in={status.ports.get('ingress')} out={status.ports.get('egress')}"
    text = (f"{status.name}: {status.state} pid={status.pid} ports {ports} "
            f"restarts={status.restarts} rx={status.rx_pps:.0f}pps tx={status.tx_pps:.0f}pps "
            f"drops={status.drops} malformed={status.malformed}")
    if status.state in (State.BACKOFF.value, State.FAILED.value) and status.last_error:
        text += f"\n  last error: {status.last_error}"
    return text


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c",
                                         help="Function config, JSON or YAML.")],
    kind: Annotated[str | None, typer.Option(
        help=f"One of {', '.join(VNF_KINDS)} (default: the file's 'type').")] = None,
    switch: Annotated[str | None, typer.Option(
        help="Open vSwitch bridge to attach to (default: the file's 'switch').")] = None,
    name: Annotated[str | None, typer.Option(
        help="VNF name (default: the config file's name).")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU limit in cores, e.g. 0.5.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 256mb.")] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    interval: Annotated[float, typer.Option(help="Seconds between status lines.")] = 5.0,
) -> None:
    """Run one VNF in the foreground until Ctrl-C; then remove every trace of it."""
    from nfv.host.runtime import Runtime
    from nfv.host.spec import VnfError
    from nfv.host.supervisor import State

    spec = build_spec(load_config(config), name=name, kind=kind, switch=switch, cpu=cpu,
                      memory=memory, source=config)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, lambda *_: done.set())
    runtime = Runtime(status_file=state_dir / f"vnfs-run-{spec.instance}.json")
    code = 0
    try:
        started = time.perf_counter()
        try:
            status = runtime.start(spec)
        except (VnfError, OSError, RuntimeError) as e:
            typer.echo(f"error: cannot start VNF {spec.instance}: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(f"VNF {status.name} placed in {time.perf_counter() - started:.3f} s: "
                   f"netns {status.netns}, {spec.switch} ports ingress={status.ports['ingress']}"
                   f" ({status.interfaces['ingress']}), egress={status.ports['egress']}"
                   f" ({status.interfaces['egress']}). Ctrl-C stops it.")
        runtime.on_state_change(lambda status, _prev: typer.echo(_describe(status)))
        while not done.wait(interval):
            status = runtime.status(spec.instance)
            typer.echo(_describe(status))
            if status.state == State.FAILED.value:
                code = 1
                break
    finally:
        runtime.close()
        (state_dir / f"vnfs-run-{spec.instance}.json").unlink(missing_ok=True)
    raise typer.Exit(code)


def read_status_files(state_dir: Path, now: float | None = None) -> dict[str, Any]:
    """Merge the status files in `state_dir`; files of dead runtimes are left out."""
    from nfv.host.supervisor import token_alive

    now = time.time() if now is None else now
    vnfs: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    files = sorted(state_dir.glob("vnfs-run-*.json"))
    if (state_dir / STATUS_FILE).exists():
        files.insert(0, state_dir / STATUS_FILE)
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            sources.append({"file": str(path), "error": str(e)})
            continue
        pid = doc.get("pid")
        alive = token_alive(str(doc.get("owner", "")))
        stale = not alive or now - float(doc.get("updated", 0)) > STALE_AFTER
        sources.append({"file": str(path), "pid": pid, "updated": doc.get("updated"),
                        "alive": alive, "stale": stale})
        if alive:
            vnfs.extend(doc.get("vnfs", []))
    return {"vnfs": vnfs, "sources": sources}


COLUMNS = ("NAME", "KIND", "STATE", "SWITCH", "IN", "OUT", "PID", "RESTARTS",
           "RX_PPS", "TX_PPS", "DROPS", "MALFORMED")


def format_table(vnfs: list[dict[str, Any]]) -> str:
    rows = [COLUMNS] + [
        (v["name"], v["kind"], v["state"],
         f"{v['host']}:{v['switch']}" if v.get("host") else v["switch"],
         str(v["ports"].get("ingress", "-")), str(v["ports"].get("egress", "-")),
         str(v["pid"] or "-"), str(v["restarts"]), f"{v['rx_pps']:.0f}", f"{v['tx_pps']:.0f}",
         str(v["drops"]), str(v["malformed"]))
        for v in vnfs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


@app.command("list")
def list_vnfs(
    output: Annotated[Output, typer.Option("-o", "--output", help="Output format.")] = (
        Output.table),
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    api: Annotated[str | None, typer.Option(
        "--api", envvar="SDN_API", help="Ask the controller at host:port instead of reading "
                                        "the status files in the state dir.")] = None,
) -> None:
    """List the VNF instances that running runtimes (controller, `vnf run`) report."""
    if api is not None:
        vnfs = api_get(api, "/v1/vnfs")["vnfs"]
        typer.echo(json.dumps(vnfs, indent=2) if output == Output.json
                   else format_table(vnfs) if vnfs else "no VNFs running")
        return
    merged = read_status_files(state_dir)
    if output == Output.json:
        typer.echo(json.dumps(merged, indent=2))
        return
    for source in merged["sources"]:
        if "error" in source:
            typer.echo(f"warning: cannot read {source['file']}: {source['error']}", err=True)
        elif not source["alive"]:
            typer.echo(f"warning: ignoring {source['file']}: its runtime (pid {source['pid']}) "
                       "is gone", err=True)
        elif source["stale"]:
            typer.echo(f"warning: {source['file']} was not updated for more than "
                       f"{STALE_AFTER:.0f} s", err=True)
    if not merged["vnfs"]:
        typer.echo("no VNFs running")
        return
    typer.echo(format_table(merged["vnfs"]))


agent_app = typer.Typer(help="The host agent of a cluster: runs the VNFs the leader assigns "
                             "to this machine's switches.", no_args_is_help=True)


@agent_app.command("run")
def agent_run(
    store: Annotated[str, typer.Option(help="The cluster's etcd: etcd://HOST:PORT[,...].")],
    host: Annotated[str | None, typer.Option(
        help="This machine's name in the cluster (default: its hostname).")] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    store_ca: Annotated[Path | None, typer.Option(help="TLS to etcd: the CA (PEM).")] = None,
    store_cert: Annotated[Path | None, typer.Option(
        help="TLS to etcd: this agent's certificate (PEM).")] = None,
    store_key: Annotated[Path | None, typer.Option(
        help="TLS to etcd: the key of --store-cert (PEM).")] = None,
) -> None:
    """Place, supervise and reap the VNFs assigned to this machine until SIGINT or
    SIGTERM. They keep running after it stops: the next agent takes them over."""
    import logging
    import socket

    from common.etcd import Etcd, EtcdTls, parse_endpoints
    from nfv.host.agent import Agent
    from nfv.host.runtime import Runtime

    try:
        parse_endpoints(store)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from exc
    if (store_cert is None) != (store_key is None) or (store_cert and not store_ca):
        raise typer.BadParameter("give --store-ca, and --store-cert with --store-key",
                                 param_hint="--store-cert")
    tls = EtcdTls(store_ca, store_cert, store_key) if store_ca else None
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(Etcd.from_url(store, tls), host or socket.gethostname(),
                  Runtime(status_file=state_dir / "vnfs-agent.json"))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: agent.stop())
    typer.echo(f"agent {agent.host} on {store}")
    agent.run()
