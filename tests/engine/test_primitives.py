"""Atomic primitives features build on, on both backends."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from livecommerce.engine import Engine, keys
from tests.engine.conftest import MakeNode

# reserve/release touch two keys in one step: they share a hash tag (one cluster slot)
POOL, HOLDS = keys.room_key("r", "pool"), keys.room_key("r", "holds")


async def test_incr_and_get_int(engine: Engine) -> None:
    assert await engine.get_int("k") == 0
    assert await engine.incr("k") == 1
    assert await engine.incr("k", 5) == 6
    assert await engine.incr("k", -2) == 4
    assert await engine.get_int("k") == 4


async def test_kv_set_get_delete_and_ttl(engine: Engine) -> None:
    assert await engine.kv_get("k") is None
    await engine.kv_set("k", "v")
    assert await engine.kv_get("k") == "v"
    assert await engine.kv_delete("k") is True
    assert await engine.kv_delete("k") is False
    await engine.kv_set("t", "v", ttl_ms=100)
    await asyncio.sleep(0.15)
    assert await engine.kv_get("t") is None


async def test_kv_set_nx_respects_ttl(engine: Engine) -> None:
    assert await engine.kv_set_nx("lock", "a", ttl_ms=100) is True
    assert await engine.kv_set_nx("lock", "b", ttl_ms=100) is False
    assert await engine.kv_get("lock") == "a"
    await asyncio.sleep(0.15)
    assert await engine.kv_set_nx("lock", "c") is True
    assert await engine.kv_get("lock") == "c"


async def test_set_operations(engine: Engine) -> None:
    assert await engine.set_add("s", "a") is True
    assert await engine.set_add("s", "a") is False
    assert await engine.set_add("s", "b") is True
    assert await engine.set_has("s", "a") is True
    assert await engine.set_has("s", "z") is False
    assert await engine.set_card("s") == 2
    assert await engine.set_members("s") == {"a", "b"}
    assert await engine.set_remove("s", "a") is True
    assert await engine.set_remove("s", "a") is False
    assert await engine.set_members("s") == {"b"}
    assert await engine.set_members("none") == set()


async def test_ztop_orders_by_score_then_member(engine: Engine) -> None:
    assert await engine.ztop("z", 3) == []
    for member, score in [("d", 2), ("c", 3), ("b", 1.5), ("e", 3), ("a", 3)]:
        await engine.zincr("z", member, score)
    assert await engine.zincr("z", "b", 0.5) == 2.0
    assert await engine.ztop("z", 10) == [("a", 3), ("c", 3), ("e", 3), ("b", 2), ("d", 2)]
    # the cut-off falls inside a tie: the lowest members win it
    assert await engine.ztop("z", 2) == [("a", 3), ("c", 3)]
    assert await engine.ztop("z", 4) == [("a", 3), ("c", 3), ("e", 3), ("b", 2)]
    assert await engine.ztop("z", 0) == []


async def test_remember_returns_the_first_value(engine: Engine) -> None:
    assert await engine.remember("idem", "first", 100) is None
    assert await engine.remember("idem", "second", 100) == "first"
    await asyncio.sleep(0.15)
    assert await engine.remember("idem", "third", 100) is None


async def test_rate_limit_refuses_after_burst(engine: Engine) -> None:
    assert [await engine.rate_limit("rl", 2.0, 3) for _ in range(3)] == [0, 0, 0]
    wait = await engine.rate_limit("rl", 2.0, 3)
    assert 0 < wait <= 500
    assert await engine.rate_limit("other", 2.0, 3) == 0  # buckets are per key
    await asyncio.sleep(wait / 1000 + 0.05)
    assert await engine.rate_limit("rl", 2.0, 3) == 0


async def test_reserve_never_oversells_under_concurrency(make_node: MakeNode) -> None:
    nodes = [await make_node(f"n{i}") for i in range(2)]
    await nodes[0].engine.kv_set(POOL, "37")
    results = await asyncio.gather(
        *(nodes[i % 2].engine.reserve(POOL, HOLDS, f"h{i % 50}", 1, 2) for i in range(200))
    )
    won = Counter(f"h{i % 50}" for i, r in enumerate(results) if r.ok)
    assert sum(won.values()) == 37
    assert max(won.values()) <= 2
    assert all(r.left >= 0 and r.held <= 2 for r in results)
    assert {r.reason for r in results if not r.ok} <= {"sold_out", "limit_exceeded"}
    assert await nodes[0].engine.get_int(POOL) == 0


async def test_reserve_reasons_and_release(engine: Engine) -> None:
    missing = await engine.reserve(keys.room_key("r", "never-set"), HOLDS, "u", 1, 5)
    assert (missing.ok, missing.reason, missing.left) == (False, "sold_out", 0)
    await engine.kv_set(POOL, "5")
    over = await engine.reserve(POOL, HOLDS, "u", 3, 2)
    assert (over.ok, over.reason, over.left, over.held) == (False, "limit_exceeded", 5, 0)
    ok = await engine.reserve(POOL, HOLDS, "u", 2, 2)
    assert (ok.ok, ok.reason, ok.left, ok.held) == (True, None, 3, 2)
    again = await engine.reserve(POOL, HOLDS, "u", 1, 2)
    assert (again.ok, again.reason, again.held) == (False, "limit_exceeded", 2)
    big = await engine.reserve(POOL, HOLDS, "v", 4, 10)
    assert (big.ok, big.reason, big.left) == (False, "sold_out", 3)
    assert await engine.release(POOL, HOLDS, "u", 5) == 2  # never more than held
    assert await engine.release(POOL, HOLDS, "u", 1) == 0
    assert await engine.get_int(POOL) == 5
    with pytest.raises(ValueError):
        await engine.reserve(POOL, HOLDS, "u", 0, 2)


async def test_release_races_give_back_only_what_was_held(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.engine.kv_set(POOL, "10")
    await a.engine.reserve(POOL, HOLDS, "u", 3, 5)
    released = await asyncio.gather(*(n.engine.release(POOL, HOLDS, "u", 2) for n in (a, b, a, b)))
    assert sum(released) == 3
    assert await a.engine.get_int(POOL) == 10


async def test_a_cancelled_call_raises_cancelled_error(engine: Engine) -> None:
    # Python 3.11's asyncio.wait_for (used inside redis-py) can swallow a cancel that
    # races with the reply; the engine must still raise it, or close() hangs.
    for _ in range(300):
        task = asyncio.create_task(engine.incr("k"))
        await asyncio.sleep(random.random() * 0.0005)
        if not task.cancel():
            continue
        with pytest.raises(asyncio.CancelledError):
            await task
