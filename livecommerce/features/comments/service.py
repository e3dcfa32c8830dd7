"""Bullet comments: the checks on sending, and the way a comment crosses the cluster.

Sending: the text is trimmed and length-checked, matched against the banned words (global
and the room's, on normalised text), then one atomic engine step checks mute, slow mode,
the per-user rate limit and the request_id (``engine/lua/comment_gate.lua``).

Crossing: comments sent on this node are gathered per room for ``publish_ms`` and cross
the engine as one ``comment:batch`` broadcast (one seq, one history entry, one Redis
publish for all of them). The sender's ack waits for that publish, so "ok" means every
node has it. One more step then records the batch for join snapshots, the durable SQL log
and the keyword counts. Each node re-batches what it receives per viewer per tick
(``batching.py``): a comment crosses Redis once, whatever the node count.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.comments.events import CommentEvent
from livecommerce.features.comments.keywords import keywords
from livecommerce.features.comments.text import BannedWords, trim_comment
from livecommerce.features.rooms.service import RoomInfo, RoomService
from livecommerce.persistence.models import new_id
from livecommerce.settings import CommentSettings

log = structlog.get_logger(__name__)

COMMENT_LOG = "comments"
IDEMPOTENCY_TTL_MS = 3600 * 1000
KEYWORDS_PER_MINUTE = 100
#: ``hook(room_id, user, text, open_draw_id)`` for every accepted comment.
CommentHook = Callable[[str, Principal, str, str | None], Awaitable[None]]
#: ``hook(room_id, count)`` once per published batch (staff metrics' comment counter).
BatchHook = Callable[[str, int], Awaitable[None]]


def settings_key(room_id: str) -> str:
    return keys.room_key(room_id, "comments", "settings")


def mute_key(room_id: str, user_id: str) -> str:
    return keys.room_key(room_id, "mute", user_id)


def recent_key(room_id: str) -> str:
    return keys.room_key(room_id, "comments", "recent")


def log_key(room_id: str) -> str:
    return keys.room_key(room_id, "log", COMMENT_LOG)


def keyword_key(room_id: str, minute: int) -> str:
    return keys.room_key(room_id, "kw", str(minute))


@dataclass(frozen=True, slots=True)
class RoomRules:
    """A room's moderation settings as this node last read them."""

    slow_ms: int
    words: tuple[str, ...]
    banned: BannedWords


