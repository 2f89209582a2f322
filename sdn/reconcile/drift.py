"""Drift: how what a switch really holds differs from what the controller wants, told by
the policy object each rule came from. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sdn.model.cookies import (
    CHAIN_BYPASS,
    CHAIN_HEALTH,
    CHAIN_PORT,
    CHAIN_STEER,
    CHAIN_TAG,
    COOKIE_ARP,
    COOKIE_CHAIN,
    COOKIE_CLASS,
    COOKIE_CONTROL,
    COOKIE_FLOOD,
    COOKIE_LEARN,
    COOKIE_ROUTE,
    chain_cookie,
    chain_sub_kind,
    cookie,
    cookie_kind,
)
from sdn.model.rules import FlowRule, SwitchRules
from sdn.reconcile.diff import diff

KIND_NAMES = {COOKIE_CONTROL: "pipeline", COOKIE_FLOOD: "flooding", COOKIE_ROUTE: "route",
              COOKIE_LEARN: "host learning", COOKIE_CLASS: "class", COOKIE_CHAIN: "chain",
              COOKIE_ARP: "ARP answer"}
CHAIN_PARTS = {CHAIN_TAG: "tag", CHAIN_PORT: "VNF arm", CHAIN_STEER: "steering",
               CHAIN_BYPASS: "offloaded flow", CHAIN_HEALTH: "health checks"}


def cookie_names(hosts: Iterable[tuple[str, tuple[str, ...]]], addresses: Iterable[str],
                 object_ids: Mapping[str, int], chains: Iterable[str]) -> dict[int, str]:
    """Names for the cookies of the objects in force: routes to hosts (by MAC, with their
    addresses), ARP answers (by address), classes (by the policy's object ids), chains'
    steering (by name), and the fixed parts of the pipeline."""
    names = {cookie(COOKIE_ROUTE, mac): f"route to {mac}" + (f" ({', '.join(ips)})"
                                                             if ips else "")
             for mac, ips in hosts}
    names.update((cookie(COOKIE_ARP, ip), f"ARP answer for {ip}") for ip in addresses)
    names.update((cookie(COOKIE_CLASS, oid), f"class {key.removeprefix('class:')}")
                 for key, oid in object_ids.items() if key.startswith("class:"))
    names[cookie(COOKIE_CLASS, "unclassified")] = "class (unclassified traffic)"
    names.update((chain_cookie(CHAIN_STEER, name), f"chain {name} steering")
                 for name in chains)
    names[cookie(COOKIE_CONTROL, "pipeline")] = "pipeline"
    names[cookie(COOKIE_LEARN, "hosts")] = "host learning"
    names[cookie(COOKIE_FLOOD, "tree")] = "flooding tree"
    names[cookie(COOKIE_ROUTE, "next hops")] = "route next hops (exits and U-turns)"
    return names


def describe(value: int, names: Mapping[int, str]) -> str:
    """The policy object a cookie names, as far as it can be told."""
    if value in names:
        return names[value]
    kind = cookie_kind(value)
    if kind == COOKIE_CHAIN:
        return f"chain {CHAIN_PARTS.get(chain_sub_kind(value), 'rule')} {value:#018x}"
    return f"{KIND_NAMES.get(kind, 'unknown object')} {value:#018x}"


@dataclass
class SwitchDrift:
    """Rules and groups that differ, each as (what, object it came from)."""

    missing: list[tuple[str, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)

    def to_json(self) -> dict:
        return {kind: [{"what": what, "object": obj} for what, obj in entries]
                for kind, entries in (("missing", self.missing), ("extra", self.extra),
                                      ("changed", self.changed))}


def _flow_text(rule: FlowRule) -> str:
    match = ",".join(f"{k}={v}" for k, v in rule.match)
    return f"table={rule.table} priority={rule.priority}" + (f" {match}" if match else "")


def drift(wanted: SwitchRules, installed: SwitchRules, names: Mapping[int, str]
          ) -> SwitchDrift:
    """What `installed` lacks, holds beyond, or holds differently from `wanted`."""
    changes = diff(installed, wanted)
    found = SwitchDrift()
    for rule in changes.flow_adds:
        entry = (f"flow {_flow_text(rule)}", describe(rule.cookie, names))
        (found.changed if rule.key in installed.flows else found.missing).append(entry)
    found.extra += [(f"flow {_flow_text(r)}", describe(r.cookie, names))
                    for r in changes.flow_deletes]
    found.missing += [(f"group {g.group_id}", "routing groups") for g in changes.group_adds]
    found.changed += [(f"group {g.group_id}", "routing groups") for g in changes.group_mods]
    found.extra += [(f"group {g.group_id}", "not ours") for g in changes.group_deletes]
    found.missing += [(f"meter {m.meter_id}", "meters") for m in changes.meter_adds]
    found.changed += [(f"meter {m.meter_id}", "meters") for m in changes.meter_mods]
    found.extra += [(f"meter {m.meter_id}", "not ours") for m in changes.meter_deletes]
    return found
