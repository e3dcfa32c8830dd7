"""Timers: at-least-once, exactly once barring a handler outliving its lease."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from livecommerce.engine.base import DUE_KEY, now_ms
from tests.engine.conftest import MakeNode
from tests.engine.helpers import eventually


async def test_timer_fires_once_at_due_time(make_node: MakeNode) -> None:
    engine = (await make_node()).engine
    fired: list[tuple[str, dict[str, Any], int]] = []

    async def handler(key: str, payload: dict[str, Any]) -> None:
        fired.append((key, payload, now_ms()))

    engine.on_timer("room.start", handler)
    due = now_ms() + 300
    await engine.schedule("room.start", "r1", due, {"x": 1})
    await eventually(lambda: len(fired) == 1)
    await asyncio.sleep(0.2)
    assert [(k, p) for k, p, _ in fired] == [("r1", {"x": 1})]
    assert due <= fired[0][2] < due + 300
    assert engine.timers_fired == 1
    assert await engine.cancel("room.start", "r1") is False  # acked and gone


async def test_cancel_prevents_firing(make_node: MakeNode) -> None:
    engine = (await make_node()).engine
    fired: list[str] = []

    async def handler(key: str, payload: dict[str, Any]) -> None:
        fired.append(key)

    engine.on_timer("draw", handler)
    await engine.schedule("draw", "d1", now_ms() + 150)
    await engine.schedule("draw", "d2", now_ms() + 150)
    assert await engine.cancel("draw", "d1") is True
    assert await engine.cancel("draw", "d1") is False
    await eventually(lambda: fired == ["d2"])
    await asyncio.sleep(0.2)
    assert fired == ["d2"]


async def test_reschedule_replaces(make_node: MakeNode) -> None:
    engine = (await make_node()).engine
    fired: list[dict[str, Any]] = []

    async def handler(key: str, payload: dict[str, Any]) -> None:
        fired.append(payload)

    engine.on_timer("sale.end", handler)
    await engine.schedule("sale.end", "s", now_ms() + 60_000, {"v": 1})
    await engine.schedule("sale.end", "s", now_ms() + 100, {"v": 2})
    await eventually(lambda: len(fired) == 1)
    await asyncio.sleep(0.2)
    assert fired == [{"v": 2}]
    assert await engine.cancel("sale.end", "s") is False  # the first one is gone too


async def test_failing_handler_is_retried_after_the_lease(make_node: MakeNode) -> None:
    engine = (await make_node(timer_lease_s=0.3)).engine
    calls: list[float] = []

    async def handler(key: str, payload: dict[str, Any]) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom")

    engine.on_timer("pk.end", handler)
    await engine.schedule("pk.end", "p", now_ms())
    await eventually(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.25
    await asyncio.sleep(0.5)
    assert len(calls) == 2  # the successful run acked it


async def test_many_nodes_fire_each_timer_exactly_once(make_node: MakeNode) -> None:
    nodes = [await make_node(f"n{i}") for i in range(3)]
    fired: Counter[str] = Counter()
    by_node: Counter[str] = Counter()

    def handler_for(node_id: str) -> Any:
        async def handler(key: str, payload: dict[str, Any]) -> None:
            fired[key] += 1
            by_node[node_id] += 1
            await asyncio.sleep(0.01)  # let the other nodes poll meanwhile

        return handler

    due = now_ms() + 200
    for i in range(50):
        await nodes[0].engine.schedule("group.expire", f"g{i}", due)
    for node in nodes:
        node.engine.on_timer("group.expire", handler_for(node.engine.node_id))
    await eventually(lambda: len(fired) == 50)
    await asyncio.sleep(0.3)
    assert set(fired.values()) == {1}
    assert sum(n.engine.timers_fired for n in nodes) == 50


async def test_a_dead_claimer_lease_lapses_and_another_node_fires(make_node: MakeNode) -> None:
    dead = (await make_node("dead")).engine
    alive = (await make_node("alive", timer_lease_s=0.3)).engine
    await dead.schedule("room.end", "r", now_ms())
    claimed = await dead._timer_claim(now_ms(), 300, 10)  # claimed, then "crashed"
    claimed_at = time.monotonic()
    assert [t.name for t in claimed] == ["room.end:r"]
    fired: list[float] = []

    async def handler(key: str, payload: dict[str, Any]) -> None:
        fired.append(time.monotonic())

    alive.on_timer("room.end", handler)
    await eventually(lambda: len(fired) == 1)
    assert fired[0] - claimed_at >= 0.25
    await asyncio.sleep(0.5)
    assert len(fired) == 1


async def test_stale_ack_leaves_a_reclaimed_or_rescheduled_timer(make_node: MakeNode) -> None:
    a, b = (await make_node("a")).engine, (await make_node("b")).engine
    due = now_ms() - 1000
    await a.schedule("k", "x", due, {"n": 1})
    first = await a._timer_claim(now_ms(), 10, 10)
    assert await a._timer_claim(now_ms(), 10, 10) == []  # leased
    await asyncio.sleep(0.05)
    second = await b._timer_claim(now_ms(), 60_000, 10)  # the lease lapsed
    assert [t.payload for t in second] == [{"n": 1, DUE_KEY: due}]  # stored with its due time
    assert first[0].token != second[0].token
    await a._timer_done("k:x", first[0].token)  # stale: ignored
    assert await a.cancel("k", "x") is True
    await a.schedule("k", "y", now_ms() - 1000)
    claim = await a._timer_claim(now_ms(), 60_000, 10)
    await a.schedule("k", "y", due, {"n": 2})  # re-scheduled while running
    await a._timer_done("k:y", claim[0].token)  # the old run's ack must not delete it
    again = await b._timer_claim(now_ms(), 60_000, 10)
    assert [(t.name, t.payload) for t in again] == [("k:y", {"n": 2, DUE_KEY: due})]


async def test_a_handler_slower_than_its_lease_still_fires_once(make_node: MakeNode) -> None:
    """The claimant renews its lease while its handler runs (a slow database under load),
    so other nodes polling meanwhile never fire it a second time."""
    nodes = [await make_node(f"slow{i}", timer_lease_s=0.3) for i in range(3)]
    started: Counter[str] = Counter()

    async def slow(key: str, payload: dict[str, Any]) -> None:
        started[key] += 1
        await asyncio.sleep(1.2)  # four leases long

    for node in nodes:
        node.engine.on_timer("pk.settle", slow)
    await nodes[0].engine.schedule("pk.settle", "p1", now_ms() + 100)
    await eventually(lambda: sum(n.engine.timers_fired for n in nodes) == 1, timeout=5)
    await asyncio.sleep(0.6)  # two more leases: a lost lease would have re-fired by now
    assert started == Counter({"p1": 1})
    assert sum(n.engine.timers_fired for n in nodes) == 1
