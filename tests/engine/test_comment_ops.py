"""Comment atomic steps (``engine/lua/comment_*.lua``, ``keyword_top.lua`` and their twins in
``memory_comment_ops.py``): one contract, both backends.

The keys and arguments mirror ``features/comments/service.py`` (``_gate``, ``_record``,
``rules``, ``recent``, ``muted_until``, ``keywords``) and ``features/moderation/service.py``
(mute, unmute, delete, banned words, slow mode); the key helpers come from service.py so
every key shares the room's hash tag.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from livecommerce import jsonutil
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.engine.memory import MemoryEngine
from livecommerce.engine.redis import RedisEngine
from livecommerce.features.comments.service import (
    COMMENT_LOG,
    IDEMPOTENCY_TTL_MS,
    keyword_key,
    log_key,
    mute_key,
    recent_key,
    settings_key,
)
from tests.engine.conftest import FAST, MakeNode
from tests.support.redis_server import RedisServer

#: No background consumption of logs (the log loop shares timer_poll_s): tests drain.
QUIET: dict[str, Any] = {"timer_poll_s": 3600.0}
#: (rate per s, burst) of a bucket that never runs dry in the tests not about it.
Limit = tuple[float, int]
LOOSE: Limit = (1000.0, 1000)
#: A bucket that does not refill within a test (one token per ~17 minutes).
NO_REFILL = 0.001
KW_TTL_MS = 60_000

Verdict = dict[str, Any]

_ids = itertools.count(1)


def gate_keys(room: str, user: str, request_id: str | None) -> list[str]:
    return [
        keys.idempotency(room, user, "comment", request_id or "-"),
        mute_key(room, user),
        settings_key(room),
        keys.room_key(room, "slow", user),
        keys.room_key(room, "rl", "comment", user),
        keys.room_key(room, "draw", "current"),
    ]


async def gate(
    engine: Engine,
    user: str = "u1",
    request_id: str | None = None,
    *,
    room: str = "r1",
    comment_id: str | None = None,
    exempt: bool = False,
    limit: Limit = LOOSE,
    idem_ttl_ms: int = IDEMPOTENCY_TTL_MS,
) -> Verdict:
    """One ``comment_gate`` as ``CommentService._gate`` sends it (fresh comment id each)."""
    args = [
        comment_id or f"c{next(_ids)}",
        idem_ttl_ms,
        "1" if exempt else "0",
        *limit,
        "1" if request_id else "0",
    ]
    result: Verdict = await engine.atomic("comment_gate", gate_keys(room, user, request_id), args)
    return result


async def mute(engine: Engine, until: int, ttl_ms: int, user: str = "u1", room: str = "r1") -> int:
    """``comment_mute``: ttl_ms > 0 sets, 0 unmutes, -1 only reads. The until in force."""
    result = await engine.atomic("comment_mute", [mute_key(room, user)], [until, ttl_ms])
    assert set(result) == {"until"}
    return int(result["until"])


async def settings(engine: Engine, *args: Any, room: str = "r1") -> dict[str, Any]:
    result: dict[str, Any] = await engine.atomic(
        "comment_settings", [settings_key(room)], list(args)
    )
    return result


async def edit_words(
    engine: Engine, add: Sequence[str] = (), remove: Sequence[str] = (), room: str = "r1"
) -> dict[str, Any]:
    return await settings(engine, "words", len(add), *add, *remove, room=room)


def item(comment_id: str, text: str = "hi") -> dict[str, Any]:
    return {"id": comment_id, "user": {"id": "u1", "name": "U", "role": "viewer"}, "text": text}


async def record(
    engine: Engine,
    items: list[dict[str, Any]],
    words: dict[str, float] | None = None,
    *,
    room: str = "r1",
    cap: int = 5,
    minute: int = 0,
    ttl_ms: int = KW_TTL_MS,
    log_json: str | None = None,
) -> Any:
    """One ``comment_record`` as ``CommentService._record`` sends it."""
    step_keys = [recent_key(room), log_key(room), keyword_key(room, minute)]
    log_json = log_json or jsonutil.dumps({"room_id": room, "items": items})
    args: list[Any] = [cap, ttl_ms, log_json, len(items), *(jsonutil.dumps(i) for i in items)]
    for word, count in (words or {}).items():
        args += [word, count]
    return await engine.atomic("comment_record", step_keys, args)


async def delete(engine: Engine, comment_id: str, room: str = "r1", by: str = "mod") -> Any:
    entry = jsonutil.dumps({"room_id": room, "deleted": comment_id, "by": by})
    return await engine.atomic(
        "comment_delete", [recent_key(room), log_key(room)], [comment_id, entry]
    )


async def recent(engine: Engine, n: int = 100, room: str = "r1") -> list[dict[str, Any]]:
    found = await engine.atomic("comment_recent", [recent_key(room)], [n])
    assert isinstance(found, list)
    return found


async def top(engine: Engine, minutes: list[int], n: int = 100, room: str = "r1") -> Any:
    return await engine.atomic("keyword_top", [keyword_key(room, m) for m in minutes], [n])


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


class LogSink:
    """A log handler that keeps every entry, in order, decoded."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def __call__(self, batch: list[dict[str, Any]]) -> None:
        for entry in batch:
            assert set(entry) == {"c"}, entry
            self.entries.append(jsonutil.loads(entry["c"]))


