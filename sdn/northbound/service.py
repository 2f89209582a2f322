"""Run the controller process: os-ken's app manager, the OpenFlow listener, the REST API.

Import only from sdn.northbound.main, after eventlet has patched the standard library.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from os_ken import cfg
from os_ken.base.app_manager import AppManager
from os_ken.controller import controller as _ofp_listener  # noqa: F401  (registers --ofp-*)
from os_ken.lib import hub

from sdn.northbound.api import make_api
from sdn.policy.store import PolicyStore

LOG = logging.getLogger("sdn.northbound.service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(state_dir: Path, verbose: bool) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = state_dir / "controller.log"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr),
                                       logging.FileHandler(log_file)]
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format=LOG_FORMAT, handlers=handlers, force=True)
    for noisy in ("os_ken.base.app_manager", "os_ken.controller.controller"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def parse_address(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host.strip("[]"), int(port)


def api_token(host: str, state_dir: Path) -> str | None:
    """No token on loopback; elsewhere $SDN_API_TOKEN, or one generated into the state dir."""
    if ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        return None
    token = os.environ.get("SDN_API_TOKEN")
    if not token:
        path = state_dir / "api-token"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        token = path.read_text().strip()
        LOG.info("API token in %s (send it as Authorization: Bearer ...)", path)
    return token


def run(ofp_host: str, ofp_port: int, api: str, state_dir: Path, verbose: bool = False,
        ordered_updates: bool = True) -> None:
    """Serve until SIGINT or SIGTERM (eventlet must already have patched the stdlib)."""
    cfg.CONF(args=["--ofp-tcp-listen-port", str(ofp_port), "--ofp-listen-host", ofp_host],
             project="os_ken")
    log_file = setup_logging(state_dir, verbose)

    manager = AppManager.get_instance()
    manager.load_apps(["sdn.controller.app"])
    contexts = manager.create_contexts()
    manager.instantiate_apps(**contexts)
    controller = manager.applications["SdnController"]
    engine = controller.restore(PolicyStore(state_dir), state_dir, ordered_updates)

    api_host, api_port = parse_address(api, 8080)
    token = api_token(api_host, state_dir)
    server = hub.WSGIServer((api_host, api_port), make_api(controller.state, engine, token))
    hub.spawn(server.serve_forever)
    LOG.info("controller up: OpenFlow %s:%d, API http://%s:%d, log %s",
             ofp_host, ofp_port, api_host, api_port, log_file)

    stopping = hub.Event()

    def stop(signum, _frame):
        LOG.info("signal %d: controller stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stopping.wait()
    finally:
        controller.close()
        manager.close()
