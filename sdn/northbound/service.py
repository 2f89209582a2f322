"""Run the controller process: os-ken's app manager, the OpenFlow listener, the REST API.

Import only from sdn.northbound.main, after eventlet has patched the standard library.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import eventlet
import eventlet.wsgi
from os_ken import cfg
from os_ken.base.app_manager import AppManager
from os_ken.controller.controller import datapath_connection_factory  # registers --ofp-*
from os_ken.lib import hub
from prometheus_client import REGISTRY

from common.etcd import Etcd, EtcdTls
from sdn.controller.app import REFUSED
from sdn.controller.vnf_metrics import VnfCollector
from sdn.northbound.api import MAX_BODY, make_api
from sdn.policy.etcd_store import EtcdPolicyStore
from sdn.policy.store import PolicyStore, RevisionStore
from sdn.southbound.tls import TlsFiles, serve_tls, server_context

LOG = logging.getLogger("sdn.northbound.service")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STOP_POLL = 0.1  # seconds between looks for a stop signal
API_CONNECTIONS = 256
API_IDLE_TIMEOUT = 10.0
LEAVE_WAIT = 0.5  # seconds a stopping member tries to end its lease (else it runs out)
LEASE_TTL = 2  # seconds: etcd's shortest lease; a new leader within ~3 s of a crash
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class EscapingFormatter(logging.Formatter):
    """Control characters in a message (an author's CR/LF, a name from a packet) are
    escaped, so no input can forge or break log lines; tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        return super().formatMessage(record)


def private_state_dir(state_dir: Path) -> None:
    """The state dir holds the API token and the policy history: only its owner may
    read it, whatever the umask; files created later by this process are private too."""
    os.umask(0o077)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    for path in state_dir.iterdir():
        if path.is_file():
            path.chmod(0o600)


def setup_logging(state_dir: Path, verbose: bool) -> Path:
    log_file = state_dir / "controller.log"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr),
                                       logging.FileHandler(log_file)]
    for handler in handlers:
        handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=handlers, force=True)
    for noisy in ("os_ken.base.app_manager", "os_ken.controller.controller"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def parse_address(value: str, default_port: int) -> tuple[str, int]:
    """host:port, [v6 address]:port, or a host alone."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


def is_loopback(host: str) -> bool:
    """Every address the name resolves to is a loopback address."""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def api_token(host: str, state_dir: Path) -> str | None:
    """No token on loopback; elsewhere $SDN_API_TOKEN, or one generated into the state dir."""
    if is_loopback(host):
        return None
    token = os.environ.get("SDN_API_TOKEN")
    if not token:
        path = state_dir / "api-token"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
        token = path.read_text().strip()
        LOG.info("API token in %s (send it as Authorization: Bearer ...)", path)
    return token


@dataclass(frozen=True)
class Options:
    """How the controller process is run (`sdnctl controller run`'s options)."""

    state_dir: Path
    ofp_host: str = "0.0.0.0"
    ofp_port: int = 6653
    api: str = "127.0.0.1:8080"
    verbose: bool = False
    ordered_updates: bool = True
    api_max_body: int = MAX_BODY
    allowed_dpids: frozenset[int] | None = None  # None: any datapath id may connect
    tls_files: TlsFiles | None = None  # None: plain OpenFlow over TCP
    store: str | None = None  # etcd://...: a member of a cluster; None: SQLite, alone
    node: str | None = None  # the member's name in the cluster
    advertise_api: str | None = None  # where other members reach this API
    lease_ttl: int = LEASE_TTL
    store_tls: EtcdTls | None = None  # None: plain HTTP to etcd


def serve_api(host: str, port: int, app: object) -> None:
    """The REST API on the controller's event loop, bounded: at most API_CONNECTIONS at a
    time (more wait to be accepted), and a client that sends nothing for
    API_IDLE_TIMEOUT seconds (headers, body, or the next request) is dropped, so slow or
    idle connections cannot hold the API."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = eventlet.listen((host, port), family=family)
    hub.spawn(eventlet.wsgi.server, listener, app, log=logging.getLogger("sdn.api.http"),
              max_size=API_CONNECTIONS, socket_timeout=API_IDLE_TIMEOUT,
              keepalive=API_IDLE_TIMEOUT)


def os_ken_listener(options: Options) -> list[str]:
    """os-ken's own OpenFlow listener: the OpenFlow address, or with TLS a Unix socket in
    the private state dir (os-ken always listens somewhere; it must not be reachable
    without a certificate)."""
    port = ["--ofp-tcp-listen-port", str(options.ofp_port)]
    if options.tls_files is None:
        return ["--ofp-listen-host", options.ofp_host, *port]
    unix_socket = options.state_dir / "openflow-plain.sock"
    unix_socket.unlink(missing_ok=True)
    return ["--ofp-listen-host", str(unix_socket), *port]


def run(options: Options) -> None:
    """Serve until SIGINT or SIGTERM (eventlet must already have patched the stdlib)."""
    state_dir = options.state_dir
    private_state_dir(state_dir)
    cfg.CONF(args=os_ken_listener(options), project="os_ken")
    log_file = setup_logging(state_dir, options.verbose)

    manager = AppManager.get_instance()
    manager.load_apps(["sdn.controller.app", "sdn.controller.port_stats"])
    contexts = manager.create_contexts()
    manager.instantiate_apps(**contexts)
    controller = manager.applications["SdnController"]
    api_host, api_port = parse_address(options.api, 8080)
    store: RevisionStore = PolicyStore(state_dir)
    if options.store is not None:
        node = options.node or f"{socket.gethostname()}-{api_port}"
        api_url = options.advertise_api or f"http://{api_host}:{api_port}"
        member = controller.join_cluster(Etcd.from_url(options.store, options.store_tls),
                                         node, api_url, options.lease_ttl)
        store = EtcdPolicyStore(member.etcd, member.write_generation)
        LOG.info("cluster member %s on %s (lease %ds)", node, options.store, options.lease_ttl)
    engine = controller.restore(store, state_dir, options.ordered_updates,
                                options.allowed_dpids)
    REGISTRY.register(VnfCollector(
        lambda: controller.state.vnfs.status() if controller.state.vnfs else []))

    if options.tls_files is not None:
        hub.spawn(serve_tls, options.ofp_host, options.ofp_port,
                  server_context(options.tls_files), datapath_connection_factory,
                  lambda _address, _why: REFUSED.labels("tls").inc())
    token = api_token(api_host, state_dir)
    serve_api(api_host, api_port, make_api(controller.state, engine, token,
                                           options.api_max_body, controller.cluster,
                                           manager.applications["PortStats"]))
    LOG.info("controller up: OpenFlow %s:%d, API http://%s:%d, log %s",
             options.ofp_host, options.ofp_port, api_host, api_port, log_file)

    signals: list[int] = []
    # The handler only records the signal: an eventlet event set from inside a signal
    # handler did not wake its waiter (the process never exited).
    signal.signal(signal.SIGTERM, lambda signum, _frame: signals.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signals.append(signum))
    while not signals:
        hub.sleep(STOP_POLL)
    LOG.info("signal %d: controller stopping; switches keep their rules and VNFs keep "
             "running for the next controller to take over", signals[0])
    controller.state.freeze()
    if controller.cluster is not None:  # best effort: a slow etcd must not hold the exit
        with eventlet.Timeout(LEAVE_WAIT, False):
            controller.cluster.leave()
    logging.shutdown()
