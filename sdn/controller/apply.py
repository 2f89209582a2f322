"""Apply a policy like `kubectl apply`: validate, diff, send only the difference, wait for
every switch to confirm (barrier), record a revision — or put everything back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from common.blocking import run_blocking
from sdn.compile.chain_model import ChainError
from sdn.controller.state import ControllerState
from sdn.controller.trace import behaviour_changes
from sdn.model.rules import SwitchRules
from sdn.policy.load import load_policy
from sdn.policy.problems import PolicyError, Problem, format_path
from sdn.policy.schema import Policy
from sdn.policy.store import PolicyStore, Revision, StoreError, summarize
from sdn.reconcile.diff import Changes

LOG = logging.getLogger("sdn.controller.apply")
# Hosts are learned by address, never by name: names come only from the policy itself.
NO_LIVE_HOST_NAMES: dict[str, object] = {}


class ApplyFailed(Exception):
    """Some switch rejected or did not confirm the change; the old state was restored."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures  # what failed ("switch 00..01", "VNF placement") -> why
        super().__init__("; ".join(f"{what}: {why}" for what, why in failures.items()))


@dataclass
class Plan:
    policy: Policy
    summary: str
    changes: dict[int, Changes] = field(default_factory=dict)
    behaviour: list[dict[str, str]] | None = None  # dry runs: which traffic changes
    desired: dict[int, SwitchRules] = field(default_factory=dict, repr=False)

    @property
    def flow_mods(self) -> int:
        return sum(c.flow_mods for c in self.changes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "flow_mods": self.flow_mods,
            "switches": {
                f"{dpid:016x}": {
                    "flows_added": len(c.flow_adds), "flows_removed": len(c.flow_deletes),
                    "groups_added": len(c.group_adds), "groups_changed": len(c.group_mods),
                    "groups_removed": len(c.group_deletes),
                }
                for dpid, c in sorted(self.changes.items()) if c
            },
            **({"behaviour": self.behaviour} if self.behaviour is not None else {}),
        }


class PolicyEngine:
    """Apply and roll back policies against the controller's state and revision store."""

    def __init__(self, state: ControllerState, store: PolicyStore) -> None:
        self.ctl = state
        self.store = store

    def load(self, text: str, filename: str) -> Policy:
        """Validate against the live network too: switch names must exist."""
        switches = {f"s{dpid}": dpid for dpid in self.ctl.switches}
        return run_blocking(partial(load_policy, switches=switches, hosts=NO_LIVE_HOST_NAMES),
                            text, filename)

    def plan(self, policy: Policy, filename: str = "<policy>") -> Plan:
        try:
            desired = self.ctl.desired(policy)
        except ChainError as exc:
            raise PolicyError([Problem(filename, 0, 0, format_path(exc.path), exc.message)]
                              ) from exc
        changes = {
            dpid: conn.plan(desired.get(dpid, SwitchRules()))
            for dpid, conn in self.ctl.switches.items() if conn.ready
        }
        return Plan(policy, summarize(self.ctl.policy, policy), changes, desired=desired)

    def apply(self, text: str, filename: str, author: str, dry_run: bool = False
              ) -> tuple[Plan, Revision | None]:
        """Returns the plan and the new revision (None for a dry run or no change)."""
        policy = self.load(text, filename)
        with self.ctl.lock:
            plan = self.plan(policy, filename)
            unchanged = self.ctl.policy is not None and self.ctl.policy.digest() == policy.digest()
            if dry_run:
                plan.behaviour = behaviour_changes(self.ctl, policy, plan.desired)
            if dry_run or (unchanged and not plan.flow_mods):
                return plan, None
            revision = self._transaction(
                policy, lambda: self.store.begin(text, policy, author, plan.summary))
        LOG.info("policy r%d applied by %s: %s (%d FlowMods)", revision.rev, author,
                 plan.summary, plan.flow_mods)
        return plan, revision

    def rollback(self, rev: int, author: str) -> tuple[Plan, Revision]:
        old = self.store.get(rev)
        policy = self.load(old.source, f"revision {rev}")
        with self.ctl.lock:
            plan = self.plan(policy)
            revision = self._transaction(policy, lambda: self.store.begin_rollback(rev, author))
        return plan, revision

    def recover(self) -> None:
        """A revision left pending by a controller that stopped mid-apply never became
        current: forget it. The switches are then reconciled to the current revision,
        every one the same way."""
        for rev in self.store.pending():
            LOG.warning("revision r%d was being applied when the controller stopped: "
                        "rolled back", rev)
            self.store.abandon(rev)

    def _transaction(self, policy: Policy, record: Callable[[], Revision]) -> Revision:
        """Record the revision as pending (a store that cannot write stops the apply
        before anything is sent), switch every switch to `policy`, then confirm it. Any
        failure on the way restores the previous policy, VNFs and rules."""
        try:
            pending = record()
        except StoreError as exc:
            raise ApplyFailed({"revision store": str(exc)}) from exc
        previous = self.ctl.policy
        try:
            self._switch_to(policy)
            self.store.confirm(pending.rev)
        except Exception as exc:
            if not isinstance(exc, ApplyFailed):
                LOG.exception("apply of r%d failed; restoring the previous state", pending.rev)
            self._restore(previous)
            with contextlib.suppress(StoreError):
                self.store.abandon(pending.rev)
            if isinstance(exc, ApplyFailed):
                raise
            what = "revision store" if isinstance(exc, StoreError) else "apply"
            raise ApplyFailed({what: str(exc) or type(exc).__name__}) from exc
        return pending

    def _switch_to(self, policy: Policy) -> None:
        """Place the policy's VNFs, install its rules everywhere and wait for confirmation;
        ApplyFailed says what did not (the caller restores the previous state)."""
        self.ctl.policy = policy
        try:
            self.ctl.vnfs.reconcile(policy)
        except (LookupError, OSError, RuntimeError, ValueError) as exc:
            raise ApplyFailed({"VNF placement": str(exc)}) from exc
        failures = self._push()
        if failures:
            raise ApplyFailed(failures)

    def _restore(self, previous: Policy | None) -> None:
        self.ctl.policy = previous
        try:
            self.ctl.vnfs.reconcile(previous)
        except (LookupError, OSError, RuntimeError, ValueError):
            LOG.exception("could not restore the previous VNFs")
        try:
            self._push()
        except Exception:
            LOG.exception("could not restore the previous rules; the next sync retries")

    def _push(self) -> dict[str, str]:
        """Send every ready switch its difference in ordered, barrier-confirmed rounds, so
        traffic rerouted by the change is neither dropped nor looped on the way."""
        result = self.ctl.push(wait=True)
        return {f"switch {dpid:016x}": why for dpid, why in result.failures.items()}
