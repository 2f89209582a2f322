"""A policy's problems, each with file, line, column and the field it is about."""

from __future__ import annotations

from dataclasses import dataclass

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake in a policy, located precisely enough for an editor to jump to it."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class PolicyError(ValueError):
    """A policy was rejected; ``problems`` lists every mistake found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column, p.field))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: Path) -> str:
    """``('vnfs', 'fw', 'rules', 2, 'dst_port')`` -> ``'vnfs.fw.rules[2].dst_port'``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
