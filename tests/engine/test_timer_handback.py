"""Graceful shutdown of the timers: a stopping node hands its leases back.

Without it a timer whose handler was cut short by a shutdown would wait out its whole
lease (30 s by default) before another node fired it."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from livecommerce.engine.base import now_ms
from tests.engine.conftest import MakeNode
from tests.engine.helpers import eventually

LONG_LEASE = {"timer_lease_s": 60.0}


async def test_stopping_node_hands_unfinished_timers_to_another_at_once(
    make_node: MakeNode,
) -> None:
    leaving = (await make_node("leaving", **LONG_LEASE)).engine
    started: list[str] = []
    finished_on_leaving: list[str] = []

    async def stuck(key: str, _: dict[str, Any]) -> None:
        started.append(key)
        await asyncio.sleep(3600)  # a handler that will not finish before the shutdown
        finished_on_leaving.append(key)

    leaving.on_timer("sale.end", stuck)
    names = [f"s{i}" for i in range(5)]
    for name in names:
        await leaving.schedule("sale.end", name, now_ms())
    await eventually(lambda: sorted(started) == names)

    staying = (await make_node("staying", **LONG_LEASE)).engine
    fired: list[str] = []

    async def record(key: str, _: dict[str, Any]) -> None:
        fired.append(key)

    staying.on_timer("sale.end", record)
    await asyncio.sleep(0.3)
    assert fired == [], "leased timers must not be fired by another node before hand-back"

    began = time.monotonic()
    await leaving.stop_timers(grace_s=0.2)
    await eventually(lambda: sorted(fired) == names, timeout=5)
    assert time.monotonic() - began < 5  # not the 60 s lease
    await asyncio.sleep(0.3)
    assert sorted(fired) == names and finished_on_leaving == []  # each fired once more


async def test_handlers_finishing_within_the_grace_are_not_fired_again(
    make_node: MakeNode,
) -> None:
    rng = random.Random(11)
    leaving = (await make_node("leaving", **LONG_LEASE)).engine
    done: list[str] = []

    async def slow(key: str, _: dict[str, Any]) -> None:
        await asyncio.sleep(rng.uniform(0.05, 0.3))
        done.append(key)

    leaving.on_timer("draw", slow)
    names = [f"d{i}" for i in range(8)]
    for name in names:
        await leaving.schedule("draw", name, now_ms())
    await eventually(lambda: len(leaving._running_timers) == len(names))

    staying = (await make_node("staying", **LONG_LEASE)).engine
    again: list[str] = []

    async def record(key: str, _: dict[str, Any]) -> None:
        again.append(key)

    staying.on_timer("draw", record)
    await leaving.stop_timers(grace_s=2.0)
    assert sorted(done) == names
    await asyncio.sleep(0.5)
    assert again == []  # finished and acknowledged: nothing handed back


async def test_a_stopped_node_claims_nothing_more(make_node: MakeNode) -> None:
    leaving = (await make_node("leaving")).engine
    fired: list[str] = []

    async def record(key: str, _: dict[str, Any]) -> None:
        fired.append(key)

    leaving.on_timer("room.start", record)
    await leaving.stop_timers(grace_s=0.1)
    await leaving.schedule("room.start", "r1", now_ms())
    await asyncio.sleep(0.4)
    assert fired == []
    staying = (await make_node("staying")).engine
    staying.on_timer("room.start", record)
    await eventually(lambda: fired == ["r1"])
