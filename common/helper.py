"""Waiting on other processes without stalling the controller: short-lived helper
processes, `python -m MODULE COMMAND JSON`, for work that cannot run in the calling
process (pyroute2's netlink sockets do not work under eventlet, which the controller runs
on), and naps while VNF workers stop or the kernel lets go of their links.

Waits poll, napping on a `threading.Event`: the controller has eventlet patch `threading`
(not `time`), so a nap yields and the controller keeps handling switches meanwhile. A
blocking wait stalled the whole controller for as long as a helper ran (0.3-0.75 s here),
long enough for links LLDP had not confirmed yet to count as edge ports and flood.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time

FIRST_POLL = 0.002
LAST_POLL = 0.05
_NAP = threading.Event()  # never set: waiting on it is a sleep the patched threading yields in


class HelperError(RuntimeError):
    """The helper failed or timed out; the message is its last line of error output."""


def nap(seconds: float) -> None:
    """`time.sleep` that lets the controller's green threads run meanwhile."""
    _NAP.wait(seconds)


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` s for `proc` to exit (reaping it); whether it did."""
    deadline = time.monotonic() + timeout
    poll = FIRST_POLL
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        nap(poll)
        poll = min(2 * poll, LAST_POLL)
    return True


def run_helper(module: str, command: str, args: object, timeout: float) -> str:
    """Run the helper and return its standard output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", module, command, json.dumps(args)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if not wait_exit(proc, timeout):
            proc.kill()
            proc.wait()
            raise HelperError(f"{module} {command}: no answer within {timeout:g} s")
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            lines = err.read().decode(errors="replace").strip().splitlines()
            raise HelperError(f"{module} {command}: "
                              f"{lines[-1] if lines else f'exit status {proc.returncode}'}")
        return out.read().decode()
