"""Repositories of group buys: campaign terms, the log writer's upserts, coupons.

Writes that may race with another process (two nodes writing entries of the same order,
a settlement re-run granting the same coupon) are idempotent: rows are keyed by id, a
status only moves forward (by ``updated_at``), and a coupon is unique per member order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from livecommerce import jsonutil
from livecommerce.persistence.db import Database
from livecommerce.persistence.groupbuy_models import GroupBuy, GroupCampaign, GroupCoupon
from livecommerce.persistence.models import Order, new_id
from livecommerce.persistence.repositories import _rowcount, _tx, upsert_rows

_ORDER_COLUMNS = frozenset(Order.__table__.columns.keys())
#: What may change on a known order: a group member's price drops to the tier reached.
_ORDER_MOVES = ("status", "updated_at", "unit_price_cents", "amount_cents")
_GROUP_MOVES = ("status", "members", "price_cents", "settled_at", "updated_at")
_UNSETTLED = ("forming", "open")


class GroupCampaigns:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, terms: Mapping[str, Any]) -> GroupCampaign:
        fields = {k: v for k, v in terms.items() if k != "tiers"}
        campaign = GroupCampaign(**fields, tiers_json=jsonutil.dumps(terms["tiers"]))
        async with _tx(self._db) as s:
            s.add(campaign)
        return campaign

    async def get(self, campaign_id: str) -> GroupCampaign | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(GroupCampaign, campaign_id)

    async def list_for_room(self, room_id: str) -> list[GroupCampaign]:
        query = select(GroupCampaign).where(GroupCampaign.room_id == room_id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query.order_by(GroupCampaign.created_at)))


class GroupRecords:
    """The log writer's side: member orders and groups, upserted in one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self, orders: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]]
    ) -> None:
        order_rows = [{k: v for k, v in o.items() if k in _ORDER_COLUMNS} for o in orders]
        group_rows = [_group_row(g) for g in groups]
        async with _tx(self._db) as s:
            # Always orders before groups: two nodes' transactions lock in one order.
            await upsert_rows(s, self._db, Order, order_rows, _moves(_ORDER_MOVES))
            await upsert_rows(s, self._db, GroupBuy, group_rows, _moves(_GROUP_MOVES))

    async def group(self, group_id: str) -> GroupBuy | None:
        async with _tx(self._db, readonly=True) as s:
            return await s.get(GroupBuy, group_id)

    async def units_held(self, campaign_id: str) -> int:
        """Units sold for good: members of the campaign's succeeded groups."""
        query = (
            select(func.count(Order.id))
            .join(GroupBuy, GroupBuy.id == Order.ref_id)
            .where(
                GroupBuy.campaign_id == campaign_id,
                Order.kind == "groupbuy",
                Order.status == "confirmed",
            )
        )
        async with _tx(self._db, readonly=True) as s:
            return int(await s.scalar(query) or 0)

    async def unsettled(self) -> list[GroupBuy]:
        """Groups SQL last saw forming or open (a rebuild must settle them)."""
        query = select(GroupBuy).where(GroupBuy.status.in_(_UNSETTLED))
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query.order_by(GroupBuy.expires_at)))

    async def close_lost(self, group_id: str, status: str, now: int) -> bool:
        """Settle a group the engine lost, from SQL alone (compare-and-set: once)."""
        guarded = (
            update(GroupBuy)
            .where(GroupBuy.id == group_id, GroupBuy.status.in_(_UNSETTLED))
            .values(status=status, settled_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        async with _tx(self._db) as s:
            return _rowcount(await s.execute(guarded)) == 1

    async def member_orders(self, group_id: str) -> list[Order]:
        query = select(Order).where(Order.kind == "groupbuy", Order.ref_id == group_id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query.order_by(Order.created_at, Order.id)))


def _group_row(group: Mapping[str, Any]) -> dict[str, Any]:
    paid = [m for m in group["members"] if m["status"] == "paid"] if group["members"] else []
    return {
        "id": group["id"],
        "campaign_id": group["campaign_id"],
        "room_id": group["room_id"],
        "leader_id": group["leader"]["id"],
        "status": group["status"],
        "members": len(paid),
        "price_cents": group["price_cents"],
        "created_at": group["created_at"],
        "expires_at": group["expires_at"],
        "settled_at": group.get("settled_at"),
        "updated_at": group["updated_at"],
    }


def _moves(names: tuple[str, ...]) -> Callable[[Any, Mapping[str, Any]], None]:
    """Move a stored row forward, never back: an older ``updated_at`` from a late log
    entry leaves a newer row alone."""

    def move(current: Any, row: Mapping[str, Any]) -> None:
        if current.updated_at <= row["updated_at"]:
            for name in names:
                setattr(current, name, row[name])

    return move


class Coupons:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def grant(
        self,
        *,
        order_id: str,
        user_id: str,
        group_id: str,
        campaign_id: str,
        room_id: str,
        amount_cents: int,
        reason: str = "group_failed",
    ) -> tuple[GroupCoupon, bool]:
        """The coupon of ``order_id``, created once; ``(coupon, created_by_this_call)``."""
        coupon = GroupCoupon(
            id=new_id("cp"),
            order_id=order_id,
            user_id=user_id,
            group_id=group_id,
            campaign_id=campaign_id,
            room_id=room_id,
            amount_cents=amount_cents,
            reason=reason,
        )
        try:
            async with _tx(self._db) as s:
                s.add(coupon)
            return coupon, True
        except IntegrityError:
            existing = await self.for_order(order_id)
            if existing is None:  # pragma: no cover - coupons are never deleted
                raise
            return existing, False

    async def for_order(self, order_id: str) -> GroupCoupon | None:
        query = select(GroupCoupon).where(GroupCoupon.order_id == order_id)
        async with _tx(self._db, readonly=True) as s:
            return await s.scalar(query)

    async def for_user(self, user_id: str) -> list[GroupCoupon]:
        query = select(GroupCoupon).where(GroupCoupon.user_id == user_id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query.order_by(GroupCoupon.created_at)))

    async def for_group(self, group_id: str) -> list[GroupCoupon]:
        query = select(GroupCoupon).where(GroupCoupon.group_id == group_id)
        async with _tx(self._db, readonly=True) as s:
            return list(await s.scalars(query.order_by(GroupCoupon.created_at)))