async def collect_log(engine: Engine, room: str = "r1") -> list[dict[str, Any]]:
    sink = LogSink()
    await engine.log_register(COMMENT_LOG, log_key(room))
    engine.on_log(COMMENT_LOG, sink)
    await engine.drain_logs()
    return sink.entries


async def quiet(make_node: MakeNode, name: str = "q") -> Engine:
    return (await make_node(name, **QUIET)).engine


# ---------------------------------------------------------------------- gate: idempotency


async def test_new_request_id_is_recorded_and_retries_answer_dup(engine: Engine) -> None:
    assert await gate(engine, "u1", "rq", comment_id="c-first") == {"ok": True}
    for n in range(3):
        assert await gate(engine, "u1", "rq", comment_id=f"c-retry{n}") == {"dup": "c-first"}
    # The same request id from another user, or in another room, is another request.
    assert await gate(engine, "u2", "rq", comment_id="c-u2") == {"ok": True}
    assert await gate(engine, "u1", "rq", room="r2", comment_id="c-r2") == {"ok": True}
    assert await gate(engine, "u1", "rq") == {"dup": "c-first"}
    assert await gate(engine, "u2", "rq") == {"dup": "c-u2"}


async def test_dup_does_not_take_a_rate_token(engine: Engine) -> None:
    limits: Limit = (NO_REFILL, 2)
    assert await gate(engine, "u1", "rq1", comment_id="c1", limit=limits) == {"ok": True}
    for _ in range(5):
        assert await gate(engine, "u1", "rq1", limit=limits) == {"dup": "c1"}
    assert await gate(engine, "u1", "rq2", comment_id="c2", limit=limits) == {"ok": True}
    refused = await gate(engine, "u1", "rq3", limit=limits)
    assert refused["error"] == "rate_limited" and "reason" not in refused
    # Still a dup once the bucket is empty: the answer to a retry never changes.
    assert await gate(engine, "u1", "rq2", limit=limits) == {"dup": "c2"}
    # A refused request was not recorded: its retry is refused again, not a dup.
    assert (await gate(engine, "u1", "rq3", limit=limits))["error"] == "rate_limited"


async def test_without_request_id_nothing_is_recorded(engine: Engine) -> None:
    for _ in range(3):
        assert await gate(engine, "u1", None) == {"ok": True}
    # The idempotency key the service uses for "no request id" holds nothing.
    assert await gate(engine, "u1", "-", comment_id="c-dash") == {"ok": True}
    assert await gate(engine, "u1", "-") == {"dup": "c-dash"}
    assert await gate(engine, "u1", None) == {"ok": True}  # has_idem "0" never answers dup


async def test_request_id_record_expires(engine: Engine) -> None:
    assert await gate(engine, "u1", "rq", comment_id="c1", idem_ttl_ms=80) == {"ok": True}
    assert await gate(engine, "u1", "rq") == {"dup": "c1"}
    await asyncio.sleep(0.15)
    assert await gate(engine, "u1", "rq", comment_id="c2") == {"ok": True}
    assert await gate(engine, "u1", "rq") == {"dup": "c2"}


