"""Group buys (拼团): campaigns, opening and joining groups, paying for a seat.

A join is two steps with the payment between them, never "check, pay, then write":

1. ``group_seat`` (one atomic engine step) checks the group's capacity, the caller's
   membership and the campaign's stock and takes the seat and its unit together; the
   member is ``paying``. Concurrent joiners on any number of nodes therefore cannot
   overfill a group, and a retried ``request_id`` finds its first seat.
2. The provider is charged (idempotent per order id), then ``group_step`` makes the seat
   ``paid`` — the group succeeds in that same step if it was its last seat — or, when the
   charge was declined, releases the seat and its unit in one step.

Expiry, failure refunds, coupons and stuck payments run on durable timers
(``settlement.py``). Orders and groups reach SQL through the engine's durable log
(``writer.py``), never on the caller's path.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.groupbuy.events import GroupEvent
from livecommerce.features.groupbuy.fanout import VISIBLE, Fanout
from livecommerce.features.groupbuy.public import (
    GROUP_LOG,
    campaign_public,
    campaigns_key,
    group_keys,
    group_locator,
    group_public,
)
from livecommerce.features.groupbuy.schemas import GroupCreate, GroupJoin
from livecommerce.features.groupbuy.settlement import (
    END,
    EXPIRE,
    PAYING,
    PAYING_GRACE_MS,
    Settlement,
)
from livecommerce.features.groupbuy.writer import GroupWriter
from livecommerce.features.payments.provider import PaymentProvider
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.groupbuy import Coupons, GroupCampaigns, GroupRecords
from livecommerce.persistence.models import new_id

log = structlog.get_logger(__name__)

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
ERRORS: dict[str, type[errors.DomainError]] = {
    "not_found": errors.NotFound,
    "ended": errors.Ended,
    "sold_out": errors.SoldOut,
    "expired": errors.Expired,
    "group_full": errors.GroupFull,
    "already_joined": errors.AlreadyJoined,
    "conflict": errors.Conflict,
    "invalid": errors.Invalid,
}


class GroupBuyService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        campaigns: GroupCampaigns,
        records: GroupRecords,
        coupons: Coupons,
        provider: PaymentProvider,
        *,
        min_ttl_s: int = 60,
        coupon_cents: int = 500,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.campaigns = campaigns
        self.records = records
        self.coupons = coupons
        self.provider = provider
        self.min_ttl_s = min_ttl_s
        self.fanout = Fanout(engine)
        self.confirmed_hooks = self.fanout.confirmed_hooks  # PK sales scores, and such
        self.writer = GroupWriter(engine, records)
        self.settlement = Settlement(
            engine, provider, coupons, self.fanout, self.terms, coupon_cents
        )
        self._terms_cache: TTLCache[str, dict[str, Any] | None] = TTLCache(3600)
        rooms.add_snapshot_part(self._snapshot)

    # -- reading ------------------------------------------------------------------------

    async def terms(self, campaign_id: str) -> dict[str, Any]:
        # Terms never change after creation: each node reads them from SQL once.
        async def load() -> dict[str, Any] | None:
            row = await self.campaigns.get(campaign_id)
            return None if row is None else row.terms()

        found = await self._terms_cache.get(campaign_id, load)
        if found is None:
            self._terms_cache.invalidate(campaign_id)  # it may be created on another node
            raise errors.NotFound("no such group buy", campaign_id=campaign_id)
        return found

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        """The campaign as the room sees it, with its open groups."""
        terms = await self.terms(campaign_id)
        keys_ = group_keys(terms["room_id"], campaign_id)
        raw = await self.engine.atomic("group_campaign", keys_, ["1"])
        if raw is None:
            raw = await self._reinstall(terms, ["1"])
        groups = [g for g in raw["groups"] if g["status"] in VISIBLE]
        groups.sort(key=lambda g: (g["expires_at"], g["id"]))
        public = campaign_public(terms, raw["campaign"], now_ms())
        return {**public, "groups": [group_public(g, terms) for g in groups]}

    async def group(self, group_id: str) -> dict[str, Any]:
        terms = await self.terms((await self._locate(group_id))[1])
        raw = await self.engine.atomic(
            "group_read", group_keys(terms["room_id"], terms["id"]), [group_id]
        )
        if raw is None or raw["group"]["status"] not in VISIBLE:
            raise errors.NotFound("no such group", group_id=group_id)
        return group_public(raw["group"], terms)

    async def _locate(self, group_id: str) -> tuple[str, str]:
        """(room_id, campaign_id) of a group, from the engine or else SQL."""
        located = await self.engine.kv_get(group_locator(group_id))
        if located is not None:
            room_id, _, campaign_id = located.partition(" ")
            return room_id, campaign_id
        row = await self.records.group(group_id)
        if row is None:
            raise errors.NotFound("no such group", group_id=group_id)
        return row.room_id, row.campaign_id

    async def _snapshot(self, room_id: str, _me: Principal | None) -> dict[str, Any]:
        found = []
        for campaign_id in sorted(await self.engine.set_members(campaigns_key(room_id))):
            try:
                campaign = await self.campaign(campaign_id)
            except errors.NotFound:
                continue
            if campaign["status"] != "ended" or campaign["groups"]:
                found.append(campaign)
        return {"groupbuys": found}

    # -- creating -----------------------------------------------------------------------

    async def create(self, data: GroupCreate) -> dict[str, Any]:
        room = await self.rooms.get(data.room_id)
        if room.status == "ended":
            raise errors.Ended("the room has ended")
        product = await self.rooms.product(data.room_id, data.product_id)  # not_found
        if data.group_ttl_s < self.min_ttl_s:
            at_least = f"at least {self.min_ttl_s}"
            raise errors.Invalid("group_ttl_s is too short", fields={"group_ttl_s": at_least})
        if data.price_cents >= product["price_cents"]:
            below = "must be below the product price"
            raise errors.Invalid("the group price is not a discount", fields={"price_cents": below})
        now = now_ms()
        terms: dict[str, Any] = {
            "id": new_id("gb"),
            "room_id": data.room_id,
            "product_id": data.product_id,
            "product_price_cents": product["price_cents"],
            "group_size": data.group_size,
            "max_size": data.max_size,
            "price_cents": data.price_cents,
            "tiers": [tier.model_dump() for tier in data.tiers],
            "group_ttl_s": data.group_ttl_s,
            "quantity": data.quantity,
            "starts_at": now,
            "ends_at": now + data.duration_s * 1000,
        }
        await self.campaigns.create(terms)  # SQL first: the engine can be rebuilt from it
        await self.install(terms, terms["quantity"])
        await self.engine.schedule(END, terms["id"], terms["ends_at"], _where(terms))
        campaign = await self.campaign(terms["id"])
        await self.engine.publish(data.room_id, GroupEvent.UPDATE, {"campaign": campaign})
        log.info("groupbuy_created", campaign_id=terms["id"], room_id=data.room_id)
        return campaign

    async def install(self, terms: dict[str, Any], left: int | None) -> bool:
        """Put a campaign into the engine (an existing one is left as it is)."""
        keys_ = group_keys(terms["room_id"], terms["id"])
        tiers = [[t["size"], t["price_cents"]] for t in terms["tiers"]]
        args = [
            _json(terms),
            terms["group_size"],
            terms["max_size"],
            terms["price_cents"],
            _json(tiers),
            terms["ends_at"],
            -1 if left is None else max(left, 0),
        ]
        await self.engine.log_register(GROUP_LOG, keys_[4])
        result = await self.engine.atomic("group_init", keys_, args)
        await self.engine.set_add(campaigns_key(terms["room_id"]), terms["id"])
        return bool(result["installed"])

    async def _reinstall(self, terms: dict[str, Any], args: list[Any]) -> dict[str, Any]:
        """The engine lost the campaign (a restart of the in-process engine, a flushed
        Redis): reinstall its terms. Its groups are settled by ``reconcile``."""
        left = terms["quantity"]
        if left is not None:
            left -= await self.records.units_held(terms["id"])
        await self.install(terms, left)
        log.warning("groupbuy_reinstalled", campaign_id=terms["id"], left=left)
        keys_ = group_keys(terms["room_id"], terms["id"])
        raw: dict[str, Any] = await self.engine.atomic("group_campaign", keys_, args)
        return raw

    # -- opening and joining ------------------------------------------------------------

    async def open(self, user: Principal, campaign_id: str, request_id: str) -> dict[str, Any]:
        return await self._seat(user, campaign_id, "open", "", request_id)

    async def join(self, user: Principal, data: GroupJoin) -> dict[str, Any]:
        mode, target = data.target()
        if mode == "join":
            _, campaign_id = await self._locate(target)
            return await self._seat(user, campaign_id, "join", target, data.request_id)
        return await self._seat(user, target, "auto", "", data.request_id)

    async def _seat(
        self, user: Principal, campaign_id: str, mode: str, group_id: str, request_id: str
    ) -> dict[str, Any]:
        terms = await self.terms(campaign_id)
        now = now_ms()
        order = _order(terms, user, request_id, now)
        group = _group(terms, user, now)
        if mode != "join":  # a group may open: its expiry is durable before it exists
            await self.engine.schedule(EXPIRE, group["id"], group["expires_at"], _where(terms))
        keys_ = [
            *group_keys(terms["room_id"], campaign_id),
            keys.idempotency(terms["room_id"], user.id, f"gb:{campaign_id}", request_id),
        ]
        args = [now, user.id, user.name, mode, group_id, _json(order), _json(group)]
        args.append(IDEMPOTENCY_TTL_MS)
        result = await self.engine.atomic("group_seat", keys_, args)
        if result.get("error") == "not_found" and await self._lost(terms):
            result = await self.engine.atomic("group_seat", keys_, args)
        if mode != "join" and not result.get("opened"):
            await self.engine.cancel(EXPIRE, group["id"])
        if "error" in result:
            raise ERRORS.get(result["error"], errors.Conflict)()
        if result["new"]:
            await self._seated(terms, result)
        return await self._pay(user, terms, result)

    async def _lost(self, terms: dict[str, Any]) -> bool:
        keys_ = group_keys(terms["room_id"], terms["id"])
        if await self.engine.atomic("group_campaign", keys_, ["0"]) is not None:
            return False
        await self._reinstall(terms, ["0"])
        return True

    async def _seated(self, terms: dict[str, Any], result: dict[str, Any]) -> None:
        order, where = result["order"], _where(terms)
        if result["opened"]:
            locator = f"{terms['room_id']} {terms['id']}"
            await self.engine.kv_set(group_locator(order["ref_id"]), locator)
        # If this node dies mid-charge, the watchdog settles the seat from the provider.
        await self.engine.schedule(PAYING, order["id"], now_ms() + PAYING_GRACE_MS, where)
        await self.fanout.step(terms, result)

    async def _pay(
        self, user: Principal, terms: dict[str, Any], seat: dict[str, Any]
    ) -> dict[str, Any]:
        order = seat["order"]
        if order["status"] == "declined":
            raise errors.PaymentFailed("payment declined", order=order)
        if order["status"] != "paying":  # a retry of a join that completed
            return _answer(terms, seat["group"], order)
        charge = await self.provider.charge(
            order_id=order["id"],
            user_id=user.id,
            user_name=user.name,
            amount_cents=order["amount_cents"],
        )
        done = await self.settlement.step(terms, order["id"], "pay_ok" if charge.ok else "pay_fail")
        await self.engine.cancel(PAYING, order["id"])
        if not charge.ok:
            reason = charge.reason or "payment declined"
            raise errors.PaymentFailed(reason, order=done["order"])
        if done.get("error") == "expired":
            # The watchdog released the seat before this charge completed: money back.
            await self.provider.refund(
                order_id=order["id"],
                user_id=user.id,
                amount_cents=order["amount_cents"],
                reason="late_payment",
            )
            raise errors.Expired("the seat was released before the payment completed")
        if "error" in done:
            raise ERRORS.get(done["error"], errors.Conflict)()
        group = done.get("group") or (await self._read_group(terms, order["ref_id"]))
        return _answer(terms, group, done["order"])

    async def _read_group(self, terms: dict[str, Any], group_id: str) -> dict[str, Any]:
        keys_ = group_keys(terms["room_id"], terms["id"])
        raw = await self.engine.atomic("group_read", keys_, [group_id])
        if raw is None:
            raise errors.Conflict("the group is gone")
        return dict(raw["group"])


def _answer(
    terms: dict[str, Any], group: dict[str, Any] | None, order: dict[str, Any]
) -> dict[str, Any]:
    if group is None:
        raise errors.Conflict("the group is gone")
    return {"group": group_public(group, terms), "order": order}


def _order(terms: dict[str, Any], user: Principal, request_id: str, now: int) -> dict[str, Any]:
    return {
        "id": new_id("o"),
        "user_id": user.id,
        "room_id": terms["room_id"],
        "product_id": terms["product_id"],
        "kind": "groupbuy",
        "ref_id": "",  # the group: set by the seat step
        "qty": 1,
        "unit_price_cents": terms["price_cents"],
        "amount_cents": terms["price_cents"],
        "refund_cents": 0,
        "status": "paying",
        "request_id": request_id,
        "created_at": now,
        "updated_at": now,
        "expires_at": None,  # the group's: set by the seat step
    }


def _group(terms: dict[str, Any], user: Principal, now: int) -> dict[str, Any]:
    return {
        "id": new_id("g"),
        "campaign_id": terms["id"],
        "room_id": terms["room_id"],
        "leader": {"id": user.id, "name": user.name},
        "members": [],
        "status": "forming",
        "price_cents": terms["price_cents"],
        "created_at": now,
        "expires_at": now + terms["group_ttl_s"] * 1000,
        "updated_at": now,
    }


def _where(terms: dict[str, Any]) -> dict[str, Any]:
    return {"room_id": terms["room_id"], "campaign_id": terms["id"]}


def _json(value: Any) -> str:
    return jsonutil.dumps(value)
