"""Repository of the dashboard's rollups (``metrics_models.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from livecommerce import jsonutil
from livecommerce.persistence.db import Database, dialect_insert
from livecommerce.persistence.metrics_models import MetricsMinute
from livecommerce.persistence.repositories import _tx


class MetricsHistory:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(self, room_id: str, at: int, row: dict[str, Any]) -> None:
        """Insert or replace the room's row for the period starting at ``at``."""
        values = {**row, "products_json": jsonutil.dumps(row.get("products") or {})}
        values.pop("products", None)
        query = dialect_insert(self._db, MetricsMinute).values(room_id=room_id, at=at, **values)
        query = query.on_conflict_do_update(index_elements=["room_id", "at"], set_=values)
        async with _tx(self._db) as s:
            await s.execute(query)

    async def since(self, room_id: str, since_ms: int, limit: int = 1440) -> list[MetricsMinute]:
        query = (
            select(MetricsMinute)
            .where(MetricsMinute.room_id == room_id, MetricsMinute.at >= since_ms)
            .order_by(MetricsMinute.at.desc())
            .limit(limit)
        )
        async with _tx(self._db, readonly=True) as s:
            rows = list(await s.scalars(query))
        rows.reverse()
        return rows
