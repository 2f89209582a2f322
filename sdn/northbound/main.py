"""Entry point of the controller process.

eventlet has to patch the standard library before any other module is loaded, which is
why `sdnctl controller run` re-executes itself into this module instead of importing it.
"""

from os_ken.lib import hub

hub.patch(thread=True)

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from common.etcd import EtcdTls, parse_endpoints  # noqa: E402
from sdn.northbound import service  # noqa: E402
from sdn.northbound.api import MAX_BODY  # noqa: E402
from sdn.southbound.tls import TlsFiles, TlsSetupError, server_context  # noqa: E402


def dpid(text: str) -> int:
    """A datapath id as OVS prints it (16 hex digits), in 0x hex, or in decimal."""
    value = int(text, 16) if len(text) == 16 or text.startswith("0x") else int(text)
    if not 0 <= value < 1 << 64:
        raise ValueError(text)
    return value


def cluster_store(text: str) -> str:
    """etcd://HOST:PORT[,HOST:PORT...], checked here so a typo stops the start."""
    try:
        parse_endpoints(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def main() -> None:
    parser = argparse.ArgumentParser(prog="sdnctl controller run")
    parser.add_argument("--ofp-host", default="0.0.0.0")
    parser.add_argument("--ofp-port", type=int, default=6653)
    parser.add_argument("--api", default="127.0.0.1:8080")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--api-max-body", type=int, default=MAX_BODY)
    parser.add_argument("--allow-dpid", type=dpid, action="append")
    parser.add_argument("--ofp-tls-key", type=Path)
    parser.add_argument("--ofp-tls-cert", type=Path)
    parser.add_argument("--ofp-tls-ca", type=Path)
    parser.add_argument("--store", type=cluster_store)
    parser.add_argument("--node")
    parser.add_argument("--advertise-api")
    parser.add_argument("--lease-ttl", type=int, default=service.LEASE_TTL)
    parser.add_argument("--store-ca", type=Path)
    parser.add_argument("--store-cert", type=Path)
    parser.add_argument("--store-key", type=Path)
    # For measurement only (bench.update_loss): each switch gets its whole difference in
    # one round, as before loss-free ordering existed.
    parser.add_argument("--unordered-updates", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lease_ttl < 2:
        parser.error("--lease-ttl: at least 2 seconds (etcd's shortest lease)")
    store_tls = None
    if args.store_ca or args.store_cert or args.store_key:
        if not args.store_ca or bool(args.store_cert) != bool(args.store_key):
            parser.error("TLS to etcd needs --store-ca, and --store-cert with --store-key "
                         "when etcd asks for client certificates")
        unreadable = [str(p) for p in (args.store_ca, args.store_cert, args.store_key)
                      if p is not None and not p.is_file()]
        if unreadable:
            parser.error(f"TLS to etcd: cannot read {', '.join(unreadable)}")
        store_tls = EtcdTls(args.store_ca, args.store_cert, args.store_key)
    tls_files = None
    tls_paths = (args.ofp_tls_key, args.ofp_tls_cert, args.ofp_tls_ca)
    if any(tls_paths):
        if not all(tls_paths):
            parser.error("OpenFlow over TLS needs all three of --ofp-tls-key, "
                         "--ofp-tls-cert and --ofp-tls-ca")
        tls_files = TlsFiles(*tls_paths)
        try:
            server_context(tls_files)
        except TlsSetupError as exc:
            parser.error(str(exc))
    service.run(service.Options(
        state_dir=args.state_dir, ofp_host=args.ofp_host, ofp_port=args.ofp_port, api=args.api,
        verbose=args.verbose, ordered_updates=not args.unordered_updates,
        api_max_body=args.api_max_body,
        allowed_dpids=frozenset(args.allow_dpid) if args.allow_dpid else None,
        tls_files=tls_files, store=args.store, node=args.node,
        advertise_api=args.advertise_api, lease_ttl=args.lease_ttl, store_tls=store_tls))
    # Stopped, logs flushed, revisions committed: what is left is freeing the objects of
    # every switch's tables, which at 200 switches took longer than the 2 s a supervisor
    # (and our harness) waits after SIGTERM.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

if __name__ == "__main__":
    main()
