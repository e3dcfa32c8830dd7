"""Auto-pipelining (engine/redis_autopipe.py) on a real redis-server: concurrent calls are
coalesced into few pipelines, and each caller still gets exactly its own reply or error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from livecommerce.engine.base import Reservation
from livecommerce.engine.redis import RedisEngine
from livecommerce.engine.redis_autopipe import AutoPipelineRedis
from livecommerce.errors import Unavailable
from tests.engine.conftest import FAST
from tests.engine.helpers import eventually
from tests.support.redis_server import RedisServer

#: No background loop issues commands during a test (they would join its batches).
QUIET: dict[str, Any] = {**FAST, "timer_poll_s": 3600.0, "presence_refresh_s": 3600.0}


async def started(url: str) -> RedisEngine:
    engine = RedisEngine(url, "autopipe", **QUIET)
    await engine.start()
    await engine.ping()  # a first connection, and the loops' first commands, out of the way
    await asyncio.sleep(0.05)
    return engine


@pytest.fixture
async def engine(engine_redis: RedisServer) -> AsyncIterator[RedisEngine]:
    redis.Redis.from_url(engine_redis.url).flushall()
    engine = await started(engine_redis.url)
    yield engine
    await engine.close()


async def next_iterations(check: Callable[[], bool]) -> None:
    """Step the event loop one iteration at a time until ``check()``."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met in 100 iterations")


def client(engine: RedisEngine) -> AutoPipelineRedis:
    assert isinstance(engine._redis, AutoPipelineRedis)
    return engine._redis


async def test_concurrent_calls_get_their_own_replies_in_few_pipelines(
    engine: RedisEngine,
) -> None:
    for i in range(100):
        await engine.kv_set(f"k{i}", f"v{i}")
        if i % 2:
            await engine.remember(f"idem{i}", f"before{i}", 10_000)
    # every script loaded already: no NOSCRIPT round trips below
    await engine.reserve("pool", "warm", "u", 1, 1)
    await engine.atomic("sale_get", ["{room:r}:sale:x"], [])
    await engine.kv_set("pool", "1000")
    before = client(engine).batches_sent
    calls: list[Any] = []
    expected: list[Any] = []
    for i in range(100):
        calls += [
            engine.kv_get(f"k{i}"),
            engine.incr(f"n{i}", i + 1),
            engine.kv_set_nx(f"k{i}" if i % 2 else f"new{i}", "x"),
            engine.remember(f"idem{i}", f"first{i}", 10_000),
            engine.reserve("pool", "holds", f"u{i}", 1, 1),
            engine.atomic("sale_get", [f"{{room:r}}:sale:{i}"], []),
            client(engine).set(f"raw{i}", "1"),  # SET's reply callback still applies
        ]
        first = f"before{i}" if i % 2 else None
        expected += [f"v{i}", i + 1, i % 2 == 0, first, True, None, True]
    results = await asyncio.gather(*calls)
    sent = client(engine).batches_sent - before

    reservations = results[4::7]
    results[4::7] = [r.ok for r in reservations]
    assert results == expected
    assert sorted(r.left for r in reservations) == list(range(900, 1000))
    assert await engine.get_int("pool") == 900
    # 700 calls went out in one event-loop iteration's worth of pipelines (<= 512 each)
    assert sent <= 3, sent


async def test_a_script_error_reaches_only_its_caller(engine: RedisEngine) -> None:
    await engine.kv_set("pool", "50")
    await engine.set_add("not-a-pool", "x")  # a set: the script's GET fails (WRONGTYPE)
    calls = [engine.reserve("pool", "holds", f"u{i}", 1, 1) for i in range(100)]
    calls.insert(37, engine.reserve("not-a-pool", "holds", "bad", 1, 1))
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = results.pop(37)
    assert isinstance(failed, ResponseError) and "WRONGTYPE" in str(failed)
    assert all(isinstance(r, Reservation) for r in results)
    assert sum(1 for r in results if isinstance(r, Reservation) and r.ok) == 50


async def test_scripts_reload_after_script_flush(
    engine: RedisEngine, engine_redis: RedisServer
) -> None:
    await engine.kv_set("pool", "1000")
    await engine.reserve("pool", "holds", "warm", 1, 1)  # the script is loaded
    admin = redis.Redis.from_url(engine_redis.url)
    admin.script_flush()
    admin.close()
    calls = [engine.reserve("pool", "holds", f"u{i}", 1, 1) for i in range(300)]
    calls += [engine.remember(f"idem{i}", "v", 10_000) for i in range(300)]
    results = await asyncio.gather(*calls)
    assert all(r.ok for r in results[:300])
    assert results[300:] == [None] * 300
    assert await engine.get_int("pool") == 1000 - 301


async def test_redis_stopped_mid_batch_fails_every_waiter(own_redis: RedisServer) -> None:
    engine = await started(own_redis.url)
    try:
        await engine.kv_set("pool", "10000")
        admin = redis.Redis.from_url(own_redis.url)
        admin.client_pause(10_000)  # the batch reaches Redis and waits there
        admin.close()
        tasks = [
            asyncio.ensure_future(engine.reserve("pool", "holds", f"u{i}", 1, 1))
            for i in range(1000)
        ]
        tasks += [asyncio.ensure_future(engine.incr("n")) for _ in range(1000)]
        await eventually(lambda: client(engine).commands_sent >= 2000 + 2)  # + warm-up
        await asyncio.sleep(0.05)
        own_redis.kill()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results), {type(r) for r in results}
        own_redis.start()
        assert await engine.incr("n") == 1  # the client works again (Redis lost its data)
    finally:
        await engine.close()


async def test_a_cancelled_waiter_leaves_the_others_intact(engine: RedisEngine) -> None:
    tasks = [asyncio.ensure_future(engine.incr(f"n{i}", i + 1)) for i in range(100)]
    await asyncio.sleep(0)  # every call is queued, the batch not yet sent
    tasks[10].cancel()  # dropped from the batch: never runs
    before = client(engine).batches_sent
    await next_iterations(lambda: client(engine).batches_sent > before)
    tasks[20].cancel()  # already sent: runs, its reply is read and dropped
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[10], asyncio.CancelledError)
    assert isinstance(results[20], asyncio.CancelledError)
    others = [r for i, r in enumerate(results) if i not in (10, 20)]
    assert others == [i + 1 for i in range(100) if i not in (10, 20)]
    assert await engine.get_int("n10") == 0
    assert await engine.get_int("n20") == 21
    assert await engine.incr("n5", 1) == 7  # the connection is still in step


async def test_no_oversell_in_a_stampede(engine: RedisEngine) -> None:
    await engine.reserve("other", "holds", "u", 1, 1)  # the script is loaded
    await engine.kv_set("pool", "100")
    before = client(engine).batches_sent
    results = await asyncio.gather(
        *(engine.reserve("pool", "holds", f"u{i}", 1, 1) for i in range(2000))
    )
    assert client(engine).batches_sent - before == 4  # 2,000 calls, <= 512 per pipeline
    assert sum(1 for r in results if r.ok) == 100
    assert {r.reason for r in results if not r.ok} == {"sold_out"}
    assert await engine.get_int("pool") == 0
