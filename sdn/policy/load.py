"""The entry point: text in, a checked Policy out, or every problem at once."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from sdn.policy.checks import Checker
from sdn.policy.problems import Path, PolicyError
from sdn.policy.schema import (
    Analyzer,
    Backend,
    Chain,
    Firewall,
    FirewallRule,
    HealthCheck,
    Host,
    Link,
    LoadBalancer,
    Match,
    Policy,
    Routing,
    Topology,
    TrafficClass,
)
from sdn.policy.source import Source

_MODELS: tuple[type[BaseModel], ...] = (
    Policy,
    Topology,
    Link,
    Host,
    Routing,
    Match,
    TrafficClass,
    FirewallRule,
    Firewall,
    Backend,
    HealthCheck,
    LoadBalancer,
    Analyzer,
    Chain,
)


_FIELD_NAMES: frozenset[str] = frozenset().union(*(m.model_fields for m in _MODELS))


def _schema_problems(src: Source, error: ValidationError) -> None:
    errors = error.errors()
    inner = {err["loc"][:i] for err in errors for i in range(len(err["loc"]))}
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in inner:
            continue  # the list is short because an item failed: that item says why
        path = _data_path(src.data, err["loc"])
        kind, msg = err["type"], err["msg"]
        if kind == "extra_forbidden":
            msg = f"unknown field {path[-1]!r}"
            close = difflib.get_close_matches(str(path[-1]), _FIELD_NAMES, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
        elif kind == "missing":
            msg = f"missing required field {path[-1]!r}"
        elif kind == "union_tag_invalid":
            path = (*path, "type")
            tag = err["input"].get("type")
            msg = f"unknown VNF type {tag!r} (use firewall, loadbalancer or analyzer)"
        elif kind == "union_tag_not_found":
            path = (*path, "type")
            msg = "missing required field 'type' (firewall, loadbalancer or analyzer)"
        elif kind == "too_short":
            msg = f"needs at least {err['ctx']['min_length']} item(s)"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"])
        src.problem(path, msg)


def _data_path(data: Any, loc: tuple[str | int, ...]) -> Path:
    """Turn a pydantic error location into a path through the document's own data.

    Pydantic adds steps that are not in the document: the discriminated union's tag
    (``vnfs.fw.firewall.rules``) and ``[key]`` for dict-key errors; they are dropped.
    """
    path: list[str | int] = []
    current = data
    for step in loc:
        if step == "[key]":
            continue
        if (isinstance(current, dict) and step in current) or (
            isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current)
        ):
            current = current[step]
        elif isinstance(current, dict) and current.get("type") == step:
            continue
        else:
            current = None
        path.append(step)
    return tuple(path)


def load_policy(
    text: str,
    filename: str = "<policy>",
    *,
    switches: Mapping[str, int] | None = None,
    hosts: Mapping[str, Any] | None = None,
) -> Policy:
    """Parse, validate and check a policy; raise :class:`PolicyError` listing every problem.

    ``switches`` (name -> dpid) and ``hosts`` (name -> facts) are what the live network
    knows. When given, switch/host references must be found there or in the policy's own
    ``topology.switches``/``hosts``; when ``None`` they are not checked against the network.
    """
    src = Source(text, filename)
    if src.problems and src.data is None:
        raise PolicyError(src.problems)
    if not isinstance(src.data, dict):
        kind = "empty" if src.data is None else f"a {type(src.data).__name__}"
        src.problem(
            (),
            f"a policy must be a mapping with version, routing, classes, vnfs, "
            f"chains...; this document is {kind}",
        )
        raise PolicyError(src.problems)
    try:
        policy = Policy.model_validate(src.data)
    except ValidationError as e:
        _schema_problems(src, e)
        raise PolicyError(src.problems) from None
    Checker(policy, src.problem, switches, hosts).run()
    if src.problems:
        raise PolicyError(src.problems)
    return policy
