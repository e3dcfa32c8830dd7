"""Repositories for what viewers say and do: comments, moderation audit, like totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from livecommerce.persistence.db import Database, dialect_insert
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
        Returns how many were inserted.

        Both steps are single statements that decide per row in the database (``ON
        CONFLICT DO NOTHING``; ``deleted_at IS NULL``), so nodes writing the same entries
        at once never fail on a duplicate key nor overwrite the first deletion."""
        rows = list({c["id"]: c for c in reversed(new)}.values())  # first of each id
        rows.sort(key=lambda c: c["id"])  # racing writers take the same keys in one order
        inserted = 0
        async with _tx(self._db) as s:
            if rows:
                query = dialect_insert(self._db, Comment).on_conflict_do_nothing(
                    index_elements=["id"]
                )
                done = await s.execute(query.returning(Comment.id), rows)
                inserted = len(done.all())
            for comment_id, (at, by) in sorted(deleted.items()):
                await s.execute(
                    update(Comment)
                    .where(Comment.id == comment_id, Comment.deleted_at.is_(None))
                    .values(deleted_at=at, deleted_by=by)
                    .execution_options(synchronize_session=False)
                )
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
            # Rooms in one order: two nodes adding to the same rooms queue, not deadlock.
            for room_id, delta in sorted(deltas.items()):
                await s.execute(
                    update(Room).where(Room.id == room_id).values(likes=Room.likes + delta)
                )

    async def get(self, room_id: str) -> int:
        async with _tx(self._db, readonly=True) as s:
            value = await s.scalar(select(Room.likes).where(Room.id == room_id))
        return int(value or 0)
