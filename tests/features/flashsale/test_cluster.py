"""Flash-sale invariants across real server processes sharing Redis and SQLite:
no oversell under a stampede, no acknowledged order lost when a node is killed, nothing
reserved while Redis is down and no oversell after it returns."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, add_user, mint_token

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]


async def _sale(
    api: Api, host_client: Client, host: str, quantity: int, limit: int, hold_s: int = 300
) -> tuple[str, dict[str, Any]]:
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Stampede"}))["id"]
    product = {"title": "Phone", "price_cents": 99_900, "stock": quantity}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    terms = {
        "room_id": rid,
        "product_id": pid,
        "price_cents": 9_900,
        "quantity": quantity,
        "per_user_limit": limit,
        "duration_s": 600,
        "hold_s": hold_s,
    }
    return rid, (await host_client.ok("flashsale:create", terms))["sale"]


def _sql_orders(db_url: str, sale_id: str) -> list[tuple[str, str, int, str]]:
    path = db_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, user_id, qty, status FROM orders WHERE ref_id = ?", (sale_id,)
        ).fetchall()


async def _eventually_sql(
    db_url: str, sale_id: str, want: set[str], timeout: float = 20
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _sql_orders(db_url, sale_id)
        if want <= {r[0] for r in rows} or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def _connect_buyers(
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


async def _stampede(
    buyers: list[tuple[str, Client]], sale_id: str, limit: int, rng: random.Random
) -> list[tuple[str, str, int, dict[str, Any]]]:
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


def _check_no_oversell(
    results: list[tuple[str, str, int, dict[str, Any]]], quantity: int, limit: int
) -> dict[str, dict[str, Any]]:
    orders: dict[str, dict[str, Any]] = {}
    by_request: dict[tuple[str, str], set[str]] = defaultdict(set)
    for user_id, rid, _qty, ack in results:
        if ack.get("ok"):
            order = ack["order"]
            assert order["user_id"] == user_id and order["request_id"] == rid
            orders[order["id"]] = order
            by_request[(user_id, rid)].add(order["id"])
        else:
            assert ack_error(ack) in {"sold_out", "limit_exceeded"}, ack
    assert all(len(ids) == 1 for ids in by_request.values()), "a retry made a second order"
    assert sum(o["qty"] for o in orders.values()) == quantity  # sold out exactly: no oversell
    held: dict[str, int] = defaultdict(int)
    for order in orders.values():
        held[order["user_id"]] += order["qty"]
    assert max(held.values()) <= limit
    return orders


async def test_stampede_on_two_nodes_never_oversells(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(nodes[0].url)
    host_client = await client_factory(nodes[1].url, host)
    buyers = await _connect_buyers(nodes, client_factory, 1000, "s")
    rng = random.Random(20261123)
    # The case first, then random ones: (buyers, units, per-user limit).
    rounds = [(1000, 50, 2)] + [
        (rng.randint(150, 600), rng.randint(5, 120), rng.randint(1, 3)) for _ in range(3)
    ]
    for n, quantity, limit in rounds:
        _, sale = await _sale(api, host_client, host, quantity, limit)
        results = await _stampede(rng.sample(buyers, n), sale["id"], limit, rng)
        orders = _check_no_oversell(results, quantity, limit)
        rows = await _eventually_sql(db_url, sale["id"], set(orders))
        assert {r[0] for r in rows} == set(orders)  # SQL has each order once, nothing else
        assert sum(r[2] for r in rows) == quantity


async def test_killed_node_loses_no_acknowledged_order(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(node_b.url)
    host_client = await client_factory(node_b.url, host)
    quantity = 150
    _, sale = await _sale(api, host_client, host, quantity, 1)
    buyers = await _connect_buyers([node_a, node_b], client_factory, 400, "k")
    acked: dict[str, dict[str, Any]] = {}

    async def buy(user_id: str, client: Client) -> None:
        try:
            ack = await client.call(
                "flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}, timeout=10
            )
        except Exception:  # its node was killed under it: no ack, no promise
            return
        if ack.get("ok"):
            acked[ack["order"]["id"]] = ack["order"]

    async def killer() -> None:
        while len(acked) < 40:  # noqa: ASYNC110 - polls a dict the buyers fill
            await asyncio.sleep(0.001)
        node_a.kill()

    await asyncio.gather(killer(), *(buy(u, c) for u, c in buyers))
    assert 40 <= len(acked) <= quantity
    # The survivor claims what the dead node read but never wrote (after the claim idle).
    rows = await _eventually_sql(db_url, sale["id"], set(acked), timeout=30)
    ids = [r[0] for r in rows]
    assert set(acked) <= set(ids), f"lost {len(set(acked) - set(ids))} acknowledged orders"
    assert len(ids) == len(set(ids))
    assert sum(r[2] for r in rows if r[3] in ("reserved", "paid")) <= quantity
    status, _ = await api.request("GET", "/readyz")
    assert status == 200


async def test_redis_restart_mid_sale(
    tmp_path: Path, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    from livecommerce.persistence.migrate import migrate

    redis_server = RedisServer(durable=True)
    redis_server.start()
    node = ServerProcess("solo", db_url, redis_server.url, tmp_path)
    try:
        await migrate(db_url)
        await node.start()
        host = await add_user(db_url, "anchor", "host")
        api = api_factory(node.url)
        host_client = await client_factory(node.url, host)
        quantity = 60
        _, sale = await _sale(api, host_client, host, quantity, 1)
        buyers = await _connect_buyers([node], client_factory, 120, "r")
        acked: dict[str, dict[str, Any]] = {}

        async def buy(batch: list[tuple[str, Client]]) -> list[dict[str, Any]]:
            acks = await asyncio.gather(
                *(
                    c.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"})
                    for _, c in batch
                )
            )
            for ack in acks:
                if ack.get("ok"):
                    acked[ack["order"]["id"]] = ack["order"]
            return acks

        await buy(buyers[:30])
        redis_server.stop()
        down = await buy(buyers[30:60])
        assert {ack_error(a) for a in down} == {"unavailable"}  # nothing reserved meanwhile
        redis_server.restart()
        for _ in range(100):
            if (await api.request("GET", "/readyz"))[0] == 200:
                break
            await asyncio.sleep(0.1)
        await buy(buyers)  # everyone again: the first 30 get their original order back
        assert len(acked) == quantity  # sold out exactly, no oversell after the restart
        rows = await _eventually_sql(db_url, sale["id"], set(acked))
        assert {r[0] for r in rows} == set(acked)
    finally:
        node.stop()
        redis_server.close()