def _count_keywords(texts: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(keywords(text))
    return counts


def author_role(user: Principal, room: RoomInfo) -> str:
    """The role shown on a comment: "host" only in the host's own room."""
    if user.id == room.host_id:
        return "host"
    return "viewer" if user.role == "host" else str(user.role)


class CommentService:
    def __init__(self, engine: Engine, rooms: RoomService, settings: CommentSettings) -> None:
        self.engine = engine
        self.rooms = rooms
        self.settings = settings
        self.global_words = BannedWords(settings.banned_words)
        self._rules: TTLCache[str, RoomRules] = TTLCache(1.0)
        self._outgoing: dict[str, list[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
        self._publishers: dict[str, asyncio.Task[None]] = {}
        self._logged_rooms: set[str] = set()
        self._hooks: list[CommentHook] = []
        self.batch_hooks: list[BatchHook] = []
        rooms.add_snapshot_part(self._snapshot)

    def add_hook(self, hook: CommentHook) -> None:
        """Call ``hook(room_id, user, text, open_draw_id)`` for every accepted comment
        (keyword draw entries; the gate step reads the room's open draw on the way).
        A failing hook is logged; the comment stands."""
        self._hooks.append(hook)

    # -- sending ------------------------------------------------------------------------

    async def send(self, user: Principal, room_id: str, text: str, request_id: str | None) -> str:
        """Check and publish one comment; returns its id once every node has it."""
        comment_id, published = await self.submit(user, room_id, text, request_id)
        await published
        return comment_id

    async def submit(
        self, user: Principal, room_id: str, text: str, request_id: str | None
    ) -> tuple[str, asyncio.Future[None]]:
        """Check a comment and queue it for publishing; returns its id and a future done
        when it is published. Comments queued one after another are published in that
        order (a caller serialising ``submit`` keeps a sender's order without waiting for
        each publish)."""
        room = await self.rooms.get(room_id)
        if room.status != "live":
            raise errors.RoomNotLive(status=room.status)
        try:
            text = trim_comment(text, self.settings.max_len)
        except ValueError as exc:
            raise errors.Invalid(f"text: {exc}", fields={"text": str(exc)}) from None
        rules = await self.rules(room_id)
        word = self.global_words.find(text) or rules.banned.find(text)
        if word is not None:
            raise errors.Blocked("that comment contains a blocked word")
        role = author_role(user, room)
        comment_id = new_id("c")
        verdict = await self._gate(user, room_id, comment_id, request_id, role != "viewer")
        if "dup" in verdict:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return str(verdict["dup"]), done
        item = {
            "id": comment_id,
            "user": {"id": user.id, "name": user.name, "role": role},
            "text": text,
            "at": now_ms(),
        }
        for hook in self._hooks:
            try:
                await hook(room_id, user, text, verdict.get("draw"))
            except Exception:
                log.exception("comment_hook_failed", room_id=room_id)
        return comment_id, self._enqueue(room_id, item)

    async def _gate(
        self, user: Principal, room_id: str, comment_id: str, request_id: str | None, exempt: bool
    ) -> dict[str, Any]:
        idem = keys.idempotency(room_id, user.id, "comment", request_id or "-")
        step_keys = [
            idem,
            mute_key(room_id, user.id),
            settings_key(room_id),
            keys.room_key(room_id, "slow", user.id),
            keys.room_key(room_id, "rl", "comment", user.id),
            keys.room_key(room_id, "draw", "current"),
        ]
        s = self.settings
        args = [
            comment_id,
            IDEMPOTENCY_TTL_MS,
            "1" if exempt else "0",
            s.rate_per_s,
            s.burst,
            "1" if request_id else "0",
        ]
        verdict: dict[str, Any] = await self.engine.atomic("comment_gate", step_keys, args)
        error = verdict.get("error")
        if error == "muted":
            raise errors.Muted(until=verdict["until"])
        if error == "rate_limited":
            extra = {k: v for k, v in verdict.items() if k in ("retry_after_ms", "reason")}
            message = "slow mode is on" if extra.get("reason") == "slow_mode" else None
            raise errors.RateLimited(message, **extra)
        return verdict

    # -- crossing the cluster -----------------------------------------------------------

    def queued(self) -> int:
        """Comments accepted on this node and waiting for their batch's publish (metrics)."""
        return sum(len(batch) for batch in self._outgoing.values())

    def _enqueue(self, room_id: str, item: dict[str, Any]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outgoing.setdefault(room_id, []).append((item, done))
        task = self._publishers.get(room_id)
        if task is None or task.done():
            # A context of its own: the room's publisher outlives the sender's event, whose
            # ids (sid, request_id) would otherwise be on every line it logs.
            publisher = self._publisher(room_id)
            task = asyncio.create_task(publisher, context=contextvars.Context())
            self._publishers[room_id] = task
        return done

    async def _publisher(self, room_id: str) -> None:
        # One task per room with comments waiting: batches leave in order, one at a time.
        while self._outgoing.get(room_id):
            await asyncio.sleep(self.settings.publish_ms / 1000)
            batch = self._outgoing.pop(room_id, [])
            items = [item for item, _ in batch]
            # Segmenting (jieba) runs in a worker thread while the batch is published.
            counting = asyncio.ensure_future(
                asyncio.to_thread(_count_keywords, [item["text"] for item in items])
            )
            try:
                await self.engine.publish(room_id, CommentEvent.BATCH, {"items": items})
            except Exception as exc:
                failure = exc if isinstance(exc, errors.DomainError) else errors.Unavailable()
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
                continue
            # Acks after the records: "ok" means the comment is also in the recent list
            # (so it can be moderated at once) and on its way to SQL.
            await self._record(room_id, items, await counting)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            for hook in self.batch_hooks:  # after the acks: off the senders' path
                try:
                    await hook(room_id, len(items))
                except Exception as exc:
                    log.warning("comment_batch_hook_failed", room_id=room_id, error=str(exc))

    async def _record(
        self, room_id: str, items: list[dict[str, Any]], counts: Counter[str]
    ) -> None:
        try:
            if room_id not in self._logged_rooms:
                await self.engine.log_register(COMMENT_LOG, log_key(room_id))
                self._logged_rooms.add(room_id)
            minute = int(time.time() // 60)
            step_keys = [recent_key(room_id), log_key(room_id), keyword_key(room_id, minute)]
            ttl_ms = (self.settings.keyword_window_min + 1) * 60_000
            args: list[Any] = [
                self.settings.recent,
                ttl_ms,
                jsonutil.dumps({"room_id": room_id, "items": items}),
                len(items),
                *(jsonutil.dumps(item) for item in items),
            ]
            for word, count in counts.items():
                args += [word, count]
            await self.engine.atomic("comment_record", step_keys, args)
        except Exception as exc:  # delivered already; only the records are behind
            log.warning("comment_record_failed", room_id=room_id, error=str(exc))

    # -- reading ------------------------------------------------------------------------

    async def rules(self, room_id: str) -> RoomRules:
        async def load() -> RoomRules:
            raw = await self.engine.atomic("comment_settings", [settings_key(room_id)], ["get"])
            words = tuple(raw["words"])
            return RoomRules(int(raw["slow_ms"]), words, BannedWords(words))

        return await self._rules.get(room_id, load)

    def forget_rules(self, room_id: str) -> None:
        self._rules.invalidate(room_id)

    async def recent(self, room_id: str) -> list[dict[str, Any]]:
        if self.settings.recent == 0:
            return []
        found = await self.engine.atomic(
            "comment_recent", [recent_key(room_id)], [self.settings.recent]
        )
        return list(found or [])

    async def muted_until(self, room_id: str, user_id: str) -> int:
        raw = await self.engine.atomic("comment_mute", [mute_key(room_id, user_id)], [0, -1])
        until = int(raw["until"])
        return until if until > now_ms() else 0

    async def keywords(self, room_id: str, n: int = 30) -> list[list[Any]]:
        """The room's top words over the last ``keyword_window_min`` minutes."""
        minute = int(time.time() // 60)
        window = range(minute - self.settings.keyword_window_min + 1, minute + 1)
        step_keys = [keyword_key(room_id, m) for m in window]
        sums = await self.engine.atomic("keyword_top", step_keys, [KEYWORDS_PER_MINUTE]) or {}
        top = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [[word, int(count)] for word, count in top]

    async def _snapshot(self, room_id: str, me: Principal | None) -> dict[str, Any]:
        rules = await self.rules(room_id)
        part: dict[str, Any] = {
            "recent_comments": await self.recent(room_id),
            "slow_mode_s": rules.slow_ms // 1000,
        }
        if me is not None:
            until = await self.muted_until(room_id, me.id)
            part["me"] = {"muted": until > 0, "muted_until": until or None}
        return part

    async def close(self) -> None:
        tasks = [t for t in self._publishers.values() if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
