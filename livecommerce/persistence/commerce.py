"""Repositories for selling: flash-sale terms and the sandbox payment ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from livecommerce.persistence.db import Database
from livecommerce.persistence.models import FlashSale, Order, Payment, new_id
from livecommerce.persistence.repositories import _tx

#: Order statuses that hold units of a sale.
HOLDING = ("reserved", "paying", "paid")


class FlashSales:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, terms: dict[str, Any]) -> FlashSale:
        sale = FlashSale(**terms)
        async with _tx(self._db) as s:
            s.add(sale)
        return sale

    async def get(self, sale_id: str) -> FlashSale | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(FlashSale, sale_id)

    async def list_open(self, now: int) -> list[FlashSale]:
        """Sales whose window has not closed (what a restart must have in the engine)."""
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(select(FlashSale).where(FlashSale.ends_at > now)))

    async def units_held(self, sale_id: str) -> dict[str, int]:
        """user_id -> units in orders that hold stock, as SQL knows them."""
        query = (
            select(Order.user_id, func.sum(Order.qty))
            .where(Order.kind == "flashsale", Order.ref_id == sale_id, Order.status.in_(HOLDING))
            .group_by(Order.user_id)
        )
        async with _tx(self._db, readonly=True) as s:
            return {user: int(units) for user, units in (await s.execute(query)).all()}

    async def orders(self, sale_id: str) -> list[Order]:
        query = select(Order).where(Order.kind == "flashsale", Order.ref_id == sale_id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))


class Payments:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        idempotency_key: str,
        *,
        order_id: str,
        user_id: str,
        kind: str,
        amount_cents: int,
        status: str,
        reason: str | None = None,
    ) -> Payment:
        """Insert a ledger row once per ``idempotency_key``; a retry returns the first."""
        row = Payment(
            id=new_id("pay"),
            idempotency_key=idempotency_key,
            order_id=order_id,
            user_id=user_id,
            kind=kind,
            amount_cents=amount_cents,
            status=status,
            reason=reason,
        )
        try:
            async with _tx(self._db) as s:
                s.add(row)
            return row
        except IntegrityError:
            existing = await self.by_key(idempotency_key)
            assert existing is not None
            return existing

    async def by_key(self, idempotency_key: str) -> Payment | None:
        query = select(Payment).where(Payment.idempotency_key == idempotency_key)
        async with _tx(self._db, readonly=True) as s:
            return await s.scalar(query)

    async def for_order(self, order_id: str) -> list[Payment]:
        query = select(Payment).where(Payment.order_id == order_id).order_by(Payment.created_at)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query))
