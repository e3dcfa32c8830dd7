"""A flash-sale stampede against real server processes: rooms and sales made over the
API, many buyers firing at once (some retrying), and the invariants checked on the acks
and in SQL. Shared by the single-Redis and the Redis Cluster tests."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, mint_token

ClientFactory = Callable[..., Awaitable[Client]]
#: (user, request_id, qty, ack) for every buy call
Results = list[tuple[str, str, int, dict[str, Any]]]


async def open_room(api: Api, host: str, stock: int) -> tuple[str, str]:
    """A live room with one product: (room id, product id)."""
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Stampede"}))["id"]
    product = {"title": "Phone", "price_cents": 99_900, "stock": stock}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return rid, pid


async def start_sale(
    host_client: Client, rid: str, pid: str, quantity: int, limit: int, hold_s: int = 300
) -> dict[str, Any]:
    terms = {
        "room_id": rid,
        "product_id": pid,
        "price_cents": 9_900,
        "quantity": quantity,
        "per_user_limit": limit,
        "duration_s": 600,
        "hold_s": hold_s,
    }
    return (await host_client.ok("flashsale:create", terms))["sale"]  # type: ignore[no-any-return]


async def sale(
    api: Api, host_client: Client, host: str, quantity: int, limit: int, hold_s: int = 300
) -> tuple[str, dict[str, Any]]:
    """A new live room and a sale in it: (room id, sale)."""
    rid, pid = await open_room(api, host, quantity)
    return rid, await start_sale(host_client, rid, pid, quantity, limit, hold_s)


def sql_orders(db_url: str, sale_id: str) -> list[tuple[str, str, int, str]]:
    path = db_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, user_id, qty, status FROM orders WHERE ref_id = ?", (sale_id,)
        ).fetchall()


async def eventually_sql(
    db_url: str, sale_id: str, want: set[str], timeout: float = 20, paid: set[str] | None = None
) -> list[Any]:
    """The sale's SQL rows once every ``want`` order is there (and every ``paid`` one has
    its paid status: the row and its later status change reach SQL through the order log
    separately), or at the deadline: the caller's assertions then say what is missing."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sql_orders(db_url, sale_id)
        status = {r[0]: r[3] for r in rows}
        settled = all(status.get(oid) == "paid" for oid in paid or ())
        if (want <= status.keys() and settled) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def connect_buyers(
    nodes: list[ServerProcess], client_factory: ClientFactory, n: int, tag: str
) -> list[tuple[str, Client]]:
    async def one(i: int) -> tuple[str, Client]:
        user_id = f"u_{tag}_{i}"
        client = await client_factory(nodes[i % len(nodes)].url, mint_token(user_id, f"buyer {i}"))
        return user_id, client

    buyers: list[tuple[str, Client]] = []
    for start in range(0, n, 100):  # connect in waves so the accept queue never overflows
        buyers += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    return buyers


async def stampede(
    buyers: list[tuple[str, Client]], sale_id: str, limit: int, rng: random.Random
) -> Results:
    """Every buyer fires 1-3 buys at once (qty 1..limit); a fifth of them also retries the
    same request_id. Returns (user, request_id, qty, ack) for every call."""
    plan = []
    for user_id, client in buyers:
        for k in range(rng.randint(1, 3)):
            qty = rng.randint(1, limit)
            copies = 2 if rng.random() < 0.2 else 1
            plan += [(user_id, client, f"req-{k}", qty)] * copies
    rng.shuffle(plan)

    async def buy(
        user_id: str, client: Client, rid: str, qty: int
    ) -> tuple[str, str, int, dict[str, Any]]:
        ack = await client.call(
            "flashsale:buy", {"sale_id": sale_id, "qty": qty, "request_id": rid}, timeout=30
        )
        return user_id, rid, qty, ack

    return await asyncio.gather(*(buy(*p) for p in plan))


def check_no_oversell(results: Results, quantity: int, limit: int) -> dict[str, dict[str, Any]]:
    """Sold out exactly, nobody above the limit, a retried request_id answered with its
    original order. Returns the orders by id."""
    orders: dict[str, dict[str, Any]] = {}
    by_request: dict[tuple[str, str], set[str]] = defaultdict(set)
    calls: Counter[tuple[str, str]] = Counter()
    answered: Counter[tuple[str, str]] = Counter()  # calls answered with an order
    for user_id, rid, _qty, ack in results:
        calls[(user_id, rid)] += 1
        if ack.get("ok"):
            order = ack["order"]
            assert order["user_id"] == user_id and order["request_id"] == rid
            orders[order["id"]] = order
            by_request[(user_id, rid)].add(order["id"])
            answered[(user_id, rid)] += 1
        else:
            assert ack_error(ack) in {"sold_out", "limit_exceeded"}, ack
    assert all(len(ids) == 1 for ids in by_request.values()), "a retry made a second order"
    assert all(answered[k] == calls[k] for k in by_request), "a retry was refused its order"
    assert sum(o["qty"] for o in orders.values()) == quantity  # sold out exactly: no oversell
    held: dict[str, int] = defaultdict(int)
    for order in orders.values():
        held[order["user_id"]] += order["qty"]
    assert max(held.values()) <= limit
    return orders
