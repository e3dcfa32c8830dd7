"""One contract suite, three backends: every test taking ``engine`` or ``make_node`` runs on
the in-process engine, on a real redis-server and on a real three-master Redis Cluster.

Several nodes of one cluster: ``make_node`` engines share a backend — the same
redis-server or Redis Cluster, or the same :class:`MemoryStore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from livecommerce.engine import Engine
from livecommerce.engine.memory import MemoryEngine, MemoryStore
from livecommerce.engine.redis import RedisEngine
from livecommerce.engine.redis_cluster import RedisClusterEngine
from tests.engine.helpers import Node
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer

#: Short loops so the suite stays fast. online_interval is long so that online-count
#: broadcasts do not consume seqs behind the tests' backs (one test shortens it).
FAST: dict[str, Any] = {
    "presence_ttl_s": 0.5,
    "presence_refresh_s": 0.1,
    "online_interval_s": 3600.0,
    "timer_poll_s": 0.02,
    "timer_lease_s": 30.0,
}

MakeNode = Callable[..., Awaitable[Node]]
#: ``make_node`` params of the Redis-only tests: one server, and a Redis Cluster.
REDIS_BACKENDS = ["redis", "redis-cluster"]
Admin = redis.Redis | redis.RedisCluster


@pytest.fixture(scope="session")
def engine_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own: it gets stopped and restarted."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def engine_redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def admin(request: pytest.FixtureRequest) -> Iterator[Admin]:
    """A plain client of the running test's Redis backend (``make_node``'s param)."""
    client: Admin
    if request.node.callspec.params["make_node"] == "redis-cluster":
        client = request.getfixturevalue("engine_redis_cluster").cluster_client()
    else:
        url = request.getfixturevalue("engine_redis").url
        client = redis.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def make_node(request: pytest.FixtureRequest) -> AsyncIterator[MakeNode]:
    """``await make_node("b", history_size=5)``: a started engine on this test's backend."""
    nodes: list[Node] = []
    store = MemoryStore()
    url = ""
    if request.param == "redis":
        url = request.getfixturevalue("engine_redis").url
        redis.Redis.from_url(url).flushall()
    elif request.param == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("engine_redis_cluster")
        cluster.flushall()
        url = cluster.url

    async def make(node_id: str | None = None, **options: Any) -> Node:
        node_id = node_id or f"node{len(nodes) + 1}"
        engine: Engine
        if request.param == "redis":
            engine = RedisEngine(url, node_id, **{**FAST, **options})
        elif request.param == "redis-cluster":
            engine = RedisClusterEngine(url, node_id, **{**FAST, **options})
        else:
            engine = MemoryEngine(node_id, store=store, **{**FAST, **options})
        node = Node(engine)
        engine.set_sinks(node.on_room, node.on_user)
        await engine.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.engine.close()


@pytest.fixture
async def engine(make_node: MakeNode) -> Engine:
    return (await make_node()).engine
