"""Repository of settled PK battles."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from livecommerce.persistence.db import Database
from livecommerce.persistence.models import PkBattle
from livecommerce.persistence.repositories import _tx


class PkBattles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def settle(self, **fields: Any) -> bool:
        """Record a settled PK once; False if it was recorded before (a re-fired timer)."""
        try:
            async with _tx(self._db) as s:
                if await s.get(PkBattle, fields["id"]) is not None:
                    return False
                s.add(PkBattle(**fields))
        except IntegrityError:  # another node recorded it between our read and insert
            return False
        return True

    async def get(self, pk_id: str) -> PkBattle | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(PkBattle, pk_id)
