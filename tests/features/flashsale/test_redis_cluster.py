"""A flash-sale stampede on two real server processes sharing a real three-master Redis
Cluster: the sales' rooms live on different masters (their keys and their sharded pub/sub
channels), buyers on both nodes stampede all of them at once, and the invariants hold as
on one Redis: no oversell, no user above the limit, a retry answered with its original
order, every order in SQL once; room broadcasts cross nodes on every shard."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest

from livecommerce.engine import keys
from tests.features.flashsale import stampede
from tests.features.flashsale.stampede import ClientFactory
from tests.support.client import Api
from tests.support.redis_cluster import RedisCluster
from tests.support.servers import ServerProcess, add_user, mint_token

StartNodes = Callable[[int], Awaitable[list[ServerProcess]]]
ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ApiFactory = Callable[[str], Api]


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def cluster_nodes(redis_cluster: RedisCluster, cluster: ClusterFactory) -> StartNodes:
    """``await cluster_nodes(n)``: n real server processes on the Redis Cluster and one
    SQLite file (the suite's ``cluster`` fixture, pointed at the cluster)."""
    redis_cluster.flushall()

    async def start(n: int) -> list[ServerProcess]:
        env = {"LIVECOMMERCE_REDIS__CLUSTER": "true"}
        return await cluster(n, env=env, redis_url=redis_cluster.url)

    return start


async def test_stampede_on_a_redis_cluster_never_oversells(
    redis_cluster: RedisCluster,
    cluster_nodes: StartNodes,
    db_url: str,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
) -> None:
    nodes = await cluster_nodes(2)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(nodes[0].url)
    host_client = await client_factory(nodes[1].url, host)
    # Rooms until every master serves one: each sale's keys, scripts and room channel
    # then live on a different shard.
    rooms: dict[int, tuple[str, str]] = {}
    while len(rooms) < len(redis_cluster.ports):
        rid, pid = await stampede.open_room(api, host, stock=500)
        rooms.setdefault(redis_cluster.owner(keys.room_channel(rid)), (rid, pid))
    assert sorted(rooms) == sorted(redis_cluster.ports)
    # A watcher of each room on each node: room broadcasts must reach both.
    watchers = {
        rid: [
            await client_factory(node.url, mint_token(f"w_{rid}_{i}", f"watcher {i}"))
            for i, node in enumerate(nodes)
        ]
        for rid, _ in rooms.values()
    }
    for rid, clients in watchers.items():
        for watcher in clients:
            await watcher.ok("room:join", {"room_id": rid})
    buyers = await stampede.connect_buyers(nodes, client_factory, 300, "rc")
    rng = random.Random(20261124)
    plans = [(rid, pid, rng.randint(20, 120), rng.randint(1, 3)) for rid, pid in rooms.values()]
    sales = [
        await stampede.start_sale(host_client, rid, pid, quantity, limit)
        for rid, pid, quantity, limit in plans
    ]

    rushes = [
        stampede.stampede(rng.sample(buyers, 200), sale["id"], limit, rng)
        for sale, (_, _, _, limit) in zip(sales, plans, strict=True)
    ]
    results = await asyncio.gather(*rushes)  # all three sales, all shards, at once

    for sale, (rid, _, quantity, limit), found in zip(sales, plans, results, strict=True):
        retried = Counter((user, request_id) for user, request_id, _, _ in found)
        assert max(retried.values()) > 1  # the rush held retries of one request_id
        orders = stampede.check_no_oversell(found, quantity, limit)
        rows = await stampede.eventually_sql(db_url, sale["id"], set(orders))
        assert {r[0] for r in rows} == set(orders)  # SQL has each order once, nothing else
        assert sum(r[2] for r in rows) == quantity
        # "sold out" is broadcast by whichever node sold the last unit; the watchers on
        # both nodes see it, through the room's shard.
        for watcher in watchers[rid]:
            await watcher.wait_for(
                "flashsale:update",
                lambda data, sid=sale["id"]: (
                    data["sale"]["id"] == sid and data["sale"]["status"] == "sold_out"
                ),
            )
