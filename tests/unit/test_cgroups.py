"""cgroup value computation and discovery parsing (no cgroup writes)."""

from pathlib import Path

import pytest

from nfv.host.cgroups import (
    GROUP_DIR,
    Hierarchy,
    Limits,
    cpu_quota_us,
    limit_files,
    parse_mountinfo,
    parse_proc_cgroup,
)

MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PROC_CGROUP = """\
9:name=systemd:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""


@pytest.mark.parametrize(("cores", "quota"), [(0.5, 50_000), (1, 100_000), (2.5, 250_000),
                                              (0.001, 1_000), (0.0001, 1_000)])
def test_cpu_quota(cores: float, quota: int) -> None:
    assert cpu_quota_us(cores) == quota


def test_limit_files_v1() -> None:
    files = limit_files(Limits(cpu=0.5, memory=256 * 10**6), 1)
    assert files == {
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"},
        "memory": {"memory.limit_in_bytes": "256000000"},
    }


def test_limit_files_v2() -> None:
    assert limit_files(Limits(cpu=0.25, memory=2**20), 2) == {
        "cpu": {"cpu.max": "25000 100000"},
        "memory": {"memory.max": "1048576"},
    }


def test_limit_files_only_what_is_set() -> None:
    assert list(limit_files(Limits(memory=4096), 1)) == ["memory"]
    assert limit_files(Limits(), 2) == {}
    assert Limits().empty() and not Limits(cpu=1).empty()


@pytest.mark.parametrize("bad", [{"cpu": 0}, {"cpu": -1}, {"memory": 0}])
def test_limits_reject_non_positive(bad: dict) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)


def test_parse_mountinfo() -> None:
    v1, v2 = parse_mountinfo(MOUNTINFO)
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu"), "memory": Path("/sys/fs/cgroup/memory")}
    assert v2 == Path("/sys/fs/cgroup/unified")


def test_parse_mountinfo_combined_controllers() -> None:
    line = "31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    v1, v2 = parse_mountinfo(line)
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu,cpuacct")} and v2 is None


def test_parse_proc_cgroup() -> None:
    own = parse_proc_cgroup(PROC_CGROUP)
    assert own["memory"] == "/process_api/abc"
    assert own["cpu"] == "/" and own[""] == "/" and own["name=systemd"] == "/"


def test_groups_nest_under_own_group_on_v1_and_root_on_v2() -> None:
    v1 = Hierarchy(1, {"cpu": Path("/c/cpu"), "memory": Path("/c/memory")},
                   {"cpu": "/", "memory": "/process_api/abc"})
    assert v1.group_parent("cpu") == Path("/c/cpu") / GROUP_DIR
    assert v1.group_parent("memory") == Path("/c/memory/process_api/abc") / GROUP_DIR
    v2 = Hierarchy(2, {"cpu": Path("/c"), "memory": Path("/c")})
    assert v2.group_parent("memory") == Path("/c") / GROUP_DIR
