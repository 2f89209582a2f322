"""Fixtures for tests that need root, Open vSwitch and Mininet."""

from __future__ import annotations

import os
import shutil

import pytest

from testing.harness import Controller, reap_vnfs


def pytest_collection_modifyitems(config, items):
    """Outside CI a non-root run skips these, loudly; in CI (root) they always run."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("integration tests must run as root in CI")
    marker = pytest.mark.skip(reason="integration tests need root, Open vSwitch and Mininet")
    for item in items:
        item.add_marker(marker)


@pytest.fixture(autouse=True)
def _integration_marker(request):
    request.node.add_marker(pytest.mark.integration)


@pytest.fixture
def controller(tmp_path):
    """A running controller; the test fails if it logged an error or a traceback."""
    ctl = Controller(tmp_path / "controller").start()
    try:
        yield ctl
    finally:
        ctl.stop()
        reap_vnfs()
        errors = ctl.errors()
        if errors:
            pytest.fail("controller logged errors:\n" + "\n".join(errors[:20]))


@pytest.fixture(scope="session", autouse=True)
def _tools():
    missing = [t for t in ("ovs-vsctl", "mnexec", "tcpdump", "iperf3", "ping", "ethtool")
               if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools (run `make setup`): {missing}")
