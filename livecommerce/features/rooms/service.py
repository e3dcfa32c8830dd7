"""The rules of rooms: lifecycle, products, pinning and the join snapshot.

SQL holds what must outlive the engine (rooms, products); the engine holds live state
(pinned product, seq, presence). Other features add their parts of the join snapshot with
:meth:`RoomService.add_snapshot_part`, so this module never learns about flash sales or PKs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from livecommerce import errors
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.rooms.events import RoomEvent
from livecommerce.persistence.models import Room
from livecommerce.persistence.repositories import Orders, Products, Rooms, Users

log = structlog.get_logger(__name__)

START_TIMER = "room.start"
#: Statuses a room may move to, from which.
TRANSITIONS: dict[str, set[str]] = {"live": {"scheduled"}, "ended": {"scheduled", "live"}}

SnapshotPart = Callable[[str, Principal | None], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    host_id: str
    host_name: str
    title: str
    status: str
    stream_url: str | None
    starts_at: int | None
    started_at: int | None
    ended_at: int | None

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "host": {"id": self.host_id, "name": self.host_name},
            "stream_url": self.stream_url,
            "starts_at": self.starts_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class RoomService:
    def __init__(
        self,
        engine: Engine,
        rooms: Rooms,
        products: Products,
        users: Users,
        orders: Orders,
        *,
        cache_ttl_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.products = products
        self.users = users
        self.orders = orders
        self._room_cache: TTLCache[str, RoomInfo | None] = TTLCache(cache_ttl_s)
        self._product_cache: TTLCache[str, list[dict[str, Any]]] = TTLCache(cache_ttl_s)
        self._snapshot_parts: list[SnapshotPart] = []
        engine.on_timer(START_TIMER, self._on_start_timer)

    def add_snapshot_part(self, part: SnapshotPart) -> None:
        """Register a feature's contribution to the ``room:join`` state."""
        self._snapshot_parts.append(part)

    # -- reading ------------------------------------------------------------------------

    async def get(self, room_id: str) -> RoomInfo:
        info = await self._room_cache.get(room_id, lambda: self._load(room_id))
        if info is None:
            raise errors.NotFound("no such room", room_id=room_id)
        return info

    async def _load(self, room_id: str) -> RoomInfo | None:
        room = await self.rooms.get(room_id)
        return None if room is None else await self._info(room)

    async def _info(self, room: Room, host_name: str | None = None) -> RoomInfo:
        if host_name is None:
            host = await self.users.get(room.host_id)
            host_name = host.name if host else ""
        return RoomInfo(
            id=room.id,
            host_id=room.host_id,
            host_name=host_name,
            title=room.title,
            status=room.status,
            stream_url=room.stream_url,
            starts_at=room.starts_at,
            started_at=room.started_at,
            ended_at=room.ended_at,
        )

    async def _public_list(self, rooms: list[Room]) -> list[dict[str, Any]]:
        # One query for every host of the list, not one per room.
        hosts = await self.users.get_many({room.host_id for room in rooms})
        return [
            (await self._info(r, hosts[r.host_id].name if r.host_id in hosts else "")).to_public()
            for r in rooms
        ]

    async def list_live(self) -> list[dict[str, Any]]:
        out = await self._public_list(await self.rooms.list_live())
        for public in out:
            public["online"] = await self.engine.online(public["id"])
        return out

    async def list_hosted(self, host_id: str) -> list[dict[str, Any]]:
        return await self._public_list(await self.rooms.list_by_host(host_id))

    async def products_of(self, room_id: str) -> list[dict[str, Any]]:
        await self.get(room_id)

        async def load() -> list[dict[str, Any]]:
            return [p.to_public() for p in await self.products.list_for_room(room_id)]

        return await self._product_cache.get(room_id, load)

    # -- lifecycle ----------------------------------------------------------------------

    async def create(
        self, host: Principal, title: str, stream_url: str | None, starts_at: int | None
    ) -> dict[str, Any]:
        if starts_at is not None and starts_at <= now_ms():
            raise errors.Invalid("starts_at is in the past", fields={"starts_at": "in the past"})
        room = await self.rooms.create(
            host_id=host.id, title=title, stream_url=stream_url, starts_at=starts_at
        )
        if starts_at is not None:
            await self.engine.schedule(START_TIMER, room.id, starts_at)
        log.info("room_created", room_id=room.id, host_id=host.id)
        return (await self._info(room)).to_public()

    async def start(self, room_id: str) -> dict[str, Any]:
        room = await self._transition(room_id, "live")
        await self.engine.cancel(START_TIMER, room_id)
        return room

    async def end(self, room_id: str) -> dict[str, Any]:
        room = await self._transition(room_id, "ended")
        await self.engine.cancel(START_TIMER, room_id)
        return room

    async def _transition(self, room_id: str, to: str) -> dict[str, Any]:
        current = await self.get(room_id)
        room = await self.rooms.transition(room_id, to, from_=TRANSITIONS[to])
        self._room_cache.invalidate(room_id)
        if room is None:
            fresh = await self.get(room_id)
            if fresh.status == to:  # a retry, or the timer got there first: same outcome
                return fresh.to_public()
            raise errors.Conflict(f"room is {fresh.status}", status=fresh.status)
        await self.engine.publish(room_id, RoomEvent.STATUS, {"status": to})
        log.info("room_status", room_id=room_id, status=to, was=current.status)
        return (await self._info(room)).to_public()

    async def _on_start_timer(self, room_id: str, _payload: dict[str, Any]) -> None:
        # Idempotent: the SQL compare-and-set lets only the first firing publish.
        room = await self.rooms.transition(room_id, "live", from_={"scheduled"})
        self._room_cache.invalidate(room_id)
        if room is not None:
            await self.engine.publish(room_id, RoomEvent.STATUS, {"status": "live"})
            log.info("room_status", room_id=room_id, status="live", by="schedule")

    # -- products and pinning -----------------------------------------------------------

    async def add_product(
        self, room_id: str, title: str, price_cents: int, stock: int, image_url: str | None
    ) -> dict[str, Any]:
        room = await self.get(room_id)
        if room.status == "ended":
            raise errors.Ended("the room has ended")
        product = await self.products.create(
            room_id=room_id, title=title, price_cents=price_cents, stock=stock, image_url=image_url
        )
        self._product_cache.invalidate(room_id)
        return product.to_public()

    async def product(self, room_id: str, product_id: str) -> dict[str, Any]:
        for product in await self.products_of(room_id):
            if product["id"] == product_id:
                return product
        product_row = await self.products.get(product_id)  # maybe newer than the cache
        if product_row is None or product_row.room_id != room_id:
            raise errors.NotFound("no such product in this room", product_id=product_id)
        self._product_cache.invalidate(room_id)
        return product_row.to_public()

    async def pin(self, room_id: str, product_id: str | None) -> dict[str, Any] | None:
        room = await self.get(room_id)
        if room.status == "ended":
            raise errors.Ended("the room has ended")
        product = None if product_id is None else await self.product(room_id, product_id)
        pin_key = keys.room_key(room_id, "pin")
        if product is None:
            await self.engine.kv_delete(pin_key)
        else:
            await self.engine.kv_set(pin_key, product["id"])
        await self.engine.publish(room_id, RoomEvent.PINNED, {"product": product})
        return product

    async def pinned(self, room_id: str) -> dict[str, Any] | None:
        product_id = await self.engine.kv_get(keys.room_key(room_id, "pin"))
        if product_id is None:
            return None
        try:
            return await self.product(room_id, product_id)
        except errors.NotFound:
            return None

    # -- the join snapshot --------------------------------------------------------------

    async def snapshot(self, room_id: str, me: Principal | None) -> dict[str, Any]:
        # seq first: everything at or below it is reflected in what is read afterwards, so
        # a client that drops broadcasts with seq <= state.seq loses nothing.
        seq = await self.engine.last_seq(room_id)
        room = await self.get(room_id)
        state: dict[str, Any] = {
            "room": room.to_public(),
            "server_time": now_ms(),
            "seq": seq,
            "online": await self.engine.online(room_id),
            "likes": 0,
            "pinned_product": await self.pinned(room_id),
            "products": await self.products_of(room_id),
            "flashsales": [],
            "groupbuys": [],
            "draw": None,
            "pk": None,
            "recent_comments": [],
            "me": await self._me(room_id, me),
        }
        for part in self._snapshot_parts:
            extra = await part(room_id, me)
            mine = extra.pop("me", None)
            state.update(extra)
            if mine and state["me"] is not None:
                state["me"].update(mine)
        return state

    async def _me(self, room_id: str, me: Principal | None) -> dict[str, Any] | None:
        if me is None:
            return None
        orders = await self.orders.list_for_user(me.id, room_id=room_id)
        return {**me.to_public(), "muted": False, "orders": [o.to_public() for o in orders]}
