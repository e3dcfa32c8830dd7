"""The rules of moderation. Who may moderate (the room's host or staff) is checked by the
transport before any of this runs; this module decides what a moderation action does and
records every one in the audit table (who, when, what, why).

Mutes and slow mode live in the engine beside the room's other keys, where the comment
gate reads them atomically: a mute set on one node holds on every node at once.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce.auth import Principal
from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.comments.events import CommentEvent
from livecommerce.features.comments.service import (
    CommentService,
    log_key,
    mute_key,
    recent_key,
    settings_key,
)
from livecommerce.features.comments.text import clean_word
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.repositories import Users
from livecommerce.persistence.social import Audit, Comments

log = structlog.get_logger(__name__)


class ModerationService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        comments: CommentService,
        users: Users,
        audit: Audit,
        stored: Comments,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.comments = comments
        self.users = users
        self.audit = audit
        self.stored = stored

    async def mute(
        self, actor: Principal, room_id: str, user_id: str, duration_s: int, reason: str | None
    ) -> dict[str, Any]:
        room = await self.rooms.get(room_id)
        target = await self.users.get(user_id)
        if target is None:
            raise errors.NotFound("no such user", user_id=user_id)
        if target.id == room.host_id or target.role in ("staff", "admin"):
            raise errors.Forbidden("the host and staff cannot be muted")
        until = now_ms() + duration_s * 1000
        await self.engine.atomic(
            "comment_mute", [mute_key(room_id, user_id)], [until, duration_s * 1000]
        )
        await self._record(actor, room_id, "mute", reason, user=user_id, duration_s=duration_s)
        await self.engine.send_to_user(
            user_id, CommentEvent.MUTED, {"room_id": room_id, "until": until}
        )
        return {"user_id": user_id, "until": until}

    async def unmute(
        self, actor: Principal, room_id: str, user_id: str, reason: str | None
    ) -> dict[str, Any]:
        await self.rooms.get(room_id)
        await self.engine.atomic("comment_mute", [mute_key(room_id, user_id)], [0, 0])
        await self._record(actor, room_id, "unmute", reason, user=user_id)
        await self.engine.send_to_user(
            user_id, CommentEvent.MUTED, {"room_id": room_id, "until": 0}
        )
        return {"user_id": user_id}

    async def delete_comment(
        self, actor: Principal, room_id: str, comment_id: str, reason: str | None
    ) -> dict[str, Any]:
        await self.rooms.get(room_id)
        at = now_ms()
        entry = jsonutil.dumps(
            {"room_id": room_id, "deleted": comment_id, "at": at, "by": actor.id}
        )
        step_keys = [recent_key(room_id), log_key(room_id)]
        recent = await self.engine.atomic("comment_delete", step_keys, [comment_id, entry])
        if not recent:
            row = await self.stored.get(comment_id)
            if row is None or row.room_id != room_id:
                raise errors.NotFound("no such comment in this room", comment_id=comment_id)
        await self.engine.publish(room_id, CommentEvent.DELETED, {"ids": [comment_id]})
        await self._record(actor, room_id, "delete_comment", reason, comment=comment_id)
        return {"ids": [comment_id]}

    async def banned_words(
        self,
        actor: Principal,
        room_id: str,
        add: list[str],
        remove: list[str],
        reason: str | None,
    ) -> dict[str, Any]:
        await self.rooms.get(room_id)
        try:
            added = sorted({clean_word(word) for word in add})
            removed = sorted({clean_word(word) for word in remove})
        except ValueError as exc:
            raise errors.Invalid(f"banned word: {exc}", fields={"add": str(exc)}) from None
        args: list[Any] = ["words", len(added), *added, *removed] if added or removed else ["get"]
        result = await self.engine.atomic("comment_settings", [settings_key(room_id)], args)
        self.comments.forget_rules(room_id)
        if added or removed:
            await self._record(actor, room_id, "banned_words", reason, add=added, remove=removed)
        return {"words": sorted(result["words"])}  # code points, whatever Redis's locale

    async def slow_mode(
        self, actor: Principal, room_id: str, interval_s: int, reason: str | None
    ) -> dict[str, Any]:
        await self.rooms.get(room_id)
        await self.engine.atomic(
            "comment_settings", [settings_key(room_id)], ["slow", interval_s * 1000]
        )
        self.comments.forget_rules(room_id)
        await self.engine.publish(room_id, CommentEvent.SLOW_MODE, {"interval_s": interval_s})
        await self._record(actor, room_id, "slow_mode", reason, interval_s=interval_s)
        return {"interval_s": interval_s}

    async def _record(
        self,
        actor: Principal,
        room_id: str,
        action: str,
        reason: str | None,
        *,
        user: str | None = None,
        comment: str | None = None,
        **detail: Any,
    ) -> None:
        await self.audit.record(
            room_id=room_id,
            actor_id=actor.id,
            action=action,
            target_user_id=user,
            target_comment_id=comment,
            detail=jsonutil.dumps(detail) if detail else None,
            reason=reason,
        )
        log.info("moderation", room_id=room_id, actor=actor.id, action=action, user=user)
