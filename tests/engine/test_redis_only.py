"""Redis-only: the store going away and coming back, the pub/sub connection dropping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from livecommerce.engine.base import now_ms
from livecommerce.engine.redis import RedisEngine
from livecommerce.errors import Unavailable
from tests.engine.conftest import FAST
from tests.engine.helpers import Node, eventually, eventually_equal
from tests.support.redis_server import RedisServer

MakeRedisNode = Callable[[str], Awaitable[Node]]


@pytest.fixture
async def redis_node(own_redis: RedisServer) -> AsyncIterator[MakeRedisNode]:
    nodes: list[Node] = []

    async def make(node_id: str) -> Node:
        node = Node(RedisEngine(own_redis.url, node_id, **FAST))
        node.engine.set_sinks(node.on_room, node.on_user)
        await node.engine.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.engine.close()


def down_calls(engine: RedisEngine) -> list[Awaitable[Any]]:
    return [
        engine.incr("k"),
        engine.kv_get("k"),
        engine.kv_set_nx("k", "v", 100),
        engine.set_add("s", "m"),
        engine.zincr("z", "m", 1),
        engine.remember("idem", "v", 1000),
        engine.rate_limit("rl", 1, 1),
        engine.reserve("pool", "holds", "u", 1, 1),
        engine.publish("r", "comment", {}),
        engine.publish_if_changed("r", "online:count", "online", 1),
        engine.replay("r", 0),
        engine.online("r"),
        engine.send_to_user("u", "x", {}),
        engine.schedule("k", "x", now_ms()),
        engine.cancel("k", "x"),
        engine.room_local_join("new-room"),
    ]


async def test_redis_down_raises_unavailable_and_recovers(
    own_redis: RedisServer, redis_node: MakeRedisNode
) -> None:
    a, b = await redis_node("a"), await redis_node("b")
    await b.engine.room_local_join("r")
    await b.engine.user_local_join("u")
    await a.engine.publish("r", "comment", {"n": "before"})
    await eventually(lambda: len(b.broadcasts) == 1)

    own_redis.stop()
    assert await a.engine.ping() is False
    for call in down_calls(a.engine):  # type: ignore[arg-type]
        with pytest.raises(Unavailable):
            await call
    assert "new-room" not in a.engine.local_rooms()

    own_redis.restart()  # same port, data lost
    await eventually_equal(a.engine.ping, True, timeout=5)
    assert await a.engine.incr("k") == 1

    async def publish_until_received() -> bool:
        await a.engine.publish("r", "comment", {"n": "after"})
        await a.engine.send_to_user("u", "note", {})
        await asyncio.sleep(0.05)
        return any(m.payload["n"] == "after" for m in b.broadcasts) and len(b.private) > 0

    # b's listener reconnects with backoff and re-subscribes "r" and "u" on its own
    await eventually_equal(publish_until_received, True, timeout=8)
    after = [m.seq for m in b.broadcasts if m.payload["n"] == "after"]
    assert after == sorted(after) and len(after) == len(set(after))


async def test_dropped_pubsub_connection_is_backfilled_in_order(
    own_redis: RedisServer, redis_node: MakeRedisNode
) -> None:
    a, b = await redis_node("a"), await redis_node("b")
    await b.engine.room_local_join("r")
    await a.engine.publish("r", "comment", {"n": 0})
    await eventually(lambda: len(b.broadcasts) == 1)

    admin = redis.Redis.from_url(own_redis.url)
    assert admin.client_kill_filter(_type="pubsub") >= 1
    admin.close()
    # b's listener waits >= 0.1 s before reconnecting: these land in the gap
    for n in range(1, 21):
        await a.engine.publish("r", "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) >= 21)
    for n in range(21, 31):
        await a.engine.publish("r", "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) >= 31)
    await asyncio.sleep(0.1)
    assert b.seqs("r") == list(range(1, 32))
    assert [m.payload["n"] for m in b.broadcasts] == list(range(31))


async def test_start_with_redis_down_then_up(own_redis: RedisServer) -> None:
    own_redis.stop()
    engine = RedisEngine(own_redis.url, "late", **FAST)
    node = Node(engine)
    engine.set_sinks(node.on_room, node.on_user)
    await engine.start()  # not fatal: readiness is ping()
    try:
        assert await engine.ping() is False
        with pytest.raises(Unavailable):
            await engine.room_local_join("r")
        own_redis.start()
        await eventually_equal(engine.ping, True, timeout=5)
        await engine.room_local_join("r")
        await engine.publish("r", "comment", {})
        await eventually(lambda: node.seqs("r") == [1], timeout=5)
    finally:
        await engine.close()


async def test_join_returns_only_after_redis_confirmed_the_subscription(
    redis_node: MakeRedisNode,
) -> None:
    a, b = await redis_node("a"), await redis_node("b")
    handle = b.engine._on_bus_message

    async def slow_confirmations(message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":
            await asyncio.sleep(0.3)
        await handle(message)

    b.engine._on_bus_message = slow_confirmations  # type: ignore[method-assign]
    started = asyncio.get_running_loop().time()
    await b.engine.room_local_join("r")
    assert asyncio.get_running_loop().time() - started >= 0.25
    await a.engine.publish("r", "comment", {})
    await eventually(lambda: b.seqs("r") == [1])


async def test_backfill_overlapping_live_messages_delivers_each_once(
    own_redis: RedisServer, redis_node: MakeRedisNode
) -> None:
    a, b = await redis_node("a"), await redis_node("b")
    await b.engine.room_local_join("r")
    replay = b.engine._replay

    async def slow_replay(room_id: str, since_seq: int) -> Any:
        await asyncio.sleep(0.2)  # live messages keep arriving after the re-subscribe
        return await replay(room_id, since_seq)

    b.engine._replay = slow_replay  # type: ignore[method-assign]
    admin = redis.Redis.from_url(own_redis.url)
    assert admin.client_kill_filter(_type="pubsub") >= 1
    admin.close()
    for _ in range(60):  # spans the gap, the delayed back-fill and after it
        await a.engine.publish("r", "comment", {})
        await asyncio.sleep(0.01)
    await eventually(lambda: len(b.broadcasts) >= 60)
    await asyncio.sleep(0.1)
    assert b.seqs("r") == list(range(1, 61))
