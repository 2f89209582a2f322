"""What every `sdnctl` command group shares: output formats and the state directory."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_API = "127.0.0.1:8080"
ApiOpt = Annotated[str, typer.Option("--api", envvar="SDN_API",
                                     help="Controller REST address host:port.")]


class Output(str, Enum):
    table = "table"
    json = "json"


def default_state_dir() -> Path:
    """$SDN_STATE_DIR, else /var/lib/sdnctl as root, else ~/.local/state/sdnctl."""
    env = os.environ.get("SDN_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/sdnctl")
    return Path.home() / ".local/state/sdnctl"


def api_get(api: str, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    return api_call("GET", api, f"{path}?{query}" if query else path)


def api_call(method: str, api: str, path: str, body: Any = None) -> Any:
    """One JSON request to the controller; its errors end the command with a message
    (the standard library's client: importing requests would cost `sdnctl` a third of
    its start-up)."""
    token = os.environ.get("SDN_API_TOKEN")
    request = urllib.request.Request(
        f"http://{api}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read() or b"{}")
        except ValueError:
            problem = {}
        typer.echo(f"error: {problem.get('title', exc.reason)}: "
                   f"{problem.get('description', '')}", err=True)
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise typer.BadParameter(f"cannot reach the controller at {api}: is it running?",
                                 param_hint="--api") from exc
