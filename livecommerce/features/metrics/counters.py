"""Cluster-wide counters of a room that the dashboard reads.

Each is one engine key in the room's slot, bumped where the thing happens: comments once
per published batch (not per comment), paid orders once by the node that saw the payment
succeed. Likes are the like service's own total. Readers on any node see the same sums.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from livecommerce.engine import Engine, keys
from livecommerce.features.comments.likes import likes_key


def metric_key(room_id: str, *parts: str) -> str:
    return keys.room_key(room_id, "m", *parts)


@dataclass(frozen=True, slots=True)
class Totals:
    comments: int = 0
    likes: int = 0
    orders: int = 0
    gmv_cents: int = 0
    buyers: int = 0

    def minus(self, earlier: Totals) -> Totals:
        """Growth since ``earlier``; never negative (a total re-seeded or lost)."""
        now, then = asdict(self), asdict(earlier)
        return Totals(**{name: max(0, now[name] - then[name]) for name in now})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Counters:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def comments_published(self, room_id: str, count: int) -> None:
        await self.engine.incr(metric_key(room_id, "comments"), count)

    async def paid(self, order: dict[str, Any]) -> None:
        """A paid flash-sale order or a confirmed group-buy order (each reported once)."""
        # On the buyer's pay path: the four independent updates go out together (one round
        # trip of latency, not four).
        room_id, e = order["room_id"], self.engine
        units = int(order.get("qty") or 1)
        await asyncio.gather(
            e.incr(metric_key(room_id, "orders")),
            e.incr(metric_key(room_id, "gmv"), int(order["amount_cents"])),
            e.set_add(metric_key(room_id, "buyers"), order["user_id"]),
            e.zincr(metric_key(room_id, "units"), order["product_id"], units),
        )

    async def totals(self, room_id: str) -> Totals:
        get = self.engine.get_int
        comments, likes, orders, gmv, buyers = await asyncio.gather(
            get(metric_key(room_id, "comments")),
            get(likes_key(room_id)),
            get(metric_key(room_id, "orders")),
            get(metric_key(room_id, "gmv")),
            self.engine.set_card(metric_key(room_id, "buyers")),
        )
        return Totals(comments, likes, orders, gmv, buyers)

    async def units(self, room_id: str) -> dict[str, int]:
        """Units paid per product since the room began."""
        return {p: int(n) for p, n in await self.engine.ztop(metric_key(room_id, "units"), 500)}

    async def peak(self, room_id: str, online: int) -> int:
        """The room's highest online count seen so far (sampled at ticks and rollups);
        two nodes racing may both write, and both write a value they saw."""
        key = metric_key(room_id, "peak")
        peak = int(await self.engine.kv_get(key) or 0)
        if online > peak:
            await self.engine.kv_set(key, str(online))
            return online
        return peak
