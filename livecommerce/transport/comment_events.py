"""Socket events of bullet comments, likes and moderation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.comments.schemas import CommentSend, LikeSend
from livecommerce.features.moderation.schemas import (
    BannedWordsEdit,
    DeleteComment,
    Mute,
    SlowMode,
    Unmute,
)
from livecommerce.transport.dispatch import Call, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, node: Node) -> None:
    @on.on("comment:send", CommentSend, Access.ACT)
    async def send(call: Call[CommentSend]) -> dict[str, Any]:
        p = call.payload
        if call.conn.comment_order is None:
            call.conn.comment_order = asyncio.Lock()
        async with call.conn.comment_order:  # queued in order; published in that order
            comment_id, published = await node.comments.submit(
                call.user, p.room_id, p.text, p.request_id
            )
        await published
        return {"id": comment_id}

    @on.on("like:send", LikeSend, Access.ACT)
    async def like(call: Call[LikeSend]) -> dict[str, Any]:
        await node.likes.send(call.user, call.payload.room_id, call.payload.count)
        return {}

    @on.on("mod:mute", Mute, Access.CONTROL)
    async def mute(call: Call[Mute]) -> dict[str, Any]:
        p = call.payload
        return await node.moderation.mute(call.user, p.room_id, p.user_id, p.duration_s, p.reason)

    @on.on("mod:unmute", Unmute, Access.CONTROL)
    async def unmute(call: Call[Unmute]) -> dict[str, Any]:
        p = call.payload
        return await node.moderation.unmute(call.user, p.room_id, p.user_id, p.reason)

    @on.on("mod:delete_comment", DeleteComment, Access.CONTROL)
    async def delete(call: Call[DeleteComment]) -> dict[str, Any]:
        p = call.payload
        return await node.moderation.delete_comment(call.user, p.room_id, p.comment_id, p.reason)

    @on.on("mod:banned_words", BannedWordsEdit, Access.CONTROL)
    async def banned(call: Call[BannedWordsEdit]) -> dict[str, Any]:
        p = call.payload
        return await node.moderation.banned_words(
            call.user, p.room_id, list(p.add), list(p.remove), p.reason
        )

    @on.on("mod:slow_mode", SlowMode, Access.CONTROL)
    async def slow(call: Call[SlowMode]) -> dict[str, Any]:
        p = call.payload
        return await node.moderation.slow_mode(call.user, p.room_id, p.interval_s, p.reason)
