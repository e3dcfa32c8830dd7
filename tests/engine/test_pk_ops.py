"""PK atomic steps (``engine/lua/pk_*.lua`` and ``memory_pk_ops.py``) on both engines:
crossed invitations claim both rooms once, every phase change happens for one caller only,
and no score lands outside the fight."""

from __future__ import annotations

import asyncio
from typing import Any

from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.pk.service import pk_keys


async def _invite(engine: Engine, pk: str, a: str, b: str, lapse_in: int = 30_000) -> Any:
    now = now_ms()
    args = [pk, a, b, "likes", 60_000, 5_000, now, now + lapse_in]
    return await engine.atomic("pk_invite", pk_keys(pk, a, b), args)


async def _step(
    engine: Engine, pk: str, a: str, b: str, action: str, now: int | None = None
) -> Any:
    return await engine.atomic("pk_step", pk_keys(pk, a, b), [action, now or now_ms()])


async def _score(engine: Engine, pk: str, room: str, user: str, amount: int, now: int) -> Any:
    top = keys.pk_key(pk, "top", room)
    return await engine.atomic("pk_score", [keys.pk_key(pk), top], [room, user, amount, now])


async def test_crossed_invitations_leave_one_pk(engine: Engine) -> None:
    results = await asyncio.gather(
        *(_invite(engine, f"p{i}", *(("A", "B") if i % 2 else ("B", "A"))) for i in range(20)),
        _invite(engine, "pc", "C", "A"),
    )
    made = [r for r in results if "error" not in r]
    assert len(made) == 1 and made[0]["phase"] == "invited" and made[0]["changed"] is True
    assert all(r["error"] == "busy" for r in results if "error" in r)
    # Whichever invitation won (C's to A may win the race too), its two rooms hold it and
    # the third room holds nothing.
    winner = made[0]["id"]
    holders = {"A", "C"} if winner == "pc" else {"A", "B"}
    for room in "ABC":
        held = await engine.atomic("pk_current", [keys.pk_room(room)], [])
        assert held == {"pk_id": winner if room in holders else None}, room


async def test_accept_races_the_lapse_and_decline_frees_the_rooms(engine: Engine) -> None:
    await _invite(engine, "p1", "A", "B")
    answers = await asyncio.gather(
        _step(engine, "p1", "A", "B", "accept"), _step(engine, "p1", "A", "B", "lapse")
    )
    assert sum(1 for r in answers if r["changed"]) == 1
    phase = (await engine.atomic("pk_get", pk_keys("p1", "A", "B")[:3], []))["phase"]
    assert phase in ("fighting", "lapsed")
    await _invite(engine, "p2", "C", "D", lapse_in=10_000)
    late = await _step(engine, "p2", "C", "D", "accept", now_ms() + 10_000)
    assert late["changed"] is True and late["phase"] == "lapsed"  # too late to accept
    assert (await engine.atomic("pk_current", [keys.pk_room("C")], [])) == {"pk_id": None}
    await _invite(engine, "p3", "E", "F")
    assert (await _step(engine, "p3", "E", "F", "decline"))["phase"] == "declined"
    assert "error" not in await _invite(engine, "p4", "F", "E")  # free again


async def test_scores_count_only_during_the_fight_and_end_settles_once(engine: Engine) -> None:
    await _invite(engine, "p", "A", "B")
    now = now_ms()
    assert (await _score(engine, "p", "A", "u1", 5, now)) == {"counted": False}  # not yet
    started = await _step(engine, "p", "A", "B", "accept", now)
    assert started["phase"] == "fighting" and started["ends_at"] == now + 60_000
    for room, user, amount in [("A", "u1", 5), ("A", "u2", 7), ("A", "u1", 4), ("B", "u3", 3)]:
        assert (await _score(engine, "p", room, user, amount, now + 1))["counted"] is True
    assert (await _score(engine, "p", "X", "u9", 100, now + 1))["counted"] is False
    assert (await _score(engine, "p", "A", "u1", 1, now + 60_000))["counted"] is False
    ends = await asyncio.gather(*(_step(engine, "p", "A", "B", "end", now + 2) for _ in range(10)))
    settled = [r for r in ends if r["changed"]]
    assert len(settled) == 1
    final = settled[0]
    assert (final["phase"], final["score_a"], final["score_b"], final["winner"]) == (
        "punishing",
        16,
        3,
        "A",
    )
    assert final["top_a"] == [["u1", 9], ["u2", 7]] and final["top_b"] == [["u3", 3]]
    assert all(r["score_a"] == 16 and r["score_b"] == 3 for r in ends)  # everyone sees the same
    assert (await _score(engine, "p", "B", "u3", 50, now + 3))["counted"] is False
    assert (await _step(engine, "p", "A", "B", "finish"))["phase"] == "ended"
    assert (await _step(engine, "p", "A", "B", "finish"))["changed"] is False
    assert (await engine.atomic("pk_current", [keys.pk_room("A")], [])) == {"pk_id": None}


async def test_a_tie_has_no_winner(engine: Engine) -> None:
    await _invite(engine, "t", "A", "B")
    await _step(engine, "t", "A", "B", "accept")
    final = await _step(engine, "t", "A", "B", "end")
    assert final["winner"] == "" and final["top_a"] == [] and final["top_b"] == []