# ---------------------------------------------------------------------- gate: mute


async def test_muted_user_is_refused_with_until(engine: Engine) -> None:
    until = now_ms() + 60_000
    assert await mute(engine, until, 60_000) == until
    assert await gate(engine, "u1", "rq") == {"error": "muted", "until": until}
    assert await gate(engine, "u1", None) == {"error": "muted", "until": until}
    assert await gate(engine, "u2", None) == {"ok": True}  # only that user
    assert await gate(engine, "u1", None, room="r2") == {"ok": True}  # only that room
    # A refused request was not recorded: after the unmute it goes through, once.
    assert await mute(engine, 0, 0) == 0
    assert await gate(engine, "u1", "rq", comment_id="c-after") == {"ok": True}
    assert await gate(engine, "u1", "rq") == {"dup": "c-after"}


async def test_dup_is_answered_even_while_muted(engine: Engine) -> None:
    assert await gate(engine, "u1", "rq", comment_id="c1") == {"ok": True}
    await mute(engine, now_ms() + 60_000, 60_000)
    assert await gate(engine, "u1", "rq") == {"dup": "c1"}


async def test_mute_with_until_in_the_past_lets_through(engine: Engine) -> None:
    await mute(engine, now_ms() - 1000, 60_000)
    assert await gate(engine, "u1", None) == {"ok": True}


async def test_mute_ends_when_its_key_expires(engine: Engine) -> None:
    until = now_ms() + 3_600_000
    await mute(engine, until, 80)
    assert await gate(engine, "u1", None) == {"error": "muted", "until": until}
    await asyncio.sleep(0.15)
    assert await gate(engine, "u1", None) == {"ok": True}


# ---------------------------------------------------------------------- gate: exempt


async def test_exempt_skips_mute_slow_mode_and_rate_limit(engine: Engine) -> None:
    await mute(engine, now_ms() + 60_000, 60_000)
    await settings(engine, "slow", 60_000)
    limits: Limit = (NO_REFILL, 1)
    for n in range(5):
        verdict = await gate(engine, "u1", f"rq{n}", comment_id=f"e{n}", exempt=True, limit=limits)
        assert verdict == {"ok": True}
    assert await gate(engine, "u1", None, exempt=True, limit=limits) == {"ok": True}
    # The request ids were still recorded.
    assert await gate(engine, "u1", "rq3", comment_id="x", exempt=True) == {"dup": "e3"}
    # Exempt comments took no token and started no slow-mode interval.
    await mute(engine, 0, 0)
    assert await gate(engine, "u1", None, limit=limits) == {"ok": True}
    after = await gate(engine, "u1", None, limit=limits)
    assert after["error"] == "rate_limited" and after["reason"] == "slow_mode"


# ---------------------------------------------------------------------- gate: token bucket


async def test_token_bucket_burst_then_refill(engine: Engine) -> None:
    limits: Limit = (1.0, 3)
    for _ in range(3):
        assert await gate(engine, "u1", None, limit=limits) == {"ok": True}
    refused = await gate(engine, "u1", None, limit=limits)
    assert set(refused) == {"error", "retry_after_ms"} and refused["error"] == "rate_limited"
    first_wait = refused["retry_after_ms"]
    assert isinstance(first_wait, int) and 500 < first_wait <= 1000, refused
    again = await gate(engine, "u1", None, limit=limits)  # a refusal takes nothing either
    assert again["error"] == "rate_limited" and 0 < again["retry_after_ms"] <= first_wait
    assert await gate(engine, "u2", None, limit=limits) == {"ok": True}  # per user
    await asyncio.sleep((again["retry_after_ms"] + 30) / 1000)
    assert await gate(engine, "u1", None, limit=limits) == {"ok": True}  # one token back ...
    empty = await gate(engine, "u1", None, limit=limits)  # ... and only one
    assert empty["error"] == "rate_limited" and 500 < empty["retry_after_ms"] <= 1000


# ---------------------------------------------------------------------- gate: slow mode


