"""Running one VNF worker process and judging its health.

The worker runs in the VNF's namespace and cgroup from its first instruction: the child
joins both between fork and exec, so no packet is handled and no byte allocated outside
them. Health is what the worker proves, not what the kernel says: its stats file must be
fresh and its process alive. Failures are retried with exponential backoff.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

from common.helper import nap, wait_exit
from nfv.host.netns import NETNS_DIR, setns_fd


class State(str, Enum):
    STARTING = "starting"  # spawned, no fresh stats yet
    RUNNING = "running"  # alive and writing stats
    BACKOFF = "backoff"  # died; waiting to be restarted
    FAILED = "failed"  # died too often in a row; given up
    STOPPED = "stopped"  # stopped on request


@dataclass(frozen=True)
class Backoff:
    """Restart delays initial, initial*factor, ... capped at maximum.

    After `max_failures` failures in a row the VNF is declared failed; a VNF that has
    been running for `stable_after` seconds starts again from the first delay.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    max_failures: int = 10
    stable_after: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows the `failures`-th failure."""
        if failures < 1:
            return 0.0
        exponent = min(failures - 1, 64)  # far past the cap; avoids float overflow
        return min(self.maximum, self.initial * self.factor**exponent)

    def gives_up(self, failures: int) -> bool:
        return failures > self.max_failures


@dataclass(frozen=True)
class StatsSample:
    """The counters of one stats file, summed over both arms."""

    updated: float
    pid: int | None
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    dropped: int
    malformed: int
    function: dict[str, Any]


def _seconds(value: Any, fallback: float) -> float:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return fallback


def parse_stats(doc: dict[str, Any], mtime: float) -> StatsSample:
    """Turn the worker's stats document into a sample; `mtime` if `updated` is unusable."""
    ports = doc.get("ports") or {}

    def total(key: str) -> int:
        return sum(int((ports.get(arm) or {}).get(key, 0)) for arm in ("ingress", "egress"))

    pid = doc.get("pid")
    return StatsSample(
        updated=_seconds(doc.get("updated"), mtime),
        pid=pid if isinstance(pid, int) else None,
        rx_packets=total("rx_packets"),
        tx_packets=total("tx_packets"),
        rx_bytes=total("rx_bytes"),
        tx_bytes=total("tx_bytes"),
        dropped=int(doc.get("dropped", 0)),
        malformed=int(doc.get("malformed", 0)),
        function=dict(doc.get("function") or {}),
    )


def read_stats(path: Path) -> StatsSample | None:
    """The current sample, or None when the file is missing or half-written."""
    try:
        mtime = path.stat().st_mtime
        return parse_stats(json.loads(path.read_text()), mtime)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def rates(prev: StatsSample | None, cur: StatsSample | None) -> tuple[float, float]:
    """(rx pps, tx pps) between two samples; 0 when they do not form an interval.

    Counters restart at zero with a new worker process, so a decrease means a new
    process, not negative traffic.
    """
    if prev is None or cur is None or prev.pid != cur.pid:
        return 0.0, 0.0
    dt = cur.updated - prev.updated
    if dt <= 0 or cur.rx_packets < prev.rx_packets or cur.tx_packets < prev.tx_packets:
        return 0.0, 0.0
    return (cur.rx_packets - prev.rx_packets) / dt, (cur.tx_packets - prev.tx_packets) / dt


def is_fresh(sample: StatsSample | None, now: float, max_age: float) -> bool:
    return sample is not None and now - sample.updated < max_age


def worker_argv(base: Sequence[str], kind: str, config: Path, ingress: str, egress: str,
                stats: Path) -> list[str]:
    """The worker's command line (the contract with nfv.datapath.worker)."""
    return [*base, "--kind", kind, "--config", str(config), "--ingress", ingress,
            "--egress", egress, "--stats", str(stats)]


def spawn_in(argv: Sequence[str], netns: str, cgroup_procs: Sequence[Path],
             log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start `argv` inside namespace `netns` and the cgroups whose cgroup.procs are given.

    The child runs only syscalls between fork and exec (setns, open, write), which is
    what keeps a preexec hook safe in a threaded parent. It gets its own session, so a
    Ctrl-C meant for the runtime does not reach the workers; the runtime stops them.
    """
    ns_fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    procs = [str(p) for p in cgroup_procs]

    def enter() -> None:
        setns_fd(ns_fd)
        pid = str(os.getpid()).encode()
        for path in procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    try:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=enter,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(ns_fd)


class Adopted:
    """A worker another (dead) runtime spawned, taken over after a restart: enough of
    `subprocess.Popen` for supervision and `terminate`. Not our child, so its exit code
    is unknown: `poll()` says -1 once it is gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and has_exited(self.pid):
            self.returncode = -1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if not wait_exit(self, math.inf if timeout is None else timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return -1


Worker = subprocess.Popen | Adopted


def terminate(proc: Worker, grace: float = 2.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace` seconds; reap it; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if not wait_exit(proc, grace):
            proc.kill()
            proc.wait()
    return proc.returncode


def kill_pids(pids: Sequence[int], grace: float = 1.0) -> list[int]:
    """Stop processes that are not our children (leftovers of a crashed runtime)."""
    alive = _signal(pids, signal.SIGTERM)
    alive = _wait_gone(alive, grace)
    _wait_gone(_signal(alive, signal.SIGKILL), grace)
    return list(pids)


def _signal(pids: Sequence[int], signum: int) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent.append(pid)
        except ProcessLookupError:
            continue
    return sent


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until the processes have exited (zombies count as exited); return the rest."""
    alive = list(pids)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        nap(0.02)
        alive = [p for p in alive if not has_exited(p)]
    return alive


def has_exited(pid: int) -> bool:
    """True when `pid` is gone or a zombie (exited, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def log_tail(path: Path, limit: int = 400) -> str:
    """The last bytes of a worker's log, for the status' last_error."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def process_token(pid: int) -> str | None:
    """'pid:starttime' names a process uniquely even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid}:{stat.rpartition(')')[2].split()[19]}"


def token_alive(token: str) -> bool:
    pid, _, _ = token.partition(":")
    return pid.isdigit() and process_token(int(pid)) == token
