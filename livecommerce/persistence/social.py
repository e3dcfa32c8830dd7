"""Repositories for what viewers say and do: comments, moderation audit, like totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from livecommerce.persistence.db import Database
from livecommerce.persistence.models import Comment, ModerationAction, Room, new_id
from livecommerce.persistence.repositories import _tx


class Comments:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self, new: Sequence[Mapping[str, Any]], deleted: Mapping[str, tuple[int, str]]
    ) -> int:
        """Insert ``new`` comments (ids already stored are skipped: the log is delivered at
        least once) and mark ``deleted`` ones (id -> (at, by)), in one transaction.
        Returns how many were inserted."""
        ids = {c["id"] for c in new} | set(deleted)
        async with _tx(self._db) as s:
            known = {c.id: c for c in await s.scalars(select(Comment).where(Comment.id.in_(ids)))}
            inserted = 0
            for item in new:
                if item["id"] not in known:
                    known[item["id"]] = row = Comment(**item)
                    s.add(row)
                    inserted += 1
            for comment_id, (at, by) in deleted.items():
                found = known.get(comment_id)
                if found is not None and found.deleted_at is None:
                    found.deleted_at, found.deleted_by = at, by
        return inserted

    async def list_for_room(self, room_id: str, limit: int = 100) -> list[Comment]:
        query = (
            select(Comment)
            .where(Comment.room_id == room_id)
            .order_by(Comment.created_at.desc(), Comment.id.desc())
            .limit(limit)
        )
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))

    async def get(self, comment_id: str) -> Comment | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(Comment, comment_id)


class Audit:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        room_id: str,
        actor_id: str,
        action: str,
        target_user_id: str | None = None,
        target_comment_id: str | None = None,
        detail: str | None = None,
        reason: str | None = None,
    ) -> ModerationAction:
        row = ModerationAction(
            id=new_id("mod"),
            room_id=room_id,
            actor_id=actor_id,
            action=action,
            target_user_id=target_user_id,
            target_comment_id=target_comment_id,
            detail=detail,
            reason=reason,
        )
        async with _tx(self._db) as s:
            s.add(row)
        return row

    async def list_for_room(self, room_id: str, limit: int = 100) -> list[ModerationAction]:
        query = (
            select(ModerationAction)
            .where(ModerationAction.room_id == room_id)
            .order_by(ModerationAction.created_at.desc())
            .limit(limit)
        )
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))


class LikeTotals:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, deltas: Mapping[str, int]) -> None:
        """Add each room's new taps (one transaction for every room this node saw)."""
        async with _tx(self._db) as s:
            for room_id, delta in deltas.items():
                await s.execute(
                    update(Room).where(Room.id == room_id).values(likes=Room.likes + delta)
                )

    async def get(self, room_id: str) -> int:
        async with _tx(self._db, readonly=True) as s:
            value = await s.scalar(select(Room.likes).where(Room.id == room_id))
        return int(value or 0)