async def test_slow_mode_spaces_comments(engine: Engine) -> None:
    slow_ms = 250
    assert (await settings(engine, "slow", slow_ms))["slow_ms"] == slow_ms
    assert await gate(engine, "u1", None) == {"ok": True}
    refused = await gate(engine, "u1", None)
    assert set(refused) == {"error", "retry_after_ms", "reason"}
    assert refused["error"] == "rate_limited" and refused["reason"] == "slow_mode"
    assert 0 < refused["retry_after_ms"] <= slow_ms
    assert await gate(engine, "u2", None) == {"ok": True}  # per user
    await asyncio.sleep((refused["retry_after_ms"] + 30) / 1000)
    assert await gate(engine, "u1", None) == {"ok": True}
    assert (await gate(engine, "u1", None))["reason"] == "slow_mode"


async def test_slow_mode_refusal_takes_no_token_and_bucket_refusal_starts_no_interval(
    engine: Engine,
) -> None:
    limits: Limit = (NO_REFILL, 2)
    await settings(engine, "slow", 100)
    assert await gate(engine, "u1", None, limit=limits) == {"ok": True}
    for _ in range(3):
        assert (await gate(engine, "u1", None, limit=limits))["reason"] == "slow_mode"
    await asyncio.sleep(0.15)
    assert await gate(engine, "u1", None, limit=limits) == {"ok": True}  # the second token
    await asyncio.sleep(0.15)
    empty = await gate(engine, "u1", None, limit=limits)
    assert empty["error"] == "rate_limited" and "reason" not in empty
    # The bucket refused it, so no slow-mode interval began: still the bucket's answer.
    again = await gate(engine, "u1", None, limit=limits)
    assert again["error"] == "rate_limited" and "reason" not in again


async def test_slow_mode_off_never_refuses(engine: Engine) -> None:
    for _ in range(10):
        assert await gate(engine, "u1", None) == {"ok": True}
    await settings(engine, "slow", 60_000)
    assert await gate(engine, "u1", None) == {"ok": True}
    assert (await gate(engine, "u1", None))["reason"] == "slow_mode"
    # Turned off: the interval still running for u1 no longer matters.
    assert (await settings(engine, "slow", 0))["slow_ms"] == 0
    for _ in range(10):
        assert await gate(engine, "u1", None) == {"ok": True}


# ---------------------------------------------------------------------- gate: concurrency

RETRY_STORMS = [(1, 50, 1, 1), (2, 50, 5, 2), (3, 80, 1, 2), (4, 20, 3, 1)]


@pytest.mark.parametrize(("seed", "calls", "burst", "nodes"), RETRY_STORMS)
async def test_concurrent_retries_record_one_id(
    make_node: MakeNode, seed: int, calls: int, burst: int, nodes: int
) -> None:
    rng = random.Random(seed)
    engines = [(await make_node(f"n{i}")).engine for i in range(nodes)]
    limits: Limit = (NO_REFILL, burst)

    async def attempt(n: int) -> tuple[str, Verdict]:
        for _ in range(rng.choice([0, 0, 1, 2])):
            await asyncio.sleep(0)
        comment_id = f"s{seed}-c{n}"
        engine = rng.choice(engines)
        return comment_id, await gate(engine, "u1", "rq", comment_id=comment_id, limit=limits)

    results = await asyncio.gather(*(attempt(n) for n in range(calls)))
    winners = [cid for cid, verdict in results if verdict == {"ok": True}]
    assert len(winners) == 1, results
    assert all(v in ({"ok": True}, {"dup": winners[0]}) for _, v in results), results
    assert await gate(engines[-1], "u1", "rq") == {"dup": winners[0]}
    # The retries took no token: the rest of the burst is still there.
    for _ in range(burst - 1):
        assert await gate(engines[0], "u1", None, limit=limits) == {"ok": True}
    assert (await gate(engines[0], "u1", None, limit=limits))["error"] == "rate_limited"


BURSTS = [(1, 30, 5, 1), (2, 30, 5, 2), (3, 60, 7, 2), (4, 12, 12, 1)]


