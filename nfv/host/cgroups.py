"""CPU and memory limits for VNF processes on cgroup v1 or cgroup v2.

On cgroup v1 each controller has its own hierarchy; a VNF's group lives under the
runtime's own group in each (`<mount>/<own path>/sdn-nfv/<id>`), so the VNFs stay inside
whatever limits the runtime itself was given. On a pure cgroup v2 machine the group is
`/sys/fs/cgroup/sdn-nfv/<id>`: v2 allows controllers only in groups without processes,
which the runtime's own group usually is not.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common.helper import nap

GROUP_DIR = "sdn-nfv"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses smaller quotas

@dataclass(frozen=True)
class Limits:
    """CPU in cores (0.5 = half a core), memory in bytes; None = unlimited."""

    cpu: float | None = None
    memory: int | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None and self.cpu <= 0:
            raise ValueError(f"cpu limit must be positive, got {self.cpu}")
        if self.memory is not None and self.memory <= 0:
            raise ValueError(f"memory limit must be positive, got {self.memory}")

    def empty(self) -> bool:
        return self.cpu is None and self.memory is None


def cpu_quota_us(cores: float, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota for `cores` CPUs per period: 0.5 -> 50000 of 100000."""
    return max(MIN_CPU_QUOTA_US, round(cores * period_us))


def limit_files(limits: Limits, version: int) -> dict[str, dict[str, str]]:
    """controller -> {file: value} to write for `limits` on cgroup `version` (1 or 2)."""
    files: dict[str, dict[str, str]] = {}
    if version == 1:
        if limits.cpu is not None:
            files["cpu"] = {"cpu.cfs_period_us": str(CPU_PERIOD_US),
                            "cpu.cfs_quota_us": str(cpu_quota_us(limits.cpu))}
        if limits.memory is not None:
            files["memory"] = {"memory.limit_in_bytes": str(limits.memory)}
    else:
        if limits.cpu is not None:
            files["cpu"] = {"cpu.max": f"{cpu_quota_us(limits.cpu)} {CPU_PERIOD_US}"}
        if limits.memory is not None:
            files["memory"] = {"memory.max": str(limits.memory)}
    return files


@dataclass(frozen=True)
class Hierarchy:
    """Where cgroups are on this machine: v2 root, or v1 mount points per controller."""

    version: int
    mounts: dict[str, Path]  # controller -> mount point (v2: every controller -> the root)
    own: dict[str, str] = field(default_factory=dict)  # controller -> our group path

    def group_parent(self, controller: str) -> Path:
        if self.version == 2:
            return self.mounts[controller] / GROUP_DIR
        own = self.own.get(controller, "/").lstrip("/")
        return self.mounts[controller] / own / GROUP_DIR


def parse_mountinfo(text: str) -> tuple[dict[str, Path], Path | None]:
    """v1 controller -> mount point, and the cgroup2 mount point, from /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fstype, super_opts = Path(fields[4]), tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
        elif fstype == "cgroup":
            for opt in super_opts:
                if opt in ("cpu", "memory") and opt not in v1:
                    v1[opt] = mount_point
    return v1, v2


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """controller -> path from /proc/<pid>/cgroup; the v2 entry is keyed ''."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            own[controller] = parts[2]
    return own


def detect_hierarchy() -> Hierarchy:
    """Prefer v1 controllers where they are mounted (hybrid setups), else unified v2."""
    v1, v2 = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    if "cpu" in v1 and "memory" in v1:
        return Hierarchy(1, v1, {c: own.get(c, "/") for c in v1})
    if v2 is not None:
        available = (v2 / "cgroup.controllers").read_text().split()
        return Hierarchy(2, {c: v2 for c in ("cpu", "memory") if c in available})
    raise RuntimeError("no cgroup hierarchy with the cpu and memory controllers is mounted")


def _enable_v2_controllers(group: Path, controllers: Iterable[str]) -> None:
    """Children of `group` may use `controllers` (cgroup v2 subtree delegation)."""
    enabled = (group / "cgroup.subtree_control").read_text().split()
    wanted = [c for c in controllers if c not in enabled]
    if wanted:
        (group / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def _rmdir_retrying(path: Path, attempts: int = 50) -> None:
    """rmdir a group; it stays busy for a moment after its last process was reaped."""
    for _ in range(attempts):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            nap(0.02)
    path.rmdir()


class Cgroup:
    """One VNF's groups (one directory per controller on v1, a single one on v2)."""

    def __init__(self, name: str, limits: Limits, hierarchy: Hierarchy | None = None) -> None:
        self.name = name
        self.limits = limits
        self.hierarchy = hierarchy or detect_hierarchy()
        self.files = limit_files(limits, self.hierarchy.version)
        self.paths = sorted({self.hierarchy.group_parent(c) / name for c in self.files})

    def create(self) -> None:
        """Make the groups and write the limits; a leftover group of the same name is reused."""
        h = self.hierarchy
        for controller, values in self.files.items():
            parent = h.group_parent(controller)
            if h.version == 2:
                _enable_v2_controllers(parent.parent, self.files)
                parent.mkdir(exist_ok=True)
                _enable_v2_controllers(parent, self.files)
            else:
                parent.mkdir(exist_ok=True)
            group = parent / self.name
            group.mkdir(exist_ok=True)
            for filename, value in values.items():
                (group / filename).write_text(value)

    def attach_self(self) -> None:
        """Put the calling process in the groups; meant for a child before it execs."""
        pid = str(os.getpid()).encode()
        for path in self.paths:
            fd = os.open(path / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths:
            try:
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def read(self, filename: str) -> str:
        """A control file's content, looked up in whichever of our groups has it."""
        for path in self.paths:
            if (path / filename).exists():
                return (path / filename).read_text().strip()
        raise FileNotFoundError(filename)

    def remove(self) -> None:
        """Delete the groups (they must have no processes left) and empty parents."""
        for path in self.paths:
            _rmdir_retrying(path)
            with contextlib.suppress(OSError):  # other VNFs may still have groups there
                path.parent.rmdir()

    def exists(self) -> bool:
        return any(path.exists() for path in self.paths)


def leftover_groups(prefix: str, hierarchy: Hierarchy | None = None) -> list[Path]:
    """Group directories whose names start with `prefix` (for cleanup after a crash)."""
    h = hierarchy or detect_hierarchy()
    found: set[Path] = set()
    for controller in h.mounts:
        parent = h.group_parent(controller)
        if parent.is_dir():
            found.update(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return sorted(found)
