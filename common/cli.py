"""What every `sdnctl` command group shares: output formats and the state directory."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path


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
