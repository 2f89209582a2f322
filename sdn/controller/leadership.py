"""Who may write to the switches: one leader, elected through the store, fenced.

The rules, all checked by `tests/unit/test_leadership.py` against a fake store:

- Each controller holds one lease, renewed every tick. The leader's record is bound to
  it, so a leader that stops renewing (dead, paused, cut off) loses its record when the
  lease ends and another may be elected.
- The leader stops writing *before* the store can end its lease: it counts the lease
  from the moment it sent the last renewal, not from the reply, less a margin. A process
  paused past its lease finds its deadline gone when it wakes and writes nothing.
- The generation id (OpenFlow role requests) is the store revision that created the
  leader's record: it grows with every election, so a switch refuses a deposed leader's
  role requests as stale and its writes as coming from a slave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

LOG = logging.getLogger(__name__)
SAFETY_MARGIN = 0.3  # seconds: the leader stops this long before its lease can end


@dataclass(frozen=True)
class LeaderRecord:
    node: str
    api: str  # where its REST API answers (standbys forward writes there)
    generation: int
    lease: int = 0  # the lease the record is bound to


class ElectionStore(Protocol):
    """What an election needs from the store (etcd in production, a fake in tests)."""

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl in seconds)."""

    def keepalive(self, lease: int) -> int:
        """Renew; the ttl granted, or <= 0 if the lease has ended."""

    def leader(self) -> LeaderRecord | None: ...

    def try_lead(self, lease: int, node: str, info: dict[str, Any]) -> int | None:
        """Become leader if nobody is: the generation, else None."""

    def resign(self, lease: int, generation: int) -> None: ...


class Leadership:
    """Campaigns, renews and steps down; `tick()` is called every `interval` seconds.

    Transitions are reported through `on_change(generation)`: a positive generation when
    elected, 0 when this controller stops leading."""

    def __init__(self, store: ElectionStore, node: str, info: dict[str, Any], ttl: int,
                 on_change: Callable[[int], None] = lambda _gen: None,
                 clock: Callable[[], float] = time.monotonic,
                 may_lead: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.node = node
        self.info = info
        self.ttl = ttl
        self.on_change = on_change
        self.clock = clock
        self.may_lead = may_lead  # false: let a member that sees more switches lead
        self.lease: int | None = None
        self.deadline = 0.0  # leading only before this (monotonic clock)
        self.generation = 0  # > 0 while this controller believes it leads
        self.known_leader: LeaderRecord | None = None
        self.changes = 0

    @property
    def interval(self) -> float:
        return max(0.1, self.ttl / 4)

    def leading(self) -> bool:
        """True while this controller may write. Checked before every write, so it
        notices a lost lease even if no tick ran (the process was paused)."""
        if self.generation and self.clock() >= self.deadline:
            self.step_down("lease ran out before it was renewed")
        return self.generation > 0

    def tick(self) -> None:
        """Renew the lease (or take a new one), then lead, keep leading, or follow."""
        sent = self.clock()
        if self.lease is not None:
            granted = self.store.keepalive(self.lease)
            if granted <= 0:
                self.lease = None
                self.step_down("lease ended")
        if self.lease is None:
            sent = self.clock()
            self.lease, granted = self.store.grant(self.ttl)
        self.deadline = sent + granted - SAFETY_MARGIN
        if not self.leading():  # a tick that came too late ends leadership here
            current = self.store.leader()
            self.known_leader = current
            if current is None and self.may_lead():
                generation = self.store.try_lead(self.lease, self.node, self.info)
                if generation:
                    self._elected(generation)
            elif current is not None and current.lease == self.lease:
                # Stepped down while the store did not answer (an etcd election), but the
                # lease outlived it: nobody else can have led since; lead on, same id.
                self._elected(current.generation)
            return
        current = self.store.leader()
        if current is None or current.generation != self.generation:
            self.step_down("the store no longer names this controller leader")
        else:
            self.known_leader = current

    def lost_store(self, why: str) -> None:
        """The store did not answer a tick: keep leading until the deadline (a leader
        elected later must wait for this lease to end anyway)."""
        LOG.warning("store unreachable (%s); %s", why,
                    f"leading for {max(0.0, self.deadline - self.clock()):.1f}s more"
                    if self.generation else "following")

    def fenced(self, why: str) -> None:
        """A switch refused this controller as master: another one leads."""
        if self.generation:
            self.step_down(f"a switch refused it: {why}")

    def step_down(self, why: str) -> None:
        if not self.generation:
            return
        generation, self.generation = self.generation, 0
        LOG.warning("no longer leader (generation %d): %s", generation, why)
        self.changes += 1
        self.on_change(0)
        if self.lease is not None and self.clock() < self.deadline:
            try:  # give the record up now rather than when the lease ends
                self.store.resign(self.lease, generation)
            except Exception as exc:
                LOG.warning("could not resign: %s", exc)

    def _elected(self, generation: int) -> None:
        self.generation = generation
        self.known_leader = LeaderRecord(self.node, str(self.info.get("api", "")), generation,
                                         self.lease or 0)
        self.changes += 1
        LOG.info("elected leader, generation %d", generation)
        self.on_change(generation)