@pytest.mark.parametrize(("seed", "calls", "burst", "nodes"), BURSTS)
async def test_concurrent_requests_pass_exactly_burst(
    make_node: MakeNode, seed: int, calls: int, burst: int, nodes: int
) -> None:
    rng = random.Random(seed)
    engines = [(await make_node(f"n{i}")).engine for i in range(nodes)]
    limits: Limit = (NO_REFILL, burst)

    async def attempt(n: int) -> tuple[str, Verdict]:
        for _ in range(rng.choice([0, 0, 1, 2])):
            await asyncio.sleep(0)
        rid = f"rq{n}"
        return rid, await gate(rng.choice(engines), "u1", rid, comment_id=f"c{n}", limit=limits)

    results = await asyncio.gather(*(attempt(n) for n in range(calls)))
    passed = [rid for rid, verdict in results if verdict == {"ok": True}]
    refused = [rid for rid, verdict in results if verdict != {"ok": True}]
    assert len(passed) == burst, results
    for rid, verdict in results:
        if rid in refused:
            assert verdict["error"] == "rate_limited" and verdict["retry_after_ms"] > 0
            assert "reason" not in verdict
    # Exactly the requests that passed were recorded.
    for rid in passed:
        assert await gate(engines[0], "u1", rid) == {"dup": f"c{rid[2:]}"}
    for rid in refused[:5]:
        assert (await gate(engines[-1], "u1", rid, limit=limits))["error"] == "rate_limited"


# ---------------------------------------------------------------------- mute


async def test_mute_set_read_unmute(engine: Engine) -> None:
    assert await mute(engine, 0, -1) == 0  # never muted
    until = now_ms() + 60_000
    assert await mute(engine, until, 60_000) == until
    assert await mute(engine, 0, -1) == until  # read only: unchanged
    assert await mute(engine, 12345, -1) == until  # a read ignores the until it is sent
    assert await mute(engine, 0, -1, user="u2") == 0
    longer = until + 60_000
    assert await mute(engine, longer, 120_000) == longer  # a new mute replaces the old
    assert await mute(engine, 0, 0) == 0
    assert await mute(engine, 0, -1) == 0
    assert await mute(engine, 0, 0) == 0  # unmuting twice is fine


async def test_mute_expires_with_its_ttl(engine: Engine) -> None:
    until = now_ms() + 3_600_000
    assert await mute(engine, until, 80) == until
    await asyncio.sleep(0.15)
    assert await mute(engine, 0, -1) == 0


# ---------------------------------------------------------------------- settings


async def test_settings_of_an_empty_room(engine: Engine) -> None:
    empty = {"slow_ms": 0, "words": [], "version": 0}
    assert await settings(engine, "get") == empty
    assert await settings(engine, "get") == empty  # a read changes nothing


async def test_banned_words_are_a_sorted_set_with_a_version(engine: Engine) -> None:
    state = await edit_words(engine, add=["pear", "apple"])
    assert state == {"slow_ms": 0, "words": ["apple", "pear"], "version": 1}
    state = await edit_words(engine, add=["fig", "apple"], remove=["pear"])
    assert state == {"slow_ms": 0, "words": ["apple", "fig"], "version": 2}
    assert await settings(engine, "get") == state
    state = await edit_words(engine, add=["zebra", "banana"])
    assert state["words"] == ["apple", "banana", "fig", "zebra"] and state["version"] == 3
    state = await edit_words(engine, remove=["apple", "fig", "zebra", "banana"])
    assert state == {"slow_ms": 0, "words": [], "version": 4}
    assert isinstance(state["words"], list)  # [] not {}
    assert (await settings(engine, "get"))["words"] == []
    noop = await edit_words(engine, remove=["never-there"])
    assert noop["words"] == [] and noop["version"] >= 4
    state = await edit_words(engine, add=['x"y', "a/b", "épée", "日本"])
    assert state["words"] == sorted(['x"y', "a/b", "épée", "日本"])
    assert state["version"] > noop["version"]
    assert (await settings(engine, "get", room="r2"))["words"] == []  # per room


async def test_slow_mode_setting(engine: Engine) -> None:
    await edit_words(engine, add=["b", "a"])
    state = await settings(engine, "slow", 3000)
    assert state == {"slow_ms": 3000, "words": ["a", "b"], "version": 2}
    state = await settings(engine, "slow", 0)
    assert state == {"slow_ms": 0, "words": ["a", "b"], "version": 3}
    assert await settings(engine, "slow", 500, room="r2") == {
        "slow_ms": 500,
        "words": [],
        "version": 1,
    }
    assert await settings(engine, "get") == state


