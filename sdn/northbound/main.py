"""Entry point of the controller process.

eventlet has to patch the standard library before any other module is loaded, which is
why `sdnctl controller run` re-executes itself into this module instead of importing it.
"""

from os_ken.lib import hub

hub.patch(thread=True)

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from sdn.northbound import service  # noqa: E402
from sdn.northbound.api import MAX_BODY  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="sdnctl controller run")
    parser.add_argument("--ofp-host", default="0.0.0.0")
    parser.add_argument("--ofp-port", type=int, default=6653)
    parser.add_argument("--api", default="127.0.0.1:8080")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--api-max-body", type=int, default=MAX_BODY)
    # For measurement only (bench.update_loss): each switch gets its whole difference in
    # one round, as before loss-free ordering existed.
    parser.add_argument("--unordered-updates", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    service.run(args.ofp_host, args.ofp_port, args.api, args.state_dir, verbose=args.verbose,
                ordered_updates=not args.unordered_updates, api_max_body=args.api_max_body)


if __name__ == "__main__":
    main()
