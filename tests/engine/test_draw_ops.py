"""Draw atomic steps (``engine/lua/draw_*.lua`` and ``memory_draw_ops.py``) on both
engines: one open draw per room under a race, no entry accepted after the close, the close
frozen on the first call, and presence expiry deciding who is still in the room."""

from __future__ import annotations

import asyncio
from typing import Any

from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.draws.service import draw_keys


async def _open(engine: Engine, room: str, draw_id: str, ends_at: int) -> dict[str, Any]:
    k = draw_keys(room, draw_id)
    result: dict[str, Any] = await engine.atomic(
        "draw_open", [k["current"], k["state"]], [draw_id, ends_at, 600_000]
    )
    return result


async def _enter(engine: Engine, room: str, draw_id: str, user: str, now: int) -> Any:
    k = draw_keys(room, draw_id)
    return await engine.atomic(
        "draw_enter", [k["state"], k["entrants"], k["names"]], [user, f"name {user}", now]
    )


async def _close(engine: Engine, room: str, draw_id: str, now: int) -> Any:
    k = draw_keys(room, draw_id)
    step = [k["state"], k["entrants"], k["here"], k["names"], k["final"], k["current"]]
    return await engine.atomic("draw_close", step, [now, draw_id])


async def _here(engine: Engine, room: str, draw_id: str, now: int, until: int, *users: str) -> None:
    await engine.atomic("draw_here", [draw_keys(room, draw_id)["here"]], [now, until, *users])


async def test_one_open_draw_per_room_under_a_race(engine: Engine) -> None:
    results = await asyncio.gather(
        *(_open(engine, "r1", f"d{i}", now_ms() + 60_000) for i in range(20))
    )
    winners = [r for r in results if r.get("ok")]
    assert len(winners) == 1
    current = await engine.atomic("draw_current", [draw_keys("r1", "-")["current"]], [])
    busy = {r["draw_id"] for r in results if r.get("error") == "busy"}
    assert busy == {current["draw_id"]} and len(results) - 1 == sum(
        1 for r in results if r.get("error") == "busy"
    )
    assert (await _open(engine, "r2", "other", now_ms() + 60_000)) == {"ok": True}


async def test_entries_counted_once_and_refused_after_the_window_or_close(engine: Engine) -> None:
    now = now_ms()
    await _open(engine, "r", "d", now + 10_000)
    assert await _enter(engine, "r", "d", "u1", now) == {"new": True, "count": 1}
    assert await _enter(engine, "r", "d", "u1", now) == {"new": False, "count": 1}
    assert await _enter(engine, "r", "d", "u2", now) == {"new": True, "count": 2}
    assert await _enter(engine, "r", "d", "u3", now + 10_000) == {"error": "ended"}
    assert await _enter(engine, "r", "nope", "u3", now) == {"error": "not_found"}
    peek = await engine.atomic("draw_peek", [draw_keys("r", "d")["entrants"]], ["u2"])
    assert peek == {"count": 2, "entered": True}
    await _here(engine, "r", "d", now, now + 5000, "u1", "u2")
    await _close(engine, "r", "d", now + 10_000)
    assert await _enter(engine, "r", "d", "u4", now) == {"error": "ended"}


async def test_close_keeps_those_still_here_and_is_frozen_after_the_first_call(
    engine: Engine,
) -> None:
    now = now_ms()
    await _open(engine, "r", "d", now + 1000)
    for user in ("a", "b", "c", "d"):
        await _enter(engine, "r", "d", user, now)
    await _here(engine, "r", "d", now, now + 5000, "a", "b")
    await _here(engine, "r", "d", now, now + 500, "c")  # reported, then stopped: left
    first = await _close(engine, "r", "d", now + 1000)
    assert sorted(first["eligible"]) == ["a", "b"] and first["entered"] == 4
    assert first["names"] == {"a": "name a", "b": "name b"}
    await _here(engine, "r", "d", now + 1000, now + 9000, "c", "d")  # too late to count
    again = await _close(engine, "r", "d", now + 2000)
    assert again == first
    current = await engine.atomic("draw_current", [draw_keys("r", "-")["current"]], [])
    assert current == {"draw_id": None}  # the room is free for the next draw
    assert (await _close(engine, "r", "missing", now)) == {"error": "not_found"}


async def test_empty_close_is_a_list(engine: Engine) -> None:
    now = now_ms()
    await _open(engine, "r", "e", now + 1000)
    assert await _close(engine, "r", "e", now + 1000) == {"eligible": [], "names": {}, "entered": 0}