async def test_concurrent_word_edits_lose_nothing(make_node: MakeNode) -> None:
    engines = [(await make_node(f"n{i}")).engine for i in range(2)]
    words = [f"w{n:02d}" for n in range(20)]
    rng = random.Random(5)

    async def add(n: int, word: str) -> None:
        for _ in range(rng.choice([0, 1, 2])):
            await asyncio.sleep(0)
        await edit_words(engines[n % 2], add=[word])

    await asyncio.gather(*(add(n, w) for n, w in enumerate(words)))
    state = await settings(engines[0], "get")
    assert state == {"slow_ms": 0, "words": words, "version": 20}

    # Removals racing additions: every edit lands.
    fresh = [f"v{n:02d}" for n in range(10)]
    jobs = [edit_words(engines[0], remove=[w]) for w in words[::2]]
    jobs += [edit_words(engines[1], add=[w]) for w in fresh]
    rng.shuffle(jobs)
    await asyncio.gather(*jobs)
    state = await settings(engines[1], "get")
    assert state == {"slow_ms": 0, "words": sorted(words[1::2] + fresh), "version": 40}


# ---------------------------------------------------------------------- record and recent


async def test_recent_keeps_the_newest_cap_oldest_first(engine: Engine) -> None:
    assert await recent(engine) == []
    first = [item("c1", "one"), item("c2", "two"), item("c3", "three")]
    assert await record(engine, first, cap=4) == 1
    assert await recent(engine) == first  # whole items, oldest first
    await record(engine, [item("c4"), item("c5")], cap=4)
    assert ids(await recent(engine)) == ["c2", "c3", "c4", "c5"]
    assert ids(await recent(engine, 2)) == ["c4", "c5"]  # the newest n, oldest first
    assert ids(await recent(engine, 1)) == ["c5"]
    await record(engine, [item(f"d{n}") for n in range(6)], cap=4)  # a batch over the cap
    assert ids(await recent(engine)) == ["d2", "d3", "d4", "d5"]
    await record(engine, [], {"word": 1}, cap=4)  # nothing to list
    assert ids(await recent(engine)) == ["d2", "d3", "d4", "d5"]
    assert await recent(engine, room="r2") == []


async def test_recent_cap_zero_keeps_nothing(engine: Engine) -> None:
    await record(engine, [item("c1"), item("c2")], cap=0)
    assert await recent(engine) == []


async def test_every_record_appends_one_log_entry(make_node: MakeNode) -> None:
    engine = await quiet(make_node)
    batches = [[item("c1"), item("c2")], [item("c3")], []]
    for batch in batches:
        await record(engine, batch, {"hi": len(batch)} if batch else None, cap=1)
    await record(engine, [item("x1")], room="r2")
    logged = await collect_log(engine)
    assert logged == [{"room_id": "r1", "items": batch} for batch in batches]
    await record(engine, [item("c4")], log_json=jsonutil.dumps({"custom": True}))
    assert await engine.drain_logs() == 1  # the first entries were acknowledged


async def test_keyword_counts_add_up_in_the_minute(engine: Engine) -> None:
    await record(engine, [item("c1")], {"sale": 2, "wow": 1})
    await record(engine, [item("c2")], {"sale": 3, "cheap": 1})
    await record(engine, [item("c3")], {"wow": 4}, minute=1)
    assert await top(engine, [0]) == {"sale": 5, "wow": 1, "cheap": 1}
    assert await top(engine, [1]) == {"wow": 4}
    assert await top(engine, [0], room="r2") == {}


async def test_keyword_counts_expire(engine: Engine) -> None:
    await record(engine, [item("c1")], {"sale": 2}, ttl_ms=80)
    assert await top(engine, [0]) == {"sale": 2}
    await asyncio.sleep(0.15)
    assert await top(engine, [0]) == {}
    # A record with no keywords does not touch (or revive) the minute's zset.
    await record(engine, [item("c2")], {"new": 1}, minute=1, ttl_ms=60_000)
    await record(engine, [item("c3")], minute=1, ttl_ms=80)
    await asyncio.sleep(0.15)
    assert await top(engine, [1]) == {"new": 1}


