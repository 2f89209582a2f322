"""The controller process's helpers: listen addresses, log escaping, private state."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from sdn.northbound.service import EscapingFormatter, is_loopback, parse_address, private_state_dir


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::]:9090", ("::", 9090)),
    ("[::1]", ("::1", 8080)), ("::1", ("::1", 8080)), ("localhost", ("localhost", 8080)),
])
def test_api_addresses_v4_v6_and_bare(value, expected):
    assert parse_address(value, 8080) == expected


def test_loopback_is_recognised_in_both_families():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")


def test_log_lines_cannot_be_forged():
    record = logging.LogRecord("sdn", logging.INFO, __file__, 1, "applied by %s",
                               ("mallory\n2026-01-01 INFO forged line\x1b[2J",), None)
    line = EscapingFormatter("%(message)s").format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line == "applied by mallory\\x0a2026-01-01 INFO forged line\\x1b[2J"


@pytest.fixture
def restored_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_state_dir_is_private_whatever_was_there(tmp_path, restored_umask):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    (state / "api-token").write_text("t")
    (state / "api-token").chmod(0o644)
    private_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "api-token").stat().st_mode) == 0o600
    created = state / "new.db"
    created.write_text("")
    assert stat.S_IMODE(created.stat().st_mode) == 0o600  # the umask covers new files
