""" "N people just bought X": paid orders gathered per room and announced in batches.

Each node counts the payments it saw; every half second a node with something to tell
tries to take the room's turn (a short-lived engine key, ``notice_ms`` long). The winner
broadcasts its counts as one ``sales:notice``; the others keep theirs for a later turn.
So a room gets at most one notice per ``notice_ms`` cluster-wide, and none without sales.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import structlog

from livecommerce import errors
from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.metrics.counters import metric_key
from livecommerce.features.metrics.events import MetricsEvent
from livecommerce.features.rooms.service import RoomService

log = structlog.get_logger(__name__)

ROUND_S = 0.5


class SalesNotices:
    def __init__(self, engine: Engine, rooms: RoomService, notice_ms: int) -> None:
        self.engine = engine
        self.rooms = rooms
        self.notice_ms = notice_ms
        self._pending: dict[str, Counter[str]] = {}  # room -> product -> paid orders
        self._task: asyncio.Task[None] | None = None

    def add(self, order: dict[str, Any]) -> None:
        self._pending.setdefault(order["room_id"], Counter())[order["product_id"]] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds())

    async def _rounds(self) -> None:
        while self._pending:
            for room_id in list(self._pending):
                try:
                    await self._try_announce(room_id)
                except Exception as exc:  # kept; the next round tries again
                    log.warning("sales_notice_failed", room_id=room_id, error=str(exc))
            await asyncio.sleep(ROUND_S)

    async def _try_announce(self, room_id: str) -> None:
        turn = metric_key(room_id, "notice", "turn")
        if not await self.engine.kv_set_nx(turn, self.engine.node_id, self.notice_ms):
            return
        counts = self._pending.pop(room_id, Counter())
        if not counts:
            return
        items = [
            {"product_id": pid, "title": await self._title(room_id, pid), "count": n}
            for pid, n in counts.most_common()
        ]
        try:
            body = {"items": items, "at": now_ms()}
            await self.engine.publish(room_id, MetricsEvent.NOTICE, body, history=False)
        except BaseException:
            self._pending.setdefault(room_id, Counter()).update(counts)
            raise

    async def _title(self, room_id: str, product_id: str) -> str:
        try:
            return str((await self.rooms.product(room_id, product_id))["title"])
        except errors.NotFound:
            return ""

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
