"""Work that would hold the controller's eventlet loop runs in an OS thread while the loop
goes on answering switches: long pure work (validating a large policy, compiling every
switch's rules: OpenFlow echoes and LLDP must not wait seconds behind a 4,000-class
policy), and blocking I/O — `requests` does not yield to eventlet here (urllib3 waits in
a `select` eventlet does not patch), so an etcd member that does not answer would stop
the loop for the whole timeout. Outside the controller process (tests, tools) the work
simply runs in the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from eventlet import patcher, tpool

T = TypeVar("T")


def run_blocking(work: Callable[..., T], *args: object) -> T:
    if patcher.is_monkey_patched("thread"):
        return tpool.execute(work, *args)
    return work(*args)
