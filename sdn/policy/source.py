"""YAML with positions: every value of a policy file keeps its line and column, so every
problem can name where it is. Caps on size and nesting trip before the tree is built."""

from __future__ import annotations

from typing import Any

import yaml

from sdn.policy.problems import Path, PolicyError, Problem, format_path

MAX_POLICY_BYTES = 4 << 20  # the largest useful policy is a few hundred kB
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 32  # a policy nests 5 deep; the composer recurses per level
MERGE_TAG = "tag:yaml.org,2002:merge"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"


def decode_policy(data: bytes, filename: str) -> str:
    """A policy file's bytes as text, or a PolicyError saying where it stops being UTF-8
    (or that it is too large to be a policy)."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError([Problem(filename, 1, 1, "", f"{len(data)} bytes: a policy is at "
                                   f"most {MAX_POLICY_BYTES} bytes")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[:e.start]
        line, col = before.count(b"\n") + 1, e.start - (before.rfind(b"\n") + 1) + 1
        raise PolicyError([Problem(filename, line, col, "", f"not UTF-8 text (byte "
                                   f"{data[e.start]:#04x})")]) from None


class Source:
    """YAML text turned into plain data plus the (line, column) of every field path."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.positions: dict[Path, tuple[int, int]] = {(): (1, 1)}
        self.problems: list[Problem] = []
        self.data: Any = None
        self._nodes = 0
        self._ancestors: set[int] = set()
        self._loader: _BoundedLoader | None = None
        try:
            # the reader checks the characters here already (it refuses control codes)
            self._loader = _BoundedLoader(text)
            root = self._loader.get_single_node()
            if root is not None:
                self.positions[()] = _mark(root)
                self.data = self._build(root, ())
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            msg = " ".join(str(x) for x in (e.context, e.problem) if x) or str(e)
            self.problems.append(Problem(filename, line, col, "", f"YAML syntax error: {msg}"))
        except yaml.YAMLError as e:
            self.problems.append(Problem(filename, 1, 1, "", f"YAML error: {_one_line(e)}"))
        except _TooLarge:
            self.problems.append(
                Problem(filename, 1, 1, "", f"document too large (over {MAX_YAML_NODES} nodes)")
            )
        except _TooDeep as e:
            self.problems.append(Problem(filename, *e.position, "",
                                         f"nested more than {MAX_YAML_DEPTH} levels deep"))
        finally:
            if self._loader is not None:
                self._loader.dispose()

    def problem(self, path: Path, message: str) -> None:
        self._add(*self.locate(path), path, message)

    def _add(self, line: int, col: int, path: Path, message: str) -> None:
        self.problems.append(Problem(self.filename, line, col, format_path(path), message))

    def locate(self, path: Path) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor present in the file."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return 1, 1

    def _build(self, node: yaml.Node, path: Path) -> Any:
        # Aliases share nodes, so a "billion laughs" document is small text but a huge tree.
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _TooLarge
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._ancestors:
            self._add(*_mark(node), path, "an alias that contains itself")
            return None
        self._ancestors.add(id(node))
        try:
            return self._collection(node, path)
        finally:
            self._ancestors.discard(id(node))

    def _collection(self, node: yaml.Node, path: Path) -> Any:
        if node.tag not in (MAP_TAG, SEQ_TAG):
            self._add(*_mark(node), path, f"unsupported YAML tag {node.tag!r}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path)
        items = []
        for i, item in enumerate(node.value):
            self.positions[(*path, i)] = _mark(item)
            items.append(self._build(item, (*path, i)))
        return items

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        """A plain value; tags that would construct objects are refused (safe loader)."""
        try:
            return self._loader.construct_object(node)
        except yaml.constructor.ConstructorError as e:
            self._add(*_mark(node), path, f"YAML error: {e.problem}")
        except ValueError as e:  # an integer of thousands of digits, say
            self._add(*_mark(node), path, f"unreadable value: {_one_line(e)}")
        return None

    def _build_mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        pairs = [(k, v) for k, v in node.value if k.tag != MERGE_TAG]
        result = self._merged(node, path)
        explicit: dict[Any, int] = {}
        for key_node, value_node in pairs:
            line, col = _mark(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self._add(line, col, path, "mapping keys must be plain values")
                continue
            key = self._scalar(key_node, path)
            key_path = (*path, key)
            if key in explicit:
                message = f"duplicate key {key!r} (first defined at line {explicit[key]})"
                self._add(line, col, key_path, message)
                continue
            explicit[key] = line
            self.positions[key_path] = (line, col)
            result[key] = self._build(value_node, key_path)
        return result

    def _merged(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        """The keys ``<<: *anchor`` merges in; explicit keys then override them."""
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in reversed(sources):  # the first source listed wins
                if isinstance(source, yaml.MappingNode):
                    result.update(self._build_mapping(source, path))
                else:
                    self._add(*_mark(source), path, "'<<' must merge a mapping or a list of them")
        return result


class _TooLarge(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, position: tuple[int, int]) -> None:
        self.position = position


class _BoundedLoader(yaml.SafeLoader):
    """Refuses nesting deeper than MAX_YAML_DEPTH while composing, before Python's own
    recursion limit would (some 300 brackets deep)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep((mark.line + 1, mark.column + 1))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
