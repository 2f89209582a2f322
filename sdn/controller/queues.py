"""Egress queues onto the switches' ports: the plan (sdn.compile.queues) goes to a helper
process that talks netlink (sdn.controller.tc_helper), because netlink does not work under
eventlet."""

from __future__ import annotations

import json

from common.helper import HelperError, run_helper
from sdn.compile.queues import QueuePlan

HELPER_TIMEOUT = 60.0


class QueueError(RuntimeError):
    """The tc helper process failed; the message is its last line of error output."""


def apply_queues(plan: QueuePlan, timeout: float = HELPER_TIMEOUT) -> dict:
    """Apply `plan` in the helper process (netlink does not work in the eventlet-patched
    controller). Idempotent: ports already as planned are left alone. Returns the
    helper's report: {"changed", "unchanged", "removed", "missing": [port names]}."""
    try:
        return json.loads(run_helper("sdn.controller.tc_helper", "apply", plan.to_json(), timeout))
    except HelperError as exc:
        raise QueueError(f"tc helper failed: {exc}") from exc
