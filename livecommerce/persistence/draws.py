"""Repository of lucky draws."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from livecommerce import jsonutil
from livecommerce.persistence.db import Database
from livecommerce.persistence.models import Draw
from livecommerce.persistence.repositories import _rowcount, _tx


class Draws:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, **fields: Any) -> Draw:
        draw = Draw(**fields)
        async with _tx(self._db) as s:
            s.add(draw)
        return draw

    async def get(self, draw_id: str) -> Draw | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(Draw, draw_id)

    async def finish(
        self,
        draw_id: str,
        *,
        entrants: list[str],
        winners: list[dict[str, str]],
        entered: int,
        at: int,
    ) -> bool:
        """open -> drawn, once: True for the call that recorded the result."""
        query = (
            update(Draw)
            .where(Draw.id == draw_id, Draw.status == "open")
            .values(
                status="drawn",
                entrants_json=jsonutil.dumps(entrants),
                winners_json=jsonutil.dumps(winners),
                entrants_count=entered,
                drawn_at=at,
            )
        )
        async with _tx(self._db) as s:
            return _rowcount(await s.execute(query)) == 1
