"""Units: the spellings operators use for rates, durations, sizes and ports."""

import pytest

from common.units import format_port_range, parse_duration, parse_port_range, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("500kbit", 500_000),
        ("20mbit", 20_000_000),
        ("1gbit", 1_000_000_000),
        ("1.5gbit", 1_500_000_000),
        ("20Mbit", 20_000_000),
        (" 64 bit ", 64),
        ("1000", 1000),
        (1000, 1000),
        (2.5e6, 2_500_000),
    ],
)
def test_rate(text, bits):
    assert parse_rate(text) == bits
    assert isinstance(parse_rate(text), int)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("20mbps", "unknown unit 'mbps'"),
        ("fast", "expected a number and a unit"),
        ("0mbit", "must be positive"),
        (0, "must be positive"),
        (-5, "must not be negative"),
        (True, "not a boolean"),
        (None, "must be a number or a string"),
        (float("nan"), "must be finite"),
        ("1.2.3mbit", "expected a number and a unit"),
    ],
)
def test_rate_errors(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_rate(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("1s", 1.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("250us", 0.00025),
        ("1.5s", 1.5),
        (3, 3.0),
        (0.5, 0.5),
        ("0s", 0.0),
    ],
)
def test_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["15 sec", "1d", "-1s", -1, False, "ms"])
def test_duration_errors(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256mb", 256_000_000),
        ("256MB", 256_000_000),
        ("1GiB", 1 << 30),
        ("512kib", 512 * 1024),
        ("100", 100),
        (4096, 4096),
        ("1.5gb", 1_500_000_000),
    ],
)
def test_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["256 megs", "1g", "lots", True])
def test_size_errors(value):
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (80, (80, 80)),
        ("80", (80, 80)),
        ("1000-2000", (1000, 2000)),
        (" 1000 - 2000 ", (1000, 2000)),
        ("1-65535", (1, 65535)),
        ("5000-5000", (5000, 5000)),
    ],
)
def test_port_range(spec, expected):
    assert parse_port_range(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (0, "out of range"),
        (65536, "out of range"),
        ("70000", "out of range"),
        ("2000-1000", "start 2000 is above end 1000"),
        ("1000-", "expected a number"),
        ("http", "expected a number"),
        (-1, "expected a number"),
        (80.0, "expected a number"),
        (True, "not a boolean"),
        ("1-2-3", "expected a number"),
    ],
)
def test_port_range_errors(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_port_range(spec)


def test_format_port_range_inverts_parse():
    for spec in ("80", "1000-2000"):
        assert format_port_range(parse_port_range(spec)) == spec