# ---------------------------------------------------------------------- delete


async def test_delete_removes_exactly_that_item(engine: Engine) -> None:
    await record(engine, [item("c1"), item("c10"), item("c2"), item("c11")], cap=10)
    assert await delete(engine, "c1") == 1
    assert ids(await recent(engine)) == ["c10", "c2", "c11"]  # not c10 nor c11
    assert await delete(engine, "c1") == 0  # already gone
    assert await delete(engine, "nope") == 0
    assert await delete(engine, "c11") == 1
    assert ids(await recent(engine)) == ["c10", "c2"]
    assert await delete(engine, "c10", room="r2") == 0  # another room's list
    assert ids(await recent(engine)) == ["c10", "c2"]


async def test_delete_of_a_comment_trimmed_from_recent(engine: Engine) -> None:
    await record(engine, [item("c1"), item("c2"), item("c3")], cap=2)
    assert await delete(engine, "c1") == 0
    assert ids(await recent(engine)) == ["c2", "c3"]


async def test_deletions_are_logged_after_the_records(make_node: MakeNode) -> None:
    engine = await quiet(make_node)
    await record(engine, [item("c1"), item("c2")], cap=10)
    assert await delete(engine, "c1") == 1
    assert await delete(engine, "zz") == 0  # logged all the same
    await record(engine, [item("c3")], cap=10)
    assert await delete(engine, "c3") == 1
    logged = await collect_log(engine)
    assert logged == [
        {"room_id": "r1", "items": [item("c1"), item("c2")]},
        {"room_id": "r1", "deleted": "c1", "by": "mod"},
        {"room_id": "r1", "deleted": "zz", "by": "mod"},
        {"room_id": "r1", "items": [item("c3")]},
        {"room_id": "r1", "deleted": "c3", "by": "mod"},
    ]
    assert ids(await recent(engine)) == ["c2"]


# ---------------------------------------------------------------------- keyword_top


async def test_keyword_top_sums_the_top_of_each_minute(engine: Engine) -> None:
    await record(engine, [], {"a": 5, "b": 3, "c": 1}, minute=10)
    await record(engine, [], {"c": 4, "d": 2, "a": 1}, minute=11)
    await record(engine, [], {"e": 9}, minute=13)
    # n=2: minute 10 gives a, b (c's 1 is cut); minute 11 gives c, d (a's 1 is cut).
    assert await top(engine, [10, 11], n=2) == {"a": 5, "b": 3, "c": 4, "d": 2}
    assert await top(engine, [10, 11], n=3) == {"a": 6, "b": 3, "c": 5, "d": 2}
    assert await top(engine, [10, 11, 12, 13], n=1) == {"a": 5, "c": 4, "e": 9}
    assert await top(engine, [13, 11, 10], n=100) == {"a": 6, "b": 3, "c": 5, "d": 2, "e": 9}


async def test_keyword_top_of_nothing_is_empty(engine: Engine) -> None:
    assert not await top(engine, [1, 2, 3])
    assert await top(engine, [1, 2, 3]) == {}
    assert await top(engine, [], n=5) == {}


async def test_keyword_ties_at_the_cutoff_keep_the_highest_word(engine: Engine) -> None:
    """ZREVRANGE order (score, then member, both descending): the twins pick the same."""
    await record(engine, [], {"x": 2, "y": 2, "z": 2, "w": 1, "a": 3})
    assert await top(engine, [0], n=1) == {"a": 3}
    assert await top(engine, [0], n=2) == {"a": 3, "z": 2}
    assert await top(engine, [0], n=3) == {"a": 3, "z": 2, "y": 2}
    assert await top(engine, [0], n=5) == {"a": 3, "z": 2, "y": 2, "x": 2, "w": 1}


async def test_n_zero_or_less_reads_nothing(engine: Engine) -> None:
    await record(engine, [item("c1"), item("c2")], {"x": 1})
    for n in (0, -1):
        assert await recent(engine, n) == []  # not LRANGE 0 -1: everything
        assert not await top(engine, [0], n=n)


# ---------------------------------------------------------------------- twins agree


