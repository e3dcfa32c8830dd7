"""What happens when nobody is calling: group expiry, stuck payments, campaign end.

Everything here runs on the engine's durable timers, so it survives the node that
scheduled it: a node killed mid-handler leaves the timer leased, the lease lapses and
another node runs the handler again. Handlers are therefore replays by design:

* ``group_settle`` decides a group once and hands every re-run the same member orders;
* refunds are keyed per member order id (and reason) at the provider, so a re-run repeats
  the request, never the money; an order becomes ``refunded`` only after its refund went
  through;
* coupons are unique per member order in SQL.

The timer is acknowledged only when all of it is done, so nothing is lost either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from livecommerce import errors
from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.groupbuy.events import GroupEvent
from livecommerce.features.groupbuy.fanout import Fanout
from livecommerce.features.groupbuy.public import group_keys
from livecommerce.features.payments.provider import PaymentProvider
from livecommerce.persistence.groupbuy import Coupons

log = structlog.get_logger(__name__)

EXPIRE, PAYING, END = "gb.expire", "gb.paying", "gb.end"
#: A charge still in flight this long after its seat was taken (its node died mid-charge)
#: is settled from the provider's own record.
PAYING_GRACE_MS = 10_000
RETRY_MS = 1_000

Terms = dict[str, Any]
TermsOf = Callable[[str], Awaitable[Terms]]


class Settlement:
    def __init__(
        self,
        engine: Engine,
        provider: PaymentProvider,
        coupons: Coupons,
        fanout: Fanout,
        terms_of: TermsOf,
        coupon_cents: int,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.coupons = coupons
        self.fanout = fanout
        self.terms_of = terms_of
        self.coupon_cents = coupon_cents
        engine.on_timer(EXPIRE, self.on_expire)
        engine.on_timer(PAYING, self.on_paying)
        engine.on_timer(END, self.on_end)

    async def step(self, terms: Terms, order_id: str, action: str) -> dict[str, Any]:
        """One ``group_step`` and what follows from it."""
        keys = group_keys(terms["room_id"], terms["id"])
        result: dict[str, Any] = await self.engine.atomic(
            "group_step", keys, [order_id, action, now_ms()]
        )
        if result.get("error") == "not_found":
            raise errors.NotFound("no such order", order_id=order_id)
        await self.fanout.step(terms, result)
        if result.get("settled") and any(o.get("refund_cents") for o in result["orders"]):
            # Full at a lower tier: the differences are refunded by the settlement pass,
            # durably, now (this replaces the group's expiry timer).
            group = result["group"]
            await self.engine.schedule(EXPIRE, group["id"], now_ms(), _where(terms))
        return result

    # -- group expiry ---------------------------------------------------------------------

    async def on_expire(self, group_id: str, where: dict[str, Any]) -> None:
        terms = await self.terms_of(where["campaign_id"])
        keys = group_keys(terms["room_id"], terms["id"])
        result = await self.engine.atomic("group_settle", keys, [group_id, now_ms()])
        if result.get("error") == "not_found":
            return  # never opened (the leader was declined) or a seat step that failed
        group = result["group"]
        if result.get("early"):
            await self.engine.schedule(EXPIRE, group_id, group["expires_at"], where)
            return
        if result.get("paying"):
            await self._settle_paying(terms, result["paying"], group_id, where)
            return
        pending = any(o["status"] == "refunding" for o in result["orders"])
        if result.get("changed"):
            await self.fanout.step(terms, result)
        elif pending:  # a re-run after a node died mid-settlement: say it again
            await self.fanout.room(terms, result["campaign"], group)
        await self._pay_out(terms, group, result["orders"])
        log.info("group_settled", group_id=group_id, status=group["status"])

    async def _settle_paying(
        self, terms: Terms, order_ids: list[str], group_id: str, where: dict[str, Any]
    ) -> None:
        """Seats still paying at the deadline: wait for their payers, or settle them from
        the provider's record if their node died; then settle the group."""
        for order_id in order_ids:
            order = await self._order(terms, order_id)
            if order is not None and order["status"] == "paying":
                await self.resolve(terms, order)
        await self.engine.schedule(EXPIRE, group_id, now_ms() + RETRY_MS, where)

    async def _pay_out(self, terms: Terms, group: dict[str, Any], orders: list[Any]) -> None:
        for order in orders:
            if group["status"] == "succeeded":
                if order.get("refund_cents"):
                    await self.refund(order, "tier_difference")
            elif order["status"] in ("refunding", "refunded"):
                if order["status"] == "refunding":
                    await self.refund(order, "group_failed")
                    await self.step(terms, order["id"], "refunded")
                await self.coupon(terms, order)

    async def refund(self, order: dict[str, Any], reason: str) -> None:
        await self.provider.refund(
            order_id=order["id"],
            user_id=order["user_id"],
            amount_cents=order["refund_cents"],
            reason=reason,
        )

    async def coupon(self, terms: Terms, order: dict[str, Any]) -> None:
        if self.coupon_cents <= 0:
            return
        coupon, created = await self.coupons.grant(
            order_id=order["id"],
            user_id=order["user_id"],
            group_id=order["ref_id"],
            campaign_id=terms["id"],
            room_id=terms["room_id"],
            amount_cents=self.coupon_cents,
        )
        if created:
            payload = {"coupon": coupon.to_public()}
            await self.engine.send_to_user(order["user_id"], GroupEvent.COUPON, payload)

    # -- stuck payments -------------------------------------------------------------------

    async def on_paying(self, order_id: str, where: dict[str, Any]) -> None:
        terms = await self.terms_of(where["campaign_id"])
        order = await self._order(terms, order_id)
        if order is None or order["status"] != "paying":
            return
        if not await self.resolve(terms, order):
            await self.engine.schedule(PAYING, order_id, now_ms() + RETRY_MS, where)

    async def resolve(self, terms: Terms, order: dict[str, Any]) -> bool:
        """Settle a seat whose charge outlived the grace period from the provider's record
        (charged: paid, else the seat is released). False while still within the grace."""
        if now_ms() - order["updated_at"] < PAYING_GRACE_MS:
            return False
        charged = await self.provider.charged(order["id"])
        await self.step(terms, order["id"], "pay_ok" if charged else "pay_fail")
        log.warning("group_payment_settled_late", order_id=order["id"], charged=charged)
        return True

    async def _order(self, terms: Terms, order_id: str) -> dict[str, Any] | None:
        keys = group_keys(terms["room_id"], terms["id"])
        found: dict[str, Any] | None = await self.engine.atomic("group_order", keys, [order_id])
        return found

    # -- campaign end ---------------------------------------------------------------------

    async def on_end(self, campaign_id: str, _where: dict[str, Any]) -> None:
        terms = await self.terms_of(campaign_id)
        keys = group_keys(terms["room_id"], campaign_id)
        raw = await self.engine.atomic("group_campaign", keys, ["0"])
        if raw is not None:
            await self.fanout.room(terms, raw["campaign"], None)


def _where(terms: Terms) -> dict[str, Any]:
    return {"room_id": terms["room_id"], "campaign_id": terms["id"]}
