"""YAML with positions: every value of a policy file keeps its line and column, so every
problem can name where it is. Caps on size and nesting trip before the tree is built."""

from __future__ import annotations

from typing import Any

import yaml

from sdn.policy.problems import Path, Problem, format_path

MAX_YAML_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"


class Source:
    """YAML text turned into plain data plus the (line, column) of every field path."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.positions: dict[Path, tuple[int, int]] = {(): (1, 1)}
        self.problems: list[Problem] = []
        self.data: Any = None
        self._nodes = 0
        self._loader = yaml.SafeLoader(text)
        try:
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
            self.problems.append(Problem(filename, 1, 1, "", f"YAML error: {e}"))
        except _TooLarge:
            self.problems.append(
                Problem(filename, 1, 1, "", f"document too large (over {MAX_YAML_NODES} nodes)")
            )
        finally:
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


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
