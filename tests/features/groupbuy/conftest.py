"""Group-buy fixtures: one in-process node whose shortest group TTL is 1 s, a live room
with a product, and helpers to open, join and wait for settlement."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import AppServer, make_user, start_app
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
PRODUCT_PRICE = 2000
COUPON = 300

_requests = itertools.count(1)


def rid() -> str:
    return f"rq-{next(_requests)}"


@pytest.fixture
async def gb_server(db_url: str) -> AsyncIterator[AppServer]:
    server = await start_app(db_url, groupbuy={"min_ttl_s": 1, "coupon_cents": COUPON})
    yield server
    await server.server.close()


@dataclass
class Shop:
    server: AppServer
    api: Api
    clients: ClientFactory
    host: str  # token
    host_client: Client
    room_id: str
    product_id: str
    members: dict[str, Client] = field(default_factory=dict)

    def terms(self, **over: Any) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "product_id": self.product_id,
            "group_size": 3,
            "price_cents": 1000,
            "group_ttl_s": 600,
            "duration_s": 3600,
            **over,
        }

    async def campaign(self, **over: Any) -> dict[str, Any]:
        ack = await self.host_client.ok("groupbuy:create", self.terms(**over))
        return dict(ack["campaign"])

    async def member(self, name: str) -> Client:
        if name not in self.members:
            token, _ = await self.api.guest(name)
            self.members[name] = await self.clients(self.server.url, token)
        return self.members[name]

    async def open(self, name: str, campaign_id: str) -> dict[str, Any]:
        client = await self.member(name)
        return await client.ok("groupbuy:open", {"campaign_id": campaign_id, "request_id": rid()})

    async def join(self, name: str, group_id: str) -> dict[str, Any]:
        client = await self.member(name)
        return await client.call("groupbuy:join", {"group_id": group_id, "request_id": rid()})

    async def ledger(self, order_id: str) -> list[tuple[str, str, int, str | None]]:
        rows = await self.server.node.payments.ledger.for_order(order_id)
        return [(p.kind, p.status, p.amount_cents, p.reason) for p in rows]


async def make_shop(server: AppServer, api: Api, clients: ClientFactory) -> Shop:
    host = await make_user(server.node, "anchor", "host")
    room_id = (await api.ok("POST", "/api/rooms", host, {"title": "拼团 room"}))["id"]
    product = {"title": "Tea", "price_cents": PRODUCT_PRICE, "stock": 100}
    product_id = (await api.ok("POST", f"/api/rooms/{room_id}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{room_id}/start", host)
    host_client = await clients(server.url, host)
    return Shop(server, api, clients, host, host_client, room_id, product_id)


@pytest.fixture
async def shop(
    gb_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> Shop:
    return await make_shop(gb_server, api_factory(gb_server.url), client_factory)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
