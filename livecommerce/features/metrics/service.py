"""Staff metrics: what a dashboard sees every second, and the per-period history.

Ticks are computed from cluster-wide counters (``counters.py``) on the node that holds the
subscriber, so every staff member sees the same totals whichever node they are on. Rates
are the growth of those totals since this node's previous tick of the room; nothing is
computed for a room nobody watches on this node.

Rollups: once per period (a minute) every node offers to roll up each room it knows to be
active (watched, with local members, or with sales or comments here); one wins the
period's election (``kv_set_nx``) and writes the room's row: the growth of the totals since
the previous row (kept in the engine), the online count and the units sold per product.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from livecommerce import jsonutil
from livecommerce.auth import Principal
from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.comments.service import CommentService
from livecommerce.features.metrics.counters import Counters, Totals, metric_key
from livecommerce.features.metrics.notices import SalesNotices
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.metrics import MetricsHistory
from livecommerce.settings import MetricsSettings

log = structlog.get_logger(__name__)

#: A feature's part of the room snapshot (flash sales, group buys, PK).
Part = Callable[[str, Principal | None], Awaitable[dict[str, Any]]]
KEYWORDS = 30
HISTORY_MAX_ROWS = 1440


class MetricsService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        comments: CommentService,
        parts: Sequence[Part],
        history: MetricsHistory,
        settings: MetricsSettings,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.comments = comments
        self.parts = list(parts)
        self.history = history
        self.settings = settings
        self.counters = Counters(engine)
        self.notices = SalesNotices(engine, rooms, settings.notice_ms)
        self._prev: dict[str, Totals] = {}  # watched room -> totals at this node's last tick
        self._watched: set[str] = set()
        self._active: set[str] = set()  # rooms with sales or comments here this period
        self._task: asyncio.Task[None] | None = None

    # -- hooks (wired in app.py) ----------------------------------------------------------

    async def on_paid(self, order: dict[str, Any]) -> None:
        await self.counters.paid(order)
        self._active.add(order["room_id"])
        self.notices.add(order)

    async def on_comments(self, room_id: str, count: int) -> None:
        await self.counters.comments_published(room_id, count)
        self._active.add(room_id)

    # -- ticks ----------------------------------------------------------------------------

    def watch(self, room_id: str) -> None:
        self._watched.add(room_id)

    def forget(self, room_id: str) -> None:
        self._watched.discard(room_id)
        self._prev.pop(room_id, None)

    async def tick(self, room_id: str) -> dict[str, Any]:
        """The room's numbers now. Rates are growth since this node's previous tick of the
        room (0 on the first one)."""
        online = await self.engine.online(room_id)
        peak = await self.counters.peak(room_id, online)
        totals = await self.counters.totals(room_id)
        rate = totals.minus(self._prev.get(room_id, totals))
        if room_id in self._watched:
            self._prev[room_id] = totals
        live: dict[str, Any] = {"flashsales": [], "groupbuys": [], "pk": None}
        for part in self.parts:
            live.update(await part(room_id, None))
        units = await self.counters.units(room_id)
        return {
            "room_id": room_id,
            "at": now_ms(),
            "online": online,
            "peak_online": peak,
            "comments_per_s": rate.comments,
            "likes_per_s": rate.likes,
            "orders_per_s": rate.orders,
            "gmv_cents": totals.gmv_cents,
            "gmv_cents_per_s": rate.gmv_cents,
            "conversion": conversion(totals.buyers, peak),
            "buyers": totals.buyers,
            "totals": totals.to_dict(),
            "keywords": await self.comments.keywords(room_id, KEYWORDS),
            "flashsales": live["flashsales"],
            "groupbuys": live["groupbuys"],
            "pk": live.get("pk"),
            "products": [{"product_id": p, "units": n} for p, n in units.items()],
        }

    # -- rollups --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._rollup_loop(), name="metrics-rollups")

    def period(self, at_s: float | None = None) -> int:
        return int((time.time() if at_s is None else at_s) // self.settings.rollup_s)

    async def _rollup_loop(self) -> None:
        done = self.period()
        while True:
            await asyncio.sleep(min(1.0, self.settings.rollup_s / 4))
            current = self.period()
            if current <= done:
                continue
            rooms = self._watched | set(self.engine.local_rooms()) | self._active
            self._active = set()
            done = current
            for room_id in rooms:
                try:
                    await self.rollup(room_id, current - 1)
                except Exception as exc:
                    log.warning("metrics_rollup_failed", room_id=room_id, error=str(exc))

    async def rollup(self, room_id: str, period: int) -> bool:
        """Write the room's row for ``period`` if this node wins its election."""
        ttl_ms = max(self.settings.rollup_s * 3, 10) * 1000
        turn = metric_key(room_id, "rollup", str(period))
        if not await self.engine.kv_set_nx(turn, self.engine.node_id, ttl_ms):
            return False
        last_key = metric_key(room_id, "rollup", "last")
        raw = await self.engine.kv_get(last_key)
        last = jsonutil.loads(raw) if raw else {"totals": {}, "units": {}}
        totals = await self.counters.totals(room_id)
        units = await self.counters.units(room_id)
        grown = totals.minus(Totals(**last["totals"]))
        sold = {p: n - last["units"].get(p, 0) for p, n in units.items()}
        online = await self.engine.online(room_id)
        row = {
            "period_s": self.settings.rollup_s,
            "online": online,
            "peak_online": await self.counters.peak(room_id, online),
            "comments": grown.comments,
            "likes": grown.likes,
            "orders": grown.orders,
            "gmv_cents": grown.gmv_cents,
            "buyers": totals.buyers,
            "products": {p: n for p, n in sold.items() if n > 0},
        }
        await self.history.write(room_id, period * self.settings.rollup_s * 1000, row)
        state = {"totals": totals.to_dict(), "units": units}
        await self.engine.kv_set(last_key, jsonutil.dumps(state))
        return True

    async def recent_history(self, room_id: str, minutes: int) -> dict[str, Any]:
        since = now_ms() - minutes * 60_000
        rows = await self.history.since(room_id, since, HISTORY_MAX_ROWS)
        return {
            "room_id": room_id,
            "period_s": self.settings.rollup_s,
            "rows": [r.to_public() for r in rows],
        }

    async def close(self) -> None:
        await self.notices.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def conversion(buyers: int, peak_online: int) -> float:
    """Distinct buyers of the room ÷ its peak online count (0 before anyone was online)."""
    return round(buyers / peak_online, 4) if peak_online > 0 else 0.0
