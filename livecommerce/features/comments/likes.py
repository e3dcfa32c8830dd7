"""Likes: client-aggregated taps, summed per node, totals broadcast a few times a second.

A hot room gets thousands of taps a second; none of them is worth a round trip of its
own. ``like:send`` is checked (room live, a node-local rate limit) and added to this
node's pending count; every ``broadcast_ms`` the node adds its pending counts to the
engine's room total (one INCRBY per room) and, if no node has done so in the last
``broadcast_ms`` (a short-lived engine key decides), broadcasts ``like:total``. A node
that lost that race keeps its room marked and tries again next round, so the last total
always goes out. SQL gets the same deltas every few seconds, so totals survive a restart
of the in-process engine, or a Redis that lost its data (the total is re-seeded from SQL
when the engine has none). A node killed mid-round loses at most its last round of taps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import structlog

from livecommerce import errors
from livecommerce._utils import LocalBuckets
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.features.comments.events import CommentEvent
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.social import LikeTotals
from livecommerce.settings import LikeSettings

log = structlog.get_logger(__name__)

SQL_EVERY_ROUNDS = 8
LikeHook = Callable[[str, Mapping[str, int]], Awaitable[None]]


def likes_key(room_id: str) -> str:
    return keys.room_key(room_id, "likes")


class LikeService:
    def __init__(
        self, engine: Engine, rooms: RoomService, totals: LikeTotals, settings: LikeSettings
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.totals = totals
        self.settings = settings
        self._buckets = LocalBuckets(settings.rate_per_s, settings.burst)
        self._pending: dict[str, Counter[str]] = {}  # room -> user -> taps not in the engine
        self._hooks: list[LikeHook] = []
        self._unsaved: Counter[str] = Counter()  # room -> taps not yet in SQL
        self._unannounced: set[str] = set()
        self._seeded: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        rooms.add_snapshot_part(self._snapshot)

    async def send(self, user: Principal, room_id: str, count: int) -> None:
        room = await self.rooms.get(room_id)
        if room.status != "live":
            raise errors.RoomNotLive(status=room.status)
        wait = self._buckets.take(user.id)
        if wait:
            raise errors.RateLimited(retry_after_ms=wait)
        self._pending.setdefault(room_id, Counter())[user.id] += count
        if self._task is None or self._task.done():
            # Its own log context: the rounds outlive the like:send that started them.
            self._task = asyncio.create_task(self._rounds(), context=contextvars.Context())

    def queued(self) -> int:
        """Taps held only by this node: not yet in the engine, or not yet in SQL (metrics)."""
        pending = sum(sum(taps.values()) for taps in self._pending.values())
        return pending + sum(self._unsaved.values())

    def add_hook(self, hook: LikeHook) -> None:
        """``hook(room_id, {user_id: taps})`` for every round of taps (PK scores)."""
        self._hooks.append(hook)

    async def total(self, room_id: str) -> int:
        await self._seed(room_id)
        return await self.engine.get_int(likes_key(room_id))

    async def _seed(self, room_id: str) -> None:
        # The engine's total starts from SQL's when it has none (fresh in-process engine).
        if room_id in self._seeded:
            return
        if await self.engine.kv_get(likes_key(room_id)) is None:
            await self.engine.kv_set_nx(likes_key(room_id), str(await self.totals.get(room_id)))
        self._seeded.add(room_id)

    async def _rounds(self) -> None:
        rounds = 0
        while self._pending or self._unannounced or self._unsaved:
            await asyncio.sleep(self.settings.broadcast_ms / 1000)
            rounds += 1
            await self.flush(save=rounds % SQL_EVERY_ROUNDS == 0)

    async def flush(self, *, save: bool = True) -> None:
        """Move pending taps into the engine, announce totals, and (``save``) into SQL."""
        pending, self._pending = self._pending, {}
        for room_id, taps in pending.items():
            delta = sum(taps.values())
            try:
                await self._seed(room_id)
                await self.engine.incr(likes_key(room_id), delta)
            except errors.DomainError as exc:
                self._pending.setdefault(room_id, Counter()).update(taps)  # engine down: keep
                log.warning("likes_deferred", room_id=room_id, error=exc.code)
                continue
            for hook in self._hooks:
                try:
                    await hook(room_id, taps)
                except Exception:
                    log.exception("like_hook_failed", room_id=room_id)
            self._unsaved[room_id] += delta
            self._unannounced.add(room_id)
        for room_id in list(self._unannounced):
            with contextlib.suppress(errors.DomainError):
                if await self._announce(room_id):
                    self._unannounced.discard(room_id)
        if save and self._unsaved:
            unsaved, self._unsaved = self._unsaved, Counter()
            try:
                await self.totals.add(unsaved)
            except Exception as exc:
                self._unsaved.update(unsaved)
                log.warning("likes_save_deferred", error=str(exc))

    async def _announce(self, room_id: str) -> bool:
        turn = keys.room_key(room_id, "likes", "turn")
        if not await self.engine.kv_set_nx(turn, self.engine.node_id, self.settings.broadcast_ms):
            return False
        total = await self.engine.get_int(likes_key(room_id))
        await self.engine.publish_if_changed(room_id, CommentEvent.LIKES, "total", total)
        return True

    async def _snapshot(self, room_id: str, _me: Principal | None) -> dict[str, int]:
        return {"likes": await self.total(room_id)}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush(save=True)
