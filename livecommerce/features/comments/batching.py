"""Per-room delivery ticks: what each viewer of a room on this node is shown per tick.

Every node receives each room's comments once (the engine's per-room channel) and keeps
them here until the room's next tick. A tick makes one shared list for every viewer:

* comments of the host and staff are always in it (the priority lane);
* the others are merged by identical text (``count``) and, when there are more than the
  viewer budget allows (``viewer_rate`` per second, so ~3 per 100 ms tick), sampled
  uniformly; ``dropped`` says how many comments were left out;
* a viewer's own comments are never left out: the senders among this node's viewers get
  the shared list plus their own (``own``), everybody else gets the shared frame as is.

Pure logic, no sockets: the transport turns a :class:`Tick` into frames.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Item = dict[str, Any]
PRIORITY_ROLES = frozenset({"host", "staff", "admin"})


@dataclass(slots=True)
class Tick:
    seq: int
    items: list[Item]  # shared by every viewer, in send order
    dropped: int  # comments left out of ``items``
    received: int  # comments that arrived for this tick
    own: dict[str, list[Item]] = field(default_factory=dict)  # sender -> items not shown
    dropped_ids: set[str] = field(default_factory=set)

    def payload_for(self, room_id: str, extra: list[Item] | None = None) -> dict[str, Any]:
        items = self.items if not extra else sorted([*self.items, *extra], key=_at)
        out: dict[str, Any] = {"room_id": room_id, "seq": self.seq, "items": items}
        dropped = self.dropped - sum(1 for item in extra or () if item["id"] in self.dropped_ids)
        if dropped > 0:
            out["dropped"] = dropped
        return out


@dataclass(slots=True)
class _Pending:
    seq: int = 0
    items: list[Item] = field(default_factory=list)


class Batcher:
    def __init__(
        self,
        viewer_rate: int,
        tick_s: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.viewer_rate = viewer_rate
        self.tick_s = tick_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        #: room -> (budget carried over, time of its last tick)
        self._budget: dict[str, tuple[float, float]] = {}

    def add(self, room_id: str, seq: int, items: list[Item]) -> None:
        pending = self._pending.get(room_id)
        if pending is None:
            pending = self._pending[room_id] = _Pending()
        pending.seq = max(pending.seq, seq)
        pending.items.extend(items)

    def has_pending(self, room_id: str) -> bool:
        return room_id in self._pending

    def queued(self) -> int:
        """Comments waiting for their room's next tick (metrics)."""
        return sum(len(pending.items) for pending in self._pending.values())

    def pending_rooms(self) -> list[str]:
        """Rooms holding comments for their next tick."""
        return list(self._pending)

    def forget(self, room_id: str) -> None:
        self._pending.pop(room_id, None)
        self._budget.pop(room_id, None)

    def take(self, room_id: str) -> Tick | None:
        pending = self._pending.pop(room_id, None)
        if pending is None:
            return None
        budget = self._spend_budget(room_id)
        tick = plan(pending.seq, pending.items, budget, self._rng)
        if len(tick.items) < budget:
            # Unused budget stays for the next take (capped as always): a tick's later
            # segment (comments after a broadcast, transport/socket.py) gets what is left.
            carry, at = self._budget[room_id]
            self._budget[room_id] = (carry + budget - len(tick.items), at)
        return tick

    def _spend_budget(self, room_id: str) -> int:
        # "At most viewer_rate per second" with ticks that may run late: the budget grows
        # with the time since the last tick, capped at two ticks' worth (carry included;
        # at least one comment, or a rate under one per tick would never show any): a
        # tick the busy loop ran late still shows its viewers what the time accrued,
        # while a quiet spell does not turn into a burst.
        now = self._clock()
        carry, last = self._budget.get(room_id, (0.0, now - self.tick_s))
        per_tick = self.viewer_rate * self.tick_s
        budget = min(carry + self.viewer_rate * (now - last), max(2 * per_tick, 1.0))
        whole = int(budget)
        self._budget[room_id] = (budget - whole, now)
        return whole


def plan(seq: int, items: list[Item], budget: int, rng: random.Random) -> Tick:
    """Choose what everyone sees this tick (see the module docstring)."""
    priority = [item for item in items if item["user"]["role"] in PRIORITY_ROLES]
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item["user"]["role"] not in PRIORITY_ROLES:
            groups.setdefault(item["text"], []).append(item)
    room = max(0, budget - len(priority))
    chosen = list(groups.values())
    if len(chosen) > room:
        picked = set(rng.sample(range(len(chosen)), room))
        chosen = [group for i, group in enumerate(chosen) if i in picked]
    shown = [*priority, *(_merged(group) for group in chosen)]
    shown.sort(key=_at)
    shown_ids = {item["id"] for item in shown}
    merged_ids = {item["id"] for group in chosen for item in group}
    tick = Tick(seq, shown, len(items) - len(priority) - len(merged_ids), len(items))
    for item in items:
        if item["id"] not in shown_ids and item["user"]["role"] not in PRIORITY_ROLES:
            tick.own.setdefault(item["user"]["id"], []).append(item)
            if item["id"] not in merged_ids:
                tick.dropped_ids.add(item["id"])
    return tick


def _merged(group: list[Item]) -> Item:
    if len(group) == 1:
        return group[0]
    return {**group[0], "count": len(group)}


def _at(item: Item) -> int:
    return int(item["at"])
