"""Flash-sale invariants across real server processes sharing Redis and SQLite:
no oversell under a stampede, no acknowledged order lost when a node is killed, nothing
reserved while Redis is down and no oversell after it returns."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.conftest import ack_error
from tests.features.flashsale import stampede
from tests.features.flashsale.stampede import ClientFactory
from tests.support.client import Api, Client
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, add_user

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ApiFactory = Callable[[str], Api]


async def test_stampede_on_two_nodes_never_oversells(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(nodes[0].url)
    host_client = await client_factory(nodes[1].url, host)
    buyers = await stampede.connect_buyers(nodes, client_factory, 1000, "s")
    rng = random.Random(20261123)
    # The case first, then random ones: (buyers, units, per-user limit).
    rounds = [(1000, 50, 2)] + [
        (rng.randint(150, 600), rng.randint(5, 120), rng.randint(1, 3)) for _ in range(3)
    ]
    for n, quantity, limit in rounds:
        _, sale = await stampede.sale(api, host_client, host, quantity, limit)
        results = await stampede.stampede(rng.sample(buyers, n), sale["id"], limit, rng)
        orders = stampede.check_no_oversell(results, quantity, limit)
        rows = await stampede.eventually_sql(db_url, sale["id"], set(orders))
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
    _, sale = await stampede.sale(api, host_client, host, quantity, 1)
    buyers = await stampede.connect_buyers([node_a, node_b], client_factory, 400, "k")
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
    rows = await stampede.eventually_sql(db_url, sale["id"], set(acked), timeout=30)
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
        _, sale = await stampede.sale(api, host_client, host, quantity, 1)
        buyers = await stampede.connect_buyers([node], client_factory, 120, "r")
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
        rows = await stampede.eventually_sql(db_url, sale["id"], set(acked))
        assert {r[0] for r in rows} == set(acked)
    finally:
        node.stop()
        redis_server.close()
