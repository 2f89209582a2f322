"""Backoff schedule, stats parsing, rate and health math, process tokens."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfv.host.supervisor import (
    Backoff,
    StatsSample,
    is_fresh,
    parse_stats,
    process_token,
    rates,
    read_stats,
    token_alive,
    worker_argv,
)


def sample(updated: float, rx: int, tx: int, pid: int | None = 7) -> StatsSample:
    return StatsSample(updated=updated, pid=pid, rx_packets=rx, tx_packets=tx, rx_bytes=0,
                       tx_bytes=0, dropped=0, malformed=0, function={})


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(initial=0.5, factor=2, maximum=4)
    assert [b.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.delay(10_000) == 4  # no overflow


def test_backoff_gives_up_after_max_failures() -> None:
    b = Backoff(max_failures=3)
    assert not b.gives_up(3)
    assert b.gives_up(4)


def test_parse_stats_sums_both_arms() -> None:
    doc = {"kind": "forward", "pid": 42, "started": 1.0, "updated": 10.5,
           "ports": {"ingress": {"rx_packets": 5, "rx_bytes": 500, "tx_packets": 1,
                                 "tx_bytes": 60},
                     "egress": {"rx_packets": 2, "rx_bytes": 120, "tx_packets": 5,
                                "tx_bytes": 500}},
           "dropped": 3, "malformed": 1, "function": {"rules": 2}}
    s = parse_stats(doc, mtime=99.0)
    assert (s.updated, s.pid, s.rx_packets, s.tx_packets) == (10.5, 42, 7, 6)
    assert (s.rx_bytes, s.tx_bytes, s.dropped, s.malformed) == (620, 560, 3, 1)
    assert s.function == {"rules": 2}


def test_parse_stats_falls_back_to_mtime() -> None:
    s = parse_stats({"updated": "2026-01-01T00:00:00", "ports": {}}, mtime=99.0)
    assert s.updated == 99.0 and s.rx_packets == 0 and s.pid is None


def test_read_stats_tolerates_missing_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    assert read_stats(path) is None
    path.write_text("{half")
    assert read_stats(path) is None
    path.write_text(json.dumps({"updated": 5, "pid": 1, "ports": {}}))
    got = read_stats(path)
    assert got is not None and got.updated == 5


def test_rates() -> None:
    assert rates(sample(10, 100, 90), sample(12, 300, 290)) == (100.0, 100.0)


@pytest.mark.parametrize(("prev", "cur"), [
    (None, sample(1, 1, 1)),
    (sample(5, 10, 10), sample(5, 20, 20)),  # same instant
    (sample(5, 10, 10), sample(6, 2, 2)),  # counters reset: a new process
    (sample(5, 10, 10, pid=1), sample(6, 20, 20, pid=2)),
])
def test_rates_without_an_interval_are_zero(prev: StatsSample | None, cur: StatsSample) -> None:
    assert rates(prev, cur) == (0.0, 0.0)


def test_freshness() -> None:
    assert is_fresh(sample(100, 0, 0), now=102.9, max_age=3)
    assert not is_fresh(sample(100, 0, 0), now=103.0, max_age=3)
    assert not is_fresh(None, now=0, max_age=3)


def test_worker_argv_is_the_contract() -> None:
    argv = worker_argv(["py", "-m", "nfv.datapath.worker"], "firewall", Path("/r/c.json"),
                       "ingress", "egress", Path("/r/s.json"))
    assert argv == ["py", "-m", "nfv.datapath.worker", "--kind", "firewall",
                    "--config", "/r/c.json", "--ingress", "ingress", "--egress", "egress",
                    "--stats", "/r/s.json"]


def test_process_tokens_tell_live_from_dead() -> None:
    mine = process_token(os.getpid())
    assert mine is not None and mine.startswith(f"{os.getpid()}:")
    assert token_alive(mine)
    assert not token_alive(f"{os.getpid()}:1")  # same pid, another start time
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = process_token(child.pid)
    child.wait()
    assert token is not None and not token_alive(token)
    assert not token_alive("") and not token_alive("garbage")
