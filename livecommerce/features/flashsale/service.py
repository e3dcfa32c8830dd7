"""Flash sales: create, buy, pay, cancel, expire — and never oversell.

Every decision that touches stock is one atomic engine step (``engine/lua/sale_*.lua`` on
Redis, their twins in ``engine/memory_ops.py`` in-process): the window, stock, per-user
limit and idempotency are checked and the reservation made in the same step, so no
interleaving of buyers, nodes, retries, payments and expiries can break
``reserved + paid <= quantity``. Orders reach SQL through the engine's durable order log
(``orders.py``), never on the buyer's path.

Payment races expiry through an intermediate ``paying`` status: an order is moved to
``paying`` atomically before the provider is charged, and an expiry that finds it
``paying`` leaves the stock alone and checks again later. So a late payment can never land
on stock that was already given back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.flashsale.events import SaleEvent
from livecommerce.features.flashsale.merge import BuyMerger
from livecommerce.features.flashsale.orders import ORDER_LOG
from livecommerce.features.flashsale.schemas import SaleCreate
from livecommerce.features.payments.provider import PaymentProvider
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.commerce import HOLDING, FlashSales
from livecommerce.persistence.models import new_id
from livecommerce.persistence.repositories import Orders

log = structlog.get_logger(__name__)

START, END, HOLD = "sale.start", "sale.end", "sale.hold"
IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
#: A payment stuck in ``paying`` this long (its node died mid-charge) is settled from the
#: provider's own record.
PAYING_GRACE_MS = 10_000
STOCK_UPDATE_INTERVAL_S = 0.25


def sale_keys(room_id: str, sale_id: str) -> list[str]:
    """KEYS of every sale op: sale hash, holds hash, orders hash, order log stream."""
    return list(_sale_keys(room_id, sale_id))


@functools.lru_cache(maxsize=4096)  # built for every buyer of a stampede otherwise
def _sale_keys(room_id: str, sale_id: str) -> tuple[str, ...]:
    base = keys.room_key(room_id, "sale", sale_id)
    return (base, f"{base}:holds", f"{base}:orders", keys.room_key(room_id, "log", ORDER_LOG))


def sale_public(terms: dict[str, Any], left: int, status: str, now: int) -> dict[str, Any]:
    if status in ("scheduled", "live") and now >= terms["ends_at"]:
        status = "ended"
    elif status == "scheduled" and now >= terms["starts_at"]:
        status = "live"
    return {**terms, "left": left, "status": status}


class FlashSaleService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        sales: FlashSales,
        orders: Orders,
        provider: PaymentProvider,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.sales = sales
        self.orders = orders
        self.provider = provider
        self._stock_dirty: dict[str, str] = {}  # sale_id -> room_id
        self._terms_cache: TTLCache[str, dict[str, Any] | None] = TTLCache(3600)
        self._merger = BuyMerger(engine, IDEMPOTENCY_TTL_MS)
        self._flusher: asyncio.Task[None] | None = None
        #: Called with every order that became paid (PK sales scores).
        self.paid_hooks: list[Callable[[dict[str, Any]], Awaitable[None]]] = []
        engine.on_timer(START, self._on_status_timer)
        engine.on_timer(END, self._on_status_timer)
        engine.on_timer(HOLD, self._on_hold_timer)
        rooms.add_snapshot_part(self._snapshot)

    # -- reading ------------------------------------------------------------------------

    async def state(self, room_id: str, sale_id: str) -> dict[str, Any]:
        raw = await self.engine.atomic("sale_get", sale_keys(room_id, sale_id), [])
        if raw is None:
            raise errors.NotFound("no such sale", sale_id=sale_id)
        return sale_public(raw["terms"], raw["left"], raw["status"], now_ms())

    async def _terms(self, sale_id: str) -> dict[str, Any]:
        # Terms never change after creation: each node reads them from SQL once (single
        # flight: a stampede's first thousand buyers share that one read).
        async def load() -> dict[str, Any] | None:
            sale = await self.sales.get(sale_id)
            return None if sale is None else sale.terms()

        terms = await self._terms_cache.get(sale_id, load)
        if terms is None:
            self._terms_cache.invalidate(sale_id)  # it may be created later on another node
            raise errors.NotFound("no such sale", sale_id=sale_id)
        return terms

    async def _snapshot(self, room_id: str, _me: Principal | None) -> dict[str, Any]:
        active = await self.engine.set_members(keys.room_key(room_id, "sales"))
        sales = []
        for sale_id in sorted(active):
            try:
                sale = await self.state(room_id, sale_id)
            except errors.NotFound:
                continue
            if sale["status"] != "ended":
                sales.append(sale)
        return {"flashsales": sales}

    # -- creating -----------------------------------------------------------------------

    async def create(self, data: SaleCreate) -> dict[str, Any]:
        room = await self.rooms.get(data.room_id)
        if room.status == "ended":
            raise errors.Ended("the room has ended")
        await self.rooms.product(data.room_id, data.product_id)  # not_found otherwise
        now = now_ms()
        starts_at = data.starts_at if data.starts_at is not None else now
        if starts_at < now - 1000:
            raise errors.Invalid("starts_at is in the past", fields={"starts_at": "in the past"})
        terms: dict[str, Any] = {
            "id": new_id("fs"),
            "room_id": data.room_id,
            "product_id": data.product_id,
            "price_cents": data.price_cents,
            "quantity": data.quantity,
            "per_user_limit": data.per_user_limit,
            "starts_at": starts_at,
            "ends_at": starts_at + data.duration_s * 1000,
            "hold_s": data.hold_s,
        }
        await self.sales.create(terms)  # SQL first: a restart rebuilds the engine from it
        self._terms_cache.put(terms["id"], dict(terms))  # the sale's first buyers skip SQL here
        sale = await self.install(terms, {}, [])
        if starts_at > now:
            await self.engine.schedule(START, terms["id"], starts_at, {"room_id": data.room_id})
        await self.engine.schedule(END, terms["id"], terms["ends_at"], {"room_id": data.room_id})
        await self.engine.publish(data.room_id, SaleEvent.UPDATE, {"sale": sale})
        log.info("sale_created", sale_id=terms["id"], room_id=data.room_id, qty=data.quantity)
        return sale

    async def install(
        self, terms: dict[str, Any], holds: dict[str, int], orders: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Put a sale into the engine; an existing one is left as it is. ``holds`` and
        ``orders`` are what SQL knows when rebuilding after the engine lost its state."""
        now = now_ms()
        left = terms["quantity"] - sum(holds.values())
        status = "scheduled" if terms["starts_at"] > now else "live"
        if left <= 0:
            status = "sold_out"
        args = [
            _json(terms),
            left,
            status,
            terms["starts_at"],
            terms["ends_at"],
            terms["per_user_limit"],
            _json(holds),
            *(_json(o) for o in orders),
        ]
        await self.engine.log_register(ORDER_LOG, sale_keys(terms["room_id"], terms["id"])[3])
        await self.engine.atomic("sale_init", sale_keys(terms["room_id"], terms["id"]), args)
        await self.engine.set_add(keys.room_key(terms["room_id"], "sales"), terms["id"])
        return await self.state(terms["room_id"], terms["id"])

    async def restore(self, terms: dict[str, Any]) -> None:
        """Rebuild a sale the engine lost (a fresh in-process engine after a restart, or a
        Redis that lost its data) from SQL: stock is the quantity minus the units in
        reserved and paid orders, and reserved orders get their hold timers back."""
        holds = await self.sales.units_held(terms["id"])
        orders = [
            o.to_public() for o in await self.sales.orders(terms["id"]) if o.status in HOLDING
        ]
        await self.install(terms, holds, orders)
        hold = {"room_id": terms["room_id"], "sale_id": terms["id"]}
        for order in orders:
            if order["status"] == "reserved" and order["expires_at"] is not None:
                await self.engine.schedule(HOLD, order["id"], order["expires_at"], hold)
        log.warning("sale_rebuilt_from_sql", sale_id=terms["id"], units=sum(holds.values()))

    # -- buying -------------------------------------------------------------------------

    async def buy(self, user: Principal, sale_id: str, qty: int, request_id: str) -> dict[str, Any]:
        terms = await self._terms(sale_id)
        now = now_ms()
        order = {
            "id": new_id("o"),
            "user_id": user.id,
            "room_id": terms["room_id"],
            "product_id": terms["product_id"],
            "kind": "flashsale",
            "ref_id": sale_id,
            "qty": qty,
            "unit_price_cents": terms["price_cents"],
            "amount_cents": terms["price_cents"] * qty,
            "status": "reserved",
            "request_id": request_id,
            "created_at": now,
            "updated_at": now,
            "expires_at": now + terms["hold_s"] * 1000,
        }
        idem = keys.idempotency(terms["room_id"], user.id, f"buy:{sale_id}", request_id)
        step_keys = sale_keys(terms["room_id"], sale_id)
        step = (step_keys, idem, now, user.id, qty, _json(order))
        result = await self._merger.buy(*step)
        if result.get("error") == "not_found":  # SQL has the sale, the engine lost it
            await self.restore(terms)
            result = await self._merger.buy(*step)
        if "error" in result:
            raise _sale_error(result["error"])
        placed: dict[str, Any] = result["order"]
        if result.get("new"):
            await self.engine.kv_set(
                keys.order_locator(placed["id"]),
                f"{terms['room_id']} {sale_id}",
                IDEMPOTENCY_TTL_MS,
            )
            hold = {"room_id": terms["room_id"], "sale_id": sale_id}
            await self.engine.schedule(HOLD, placed["id"], placed["expires_at"], hold)
            await self._order_changed(placed, result)
        return placed

    # -- paying, cancelling, expiring ---------------------------------------------------

    async def pay(self, user: Principal, order_id: str) -> dict[str, Any]:
        order = await self._own_order(user, order_id)
        begun = await self._transition(order, "pay_begin")
        if begun["order"]["status"] == "paid":
            return dict(begun["order"])  # paid before: a retry
        charge = await self.provider.charge(
            order_id=order_id,
            user_id=user.id,
            user_name=user.name,
            amount_cents=order["amount_cents"],
        )
        if not charge.ok:
            done = await self._transition(order, "pay_fail")
            raise errors.PaymentFailed(charge.reason or "payment declined", order=done["order"])
        try:
            done = await self._transition(order, "pay_ok")
        except errors.Expired:
            # Settled as unpaid meanwhile (this payment outlived the grace period): the
            # money goes back; the stock was already released.
            await self.provider.refund(
                order_id=order_id,
                user_id=user.id,
                amount_cents=order["amount_cents"],
                reason="late_payment",
            )
            raise
        return dict(done["order"])

    async def cancel(self, user: Principal, order_id: str) -> dict[str, Any]:
        order = await self._own_order(user, order_id)
        return dict((await self._transition(order, "cancel"))["order"])

    async def _own_order(self, user: Principal, order_id: str) -> dict[str, Any]:
        located = await self.engine.kv_get(keys.order_locator(order_id))
        if located is not None:
            room_id, _, sale_id = located.partition(" ")
        else:  # the locator expired (a day later) or was lost: SQL knows where it lives
            row = await self.orders.get(order_id)
            if row is None or row.kind != "flashsale":
                raise errors.NotFound("no such order", order_id=order_id)
            room_id, sale_id = row.room_id, row.ref_id
        raw = await self.engine.atomic("sale_order", sale_keys(room_id, sale_id), [order_id])
        if raw is None or raw["user_id"] != user.id:
            raise errors.NotFound("no such order", order_id=order_id)
        return dict(raw)

    async def _transition(self, order: dict[str, Any], action: str) -> dict[str, Any]:
        result = await self.engine.atomic(
            "sale_order_step",
            sale_keys(order["room_id"], order["ref_id"]),
            [order["id"], action, now_ms()],
        )
        if result.get("changed"):
            await self._order_changed(result["order"], result)
        if "error" in result:
            raise _sale_error(result["error"], order=result.get("order"))
        return dict(result)

    async def _on_hold_timer(self, order_id: str, payload: dict[str, Any]) -> None:
        order = {"id": order_id, "room_id": payload["room_id"], "ref_id": payload["sale_id"]}
        try:
            result = await self._transition(order, "expire")
        except errors.NotFound:
            return  # nothing left to expire
        current = result.get("order") or {}
        if current.get("status") == "paying":
            await self._settle_paying(current, payload)

    async def _settle_paying(self, order: dict[str, Any], payload: dict[str, Any]) -> None:
        """The hold lapsed mid-payment. Wait for the payer; if its node died, settle from
        the provider's record: charged -> paid, else the order expires."""
        if now_ms() - order["updated_at"] < PAYING_GRACE_MS:
            await self.engine.schedule(HOLD, order["id"], now_ms() + 2000, payload)
            return
        action = "pay_ok" if await self.provider.charged(order["id"]) else "pay_fail"
        await self._transition(order, action)

    async def _on_status_timer(self, sale_id: str, payload: dict[str, Any]) -> None:
        sale = await self.state(payload["room_id"], sale_id)
        await self.engine.publish(payload["room_id"], SaleEvent.UPDATE, {"sale": sale})

    # -- fan-out ------------------------------------------------------------------------

    async def _order_changed(self, order: dict[str, Any], result: dict[str, Any]) -> None:
        if not self.engine.durable_logs:
            try:
                await self.engine.drain_logs()  # one node, no Redis: SQL before the ack
            except Exception as exc:  # the log loop retries it; the order itself stands
                log.warning("order_write_deferred", order_id=order["id"], error=str(exc))
        await self.engine.send_to_user(order["user_id"], SaleEvent.ORDER, {"order": order})
        if order["status"] == "paid":
            for hook in self.paid_hooks:
                try:
                    await hook(order)
                except Exception:
                    log.exception("paid_hook_failed", order_id=order["id"])
        if result.get("status_changed"):  # sold out, or back on sale: tell the room now
            sale = await self.state(order["room_id"], order["ref_id"])
            await self.engine.publish(order["room_id"], SaleEvent.UPDATE, {"sale": sale})
        elif result.get("stock_changed"):
            self._stock_dirty[order["ref_id"]] = order["room_id"]
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_stock())

    async def _flush_stock(self) -> None:
        # Stock moves on every buy; viewers see it a few times a second, not per buy.
        await asyncio.sleep(STOCK_UPDATE_INTERVAL_S)
        dirty, self._stock_dirty = self._stock_dirty, {}
        for sale_id, room_id in dirty.items():
            try:
                sale = await self.state(room_id, sale_id)
                await self.engine.publish_if_changed(
                    room_id,
                    SaleEvent.UPDATE,
                    "left",
                    sale["left"],
                    payload={"sale": sale},
                    dedupe=f"sale:{sale_id}",
                )
            except errors.DomainError as exc:
                log.warning("stock_update_failed", sale_id=sale_id, error=exc.code)

    async def close(self) -> None:
        # Let the last stock update go out (a quarter second at most), then stop.
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(self._flusher, STOCK_UPDATE_INTERVAL_S * 4)
            except Exception as exc:
                log.warning("stock_update_lost_at_close", error=str(exc))


def _sale_error(code: str, **extra: Any) -> errors.DomainError:
    messages = {
        "sold_out": errors.SoldOut,
        "not_started": errors.NotStarted,
        "ended": errors.Ended,
        "limit_exceeded": errors.LimitExceeded,
        "expired": errors.Expired,
        "not_found": errors.NotFound,
        "conflict": errors.Conflict,
        "invalid": errors.Invalid,
    }
    kind = messages.get(code, errors.Conflict)
    return kind(**{k: v for k, v in extra.items() if v is not None})


def _json(value: Any) -> str:
    return jsonutil.dumps(value)
