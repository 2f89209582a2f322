"""Helper processes: output, errors, timeouts, and no stall of the controller's loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from common.helper import HelperError, run_helper

HELPER = "tests.unit.echo_helper"


def test_a_helpers_output_is_returned():
    assert run_helper(HELPER, "echo", {"ports": [1, 2]}, 30).strip() == '{"ports": [1, 2]}'


def test_a_failing_helper_says_its_last_error_line():
    with pytest.raises(HelperError, match=r"^tests.unit.echo_helper bogus: no such command"):
        run_helper(HELPER, "bogus", {}, 30)


def test_a_helper_past_its_timeout_is_killed():
    start = time.monotonic()
    with pytest.raises(HelperError, match=r"no answer within 0\.5 s"):
        run_helper(HELPER, "sleep", 30, 0.5)
    assert time.monotonic() - start < 5


def test_waiting_for_a_helper_does_not_stall_an_eventlet_loop():
    """Patched as the controller is (threading only), a green thread ticking every 10 ms
    keeps ticking while a helper runs for half a second."""
    script = textwrap.dedent(f"""
        from os_ken.lib import hub
        hub.patch(thread=True)
        import time
        from common.helper import run_helper
        gaps = []
        def tick():
            last = time.monotonic()
            while True:
                hub.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        hub.spawn(tick)
        hub.sleep(0.05)
        run_helper("{HELPER}", "sleep", 0.5, 30)
        print(len(gaps), max(gaps))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    ticks, longest = done.stdout.split()
    assert int(ticks) >= 20 and float(longest) < 0.1, done.stdout