def _strip(result: Any) -> Any:
    """A gate verdict without retry_after_ms (it depends on each backend's clock)."""
    if isinstance(result, dict) and "retry_after_ms" in result:
        assert result["retry_after_ms"] > 0
        return {k: v for k, v in result.items() if k != "retry_after_ms"}
    return result


async def test_memory_and_redis_twins_agree(engine_redis: RedisServer) -> None:
    """One seeded random history of every comment step, run on both backends: same answers."""
    redis.Redis.from_url(engine_redis.url).flushall()
    memory = MemoryEngine("twin-m", **QUIET)
    red = RedisEngine(engine_redis.url, "twin-r", **{**FAST, **QUIET})
    rng = random.Random(11)
    vocab = ["sale", "wow", "cheap", "red", "blue", "日本"]
    until = now_ms() + 3_600_000
    issued: list[str] = []
    try:
        for n in range(400):
            roll = rng.random()
            call: tuple[str, list[str], list[Any]]
            if roll < 0.25:
                user, rid = rng.choice(["u1", "u2", "u3"]), rng.choice([None, "a", "b", "c"])
                args = [f"g{n}", 60_000, rng.choice("0001"), NO_REFILL, 3, "1" if rid else "0"]
                call = ("comment_gate", gate_keys("r1", user, rid), args)
            elif roll < 0.45:
                batch = [item(f"k{n}-{i}", rng.choice(vocab)) for i in range(rng.randint(0, 3))]
                issued += ids(batch)
                pairs: list[Any] = []
                for word in rng.sample(vocab, rng.randint(0, 3)):
                    pairs += [word, rng.randint(1, 3)]
                step_keys = [recent_key("r1"), log_key("r1"), keyword_key("r1", rng.randint(0, 2))]
                args = [rng.choice([0, 3, 5]), 60_000, jsonutil.dumps({"n": n}), len(batch)]
                args += [jsonutil.dumps(i) for i in batch] + pairs
                call = ("comment_record", step_keys, args)
            elif roll < 0.55:
                target = rng.choice([*issued[-6:], "nope"])
                call = ("comment_delete", [recent_key("r1"), log_key("r1")], [target, str(n)])
            elif roll < 0.65:
                call = ("comment_recent", [recent_key("r1")], [rng.randint(0, 8)])
            elif roll < 0.75:
                kind = rng.choice(["get", "slow", "words"])
                if kind == "slow":
                    args = ["slow", rng.choice([0, 0, 60_000])]
                elif kind == "words":
                    add, remove = rng.sample(vocab, 2), rng.sample(vocab, 1)
                    args = ["words", len(add), *add, *remove]
                else:
                    args = ["get"]
                call = ("comment_settings", [settings_key("r1")], args)
            elif roll < 0.85:
                ttl = rng.choice([-1, -1, 0, 60_000])
                user = rng.choice(["u1", "u2", "u3"])
                call = ("comment_mute", [mute_key("r1", user)], [until, ttl])
            else:
                minutes = rng.sample([0, 1, 2, 3], rng.randint(1, 4))
                n_top = rng.choice([0, 1, 2, 50])  # 1 and 2 cut through ties
                call = ("keyword_top", [keyword_key("r1", m) for m in minutes], [n_top])
            got = [_strip(await engine.atomic(*call)) for engine in (memory, red)]
            assert got[0] == got[1], (n, call)
        logs = [await collect_log(engine) for engine in (memory, red)]
        assert logs[0] == logs[1] and len(logs[0]) > 50
    finally:
        await red.close()
        await memory.close()


async def test_gate_reports_the_rooms_open_draw(engine: Engine) -> None:
    # A keyword entry needs to know the open draw on every node at once, without a trip.
    assert "draw" not in await gate(engine, "u1", room="rd", exempt=True)
    await engine.atomic(
        "draw_open",
        [keys.room_key("rd", "draw", "current"), keys.room_key("rd", "draw", "d1")],
        ["d1", now_ms() + 60_000, 60_000],
    )
    assert (await gate(engine, "u1", room="rd", exempt=True))["draw"] == "d1"
    assert (await gate(engine, "u1", room="other", exempt=True)).get("draw") is None
