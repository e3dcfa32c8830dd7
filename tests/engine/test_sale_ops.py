"""Flash-sale atomic steps (``engine/lua/sale_*.lua`` and their twins in ``memory_ops.py``):
one contract, both backends.

The keys and the order dict mirror ``features/flashsale/service.py`` (``sale_keys``,
``buy``, ``install``) but are built here, so these tests pin the engine's side of the
contract on their own.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from typing import Any

import pytest
import redis

from livecommerce import jsonutil
from livecommerce.engine import Engine, keys
from livecommerce.engine.memory import MemoryEngine
from livecommerce.engine.memory_ops import OpsState
from livecommerce.engine.redis import RedisEngine
from livecommerce.features.flashsale.orders import ORDER_LOG
from livecommerce.features.flashsale.service import sale_keys
from tests.engine.conftest import FAST, MakeNode
from tests.support.redis_server import RedisServer

LOG = ORDER_LOG
T0 = 1_700_000_000_000  # epoch ms: a sale window [T0, T0 + 1 h)
HOUR = 3_600_000
IDEM_TTL_MS = 24 * HOUR
#: No background consumption of logs (the log loop shares timer_poll_s): tests drain.
QUIET: dict[str, Any] = {"timer_poll_s": 3600.0}

Order = dict[str, Any]

_ids = itertools.count(1)


def terms_of(room: str, sale: str, qty: int, limit: int, starts_at: int, ends_at: int) -> Order:
    return {
        "id": sale,
        "room_id": room,
        "product_id": "p1",
        "price_cents": 500,
        "quantity": qty,
        "per_user_limit": limit,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "hold_s": 60,
    }


def new_order(
    room: str,
    sale: str,
    user: str,
    qty: int,
    request_id: str,
    *,
    now: int,
    expires_at: int,
    status: str = "reserved",
    order_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": order_id or f"o{next(_ids)}",
        "user_id": user,
        "room_id": room,
        "product_id": "p1",
        "kind": "flashsale",
        "ref_id": sale,
        "qty": qty,
        "unit_price_cents": 500,
        "amount_cents": 500 * qty,
        "status": status,
        "request_id": request_id,
        "created_at": now,
        "updated_at": now,
        "expires_at": expires_at,
    }


async def install(
    engine: Engine,
    *,
    room: str = "r1",
    sale: str = "s1",
    qty: int = 10,
    limit: int = 2,
    starts_at: int = T0,
    ends_at: int = T0 + HOUR,
    status: str = "live",
    holds: dict[str, int] | None = None,
    orders: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    holds = holds or {}
    args: list[Any] = [
        jsonutil.dumps(terms_of(room, sale, qty, limit, starts_at, ends_at)),
        qty - sum(holds.values()),
        status,
        starts_at,
        ends_at,
        limit,
        jsonutil.dumps(holds),
        *(jsonutil.dumps(o) for o in orders),
    ]
    result: dict[str, Any] = await engine.atomic("sale_init", sale_keys(room, sale), args)
    return result


async def buy(
    engine: Engine,
    user: str,
    qty: int = 1,
    request_id: str | None = None,
    *,
    room: str = "r1",
    sale: str = "s1",
    now: int = T0 + 1000,
    hold_ms: int = 60_000,
    order_id: str | None = None,
    idem_ttl_ms: int = IDEM_TTL_MS,
) -> dict[str, Any]:
    """One ``sale_buy`` as the service sends it: every attempt carries a fresh order id."""
    request_id = request_id or f"req{next(_ids)}"
    order = new_order(
        room, sale, user, qty, request_id, now=now, expires_at=now + hold_ms, order_id=order_id
    )
    idem = keys.idempotency(room, user, f"buy:{sale}", request_id)
    args = [now, user, qty, jsonutil.dumps(order), idem_ttl_ms]
    result: dict[str, Any] = await engine.atomic("sale_buy", [*sale_keys(room, sale), idem], args)
    return result


async def step(
    engine: Engine, order_id: str, action: str, now: int, *, room: str = "r1", sale: str = "s1"
) -> dict[str, Any]:
    result: dict[str, Any] = await engine.atomic(
        "sale_order_step", sale_keys(room, sale), [order_id, action, now]
    )
    return result


async def sale_get(engine: Engine, room: str = "r1", sale: str = "s1") -> dict[str, Any] | None:
    result: dict[str, Any] | None = await engine.atomic("sale_get", sale_keys(room, sale), [])
    return result


async def left_of(engine: Engine, room: str = "r1", sale: str = "s1") -> int:
    state = await sale_get(engine, room, sale)
    assert state is not None
    return int(state["left"])


async def orders_of(engine: Engine, room: str = "r1", sale: str = "s1") -> dict[str, Order]:
    found = await engine.atomic("sale_orders", sale_keys(room, sale), [])
    return {o["id"]: o for o in found}


async def order_of(engine: Engine, order_id: str, room: str = "r1", sale: str = "s1") -> Any:
    return await engine.atomic("sale_order", sale_keys(room, sale), [order_id])


async def holds_of(engine: Engine, room: str = "r1", sale: str = "s1") -> dict[str, int]:
    """The holds hash itself (users holding 0 left out: a release leaves a 0 field)."""
    key = sale_keys(room, sale)[1]
    raw: Any
    if isinstance(engine, MemoryEngine):
        raw = dict(engine.store.ops.hashes.get(key, {}))
    else:
        assert isinstance(engine, RedisEngine)
        raw = await engine._redis.hgetall(key)
    return {user: int(units) for user, units in raw.items() if int(units)}


def held_by_orders(orders: dict[str, Order]) -> dict[str, int]:
    held: Counter[str] = Counter()
    for order in orders.values():
        if order["status"] in ("reserved", "paying", "paid"):
            held[order["user_id"]] += order["qty"]
    return dict(held)


class LogSink:
    """A log handler that keeps every entry's order, decoded."""

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []

    async def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.orders += [jsonutil.loads(entry["o"]) for entry in batch]


async def collect_log(engine: Engine, room: str = "r1", sale: str = "s1") -> list[Order]:
    sink = LogSink()
    await engine.log_register(LOG, sale_keys(room, sale)[3])
    engine.on_log(LOG, sink)
    await engine.drain_logs()
    return sink.orders


# ---------------------------------------------------------------------- install and read


async def test_sale_init_installs_once(engine: Engine) -> None:
    assert await sale_get(engine) is None
    assert await install(engine, qty=10, limit=3) == {"installed": True}
    state = await sale_get(engine)
    assert state == {
        "terms": terms_of("r1", "s1", 10, 3, T0, T0 + HOUR),
        "left": 10,
        "status": "live",
    }
    assert (await buy(engine, "u1", 2))["left"] == 8
    # A second install (another node rebuilding, a restart) changes nothing at all.
    again = await install(engine, qty=99, limit=1, status="scheduled", holds={"u9": 5})
    assert again == {"installed": False}
    assert await sale_get(engine) == {**state, "left": 8}
    assert await holds_of(engine) == {"u1": 2}
    assert (await buy(engine, "u1", 1))["left"] == 7  # the limit is still 3


async def test_unknown_sale_reads_empty(engine: Engine) -> None:
    assert await sale_get(engine, "r1", "nope") is None
    assert await orders_of(engine, "r1", "nope") == {}
    assert await order_of(engine, "o-missing", "r1", "nope") is None
    await install(engine)
    assert await order_of(engine, "o-missing") is None


async def test_sale_init_rebuild_restores_left_holds_and_orders(engine: Engine) -> None:
    exp = T0 + 60_000
    reserved = new_order("r1", "s1", "u1", 2, "q1", now=T0, expires_at=exp, order_id="oa")
    paid = new_order(
        "r1", "s1", "u2", 1, "q2", now=T0, expires_at=exp, status="paid", order_id="ob"
    )
    result = await install(
        engine, qty=5, limit=2, holds={"u1": 2, "u2": 1}, orders=(reserved, paid)
    )
    assert result == {"installed": True}
    assert await left_of(engine) == 2
    assert await holds_of(engine) == {"u1": 2, "u2": 1}
    assert await orders_of(engine) == {"oa": reserved, "ob": paid}
    assert await order_of(engine, "oa") == reserved
    # The restored holds count against the limit ...
    assert await buy(engine, "u1", 1) == {"error": "limit_exceeded"}
    # ... and the restored orders move on as any other.
    cancelled = await step(engine, "oa", "cancel", T0 + 5)
    assert cancelled["order"]["status"] == "cancelled" and cancelled["left"] == 4
    assert await holds_of(engine) == {"u2": 1}
    assert (await step(engine, "ob", "cancel", T0 + 5))["error"] == "conflict"
    assert (await buy(engine, "u1", 2))["left"] == 2


async def test_rebuild_with_everything_held_is_sold_out(engine: Engine) -> None:
    held = new_order("r1", "s1", "u1", 2, "q", now=T0, expires_at=T0 + 10, order_id="oz")
    await install(engine, qty=2, status="sold_out", holds={"u1": 2}, orders=(held,))
    assert await sale_get(engine) == {
        "terms": terms_of("r1", "s1", 2, 2, T0, T0 + HOUR),
        "left": 0,
        "status": "sold_out",
    }
    assert await buy(engine, "u2") == {"error": "sold_out"}
    back = await step(engine, "oz", "expire", T0 + 10)
    assert back["status_changed"] is True and back["left"] == 2
    assert (await sale_get(engine) or {})["status"] == "live"


# ---------------------------------------------------------------------- buying


async def test_buy_reserves_and_returns_the_order(engine: Engine) -> None:
    await install(engine, qty=3, status="scheduled")
    result = await buy(engine, "u1", 2, "rq", order_id="o-first")
    assert result["new"] is True and result["stock_changed"] is True
    assert result["status_changed"] is False and result["left"] == 1
    assert result["order"]["id"] == "o-first" and result["order"]["status"] == "reserved"
    assert await order_of(engine, "o-first") == result["order"]
    assert (await sale_get(engine) or {})["status"] == "live"  # scheduled -> live
    assert await holds_of(engine) == {"u1": 2}


async def test_retry_returns_the_first_order(engine: Engine) -> None:
    await install(engine, qty=2, limit=2)
    first = await buy(engine, "u1", 1, "rq", order_id="o-1")
    retry = await buy(engine, "u1", 1, "rq", order_id="o-2")
    assert retry == {"new": False, "order": first["order"]}
    assert await left_of(engine) == 1
    assert set(await orders_of(engine)) == {"o-1"}
    # The same request id from another user is another request.
    assert (await buy(engine, "u2", 1, "rq", order_id="o-3"))["new"] is True
    # Sold out now, yet the retry still answers with the order it placed (current state).
    await step(engine, "o-1", "pay_begin", T0 + 2000)
    again = await buy(engine, "u1", 1, "rq", order_id="o-4")
    assert again["new"] is False and again["order"]["id"] == "o-1"
    assert again["order"]["status"] == "paying"


async def test_idempotency_record_lapses(engine: Engine) -> None:
    await install(engine, qty=5, limit=5)
    await buy(engine, "u1", 1, "rq", order_id="o-1", idem_ttl_ms=100)
    await asyncio.sleep(0.25)
    later = await buy(engine, "u1", 1, "rq", order_id="o-2")
    assert later["new"] is True and later["order"]["id"] == "o-2"


def test_memory_sweeps_lapsed_idempotency_records() -> None:
    state = OpsState()
    for i in range(3000):
        state.set(f"k{i}", "o", 0 if i < 1000 else 60_000)  # the first 1000 lapse at once
    assert len(state.strings) == 2000
    assert state.get("k0") is None and state.get("k2999") == "o"


async def test_window(engine: Engine) -> None:
    await install(engine, starts_at=T0, ends_at=T0 + 1000, status="scheduled")
    assert await buy(engine, "u1", now=T0 - 1) == {"error": "not_started"}
    assert await buy(engine, "u1", now=T0 + 1000) == {"error": "ended"}
    assert await buy(engine, "u1", now=T0 + 5000) == {"error": "ended"}
    assert await buy(engine, "u1", sale="nope") == {"error": "not_found"}
    assert await left_of(engine) == 10
    assert await orders_of(engine) == {}
    assert (await buy(engine, "u1", now=T0))["new"] is True  # starts_at is inside
    assert (await buy(engine, "u2", now=T0 + 999))["left"] == 8  # ends_at is not


async def test_status_ended_closes_the_window(engine: Engine) -> None:
    await install(engine, status="ended")
    assert await buy(engine, "u1", now=T0 + 10) == {"error": "ended"}


async def test_sold_out_and_limit(engine: Engine) -> None:
    await install(engine, qty=3, limit=2)
    assert (await buy(engine, "u1", 2))["left"] == 1
    assert await buy(engine, "u1", 1) == {"error": "limit_exceeded"}
    assert await buy(engine, "u2", 2) == {"error": "sold_out"}  # qty > left
    assert await left_of(engine) == 1
    last = await buy(engine, "u2", 1)
    assert last["left"] == 0 and last["status_changed"] is True
    assert (await sale_get(engine) or {})["status"] == "sold_out"
    assert await buy(engine, "u3", 1) == {"error": "sold_out"}
    assert await holds_of(engine) == {"u1": 2, "u2": 1}
    assert len(await collect_log(engine)) == 2  # each new order logged once


async def test_a_quantity_below_one_never_adds_stock(engine: Engine) -> None:
    await install(engine, qty=3, limit=2)
    for qty in (0, -1, -5):
        assert await buy(engine, "u1", qty) == {"error": "invalid"}
    assert await left_of(engine) == 3 and await holds_of(engine) == {}


# ---------------------------------------------------------------------- merged buys


def _in_room(result: dict[str, Any]) -> dict[str, Any]:
    """A buy result with the order's room-bound fields left out (two rooms compared)."""
    if "order" not in result:
        return result
    order = {k: v for k, v in result["order"].items() if k not in ("room_id", "id")}
    return {**result, "order": order}


@pytest.mark.parametrize("seed", range(4))
async def test_a_merged_batch_answers_as_the_same_buys_one_by_one(
    engine: Engine, seed: int
) -> None:
    """``sale_buy_many`` (features/flashsale/merge.py) against ``sale_buy`` call by call:
    the same sale in two rooms, the same random buys (repeated request ids, quantities
    over the limit, zero, buyers after sell-out, some before the start), the same answers
    and the same stock and holds afterwards."""
    rng = random.Random(seed)
    qty, limit = rng.randint(3, 12), rng.randint(1, 3)
    for room in ("one", "many"):
        await install(engine, room=room, qty=qty, limit=limit, starts_at=T0 + 500)
    buys = []
    for n in range(rng.randint(20, 60)):
        user = f"u{rng.randint(1, 8)}"
        request_id = f"rq{rng.randint(1, 10)}"
        buys.append(
            (user, rng.choice([0, 1, 1, 1, 2, 3]), request_id, T0 + rng.randint(0, 2000), n)
        )

    def step(
        room: str, user: str, q: int, request_id: str, now: int, n: int
    ) -> tuple[str, list[Any]]:
        order = new_order(room, "s1", user, q, request_id, now=now, expires_at=now + 9000)
        order["id"] = f"{room}-o{n}"
        return keys.idempotency(room, user, "buy:s1", request_id), [
            now,
            user,
            q,
            jsonutil.dumps(order),
        ]

    one_by_one = []
    for user, q, request_id, now, n in buys:
        idem, args = step("one", user, q, request_id, now, n)
        one_by_one.append(
            await engine.atomic("sale_buy", [*sale_keys("one", "s1"), idem], [*args, IDEM_TTL_MS])
        )
    steps = [step("many", user, q, request_id, now, n) for user, q, request_id, now, n in buys]
    merged = await engine.atomic(
        "sale_buy_many",
        [*sale_keys("many", "s1"), *(idem for idem, _ in steps)],
        [IDEM_TTL_MS, *(a for _, args in steps for a in args)],
    )
    assert [_in_room(r) for r in merged] == [_in_room(r) for r in one_by_one]
    assert any(r.get("new") for r in merged) and any("error" in r for r in merged)
    assert await left_of(engine, "many") == await left_of(engine, "one")
    assert await holds_of(engine, "many") == await holds_of(engine, "one")


# ---------------------------------------------------------------------- the stampede

STAMPEDES = [(1, 37), (2, 37), (3, 23), (4, 50), (5, 1)]


@pytest.mark.parametrize("nodes", [1, 2], ids=["one_node", "two_nodes"])
@pytest.mark.parametrize(("seed", "quantity"), STAMPEDES)
async def test_stampede_never_oversells(
    make_node: MakeNode, nodes: int, seed: int, quantity: int
) -> None:
    rng = random.Random(seed)
    engines = [(await make_node(f"n{i}", **QUIET)).engine for i in range(nodes)]
    await install(engines[0], qty=quantity, limit=2)
    users = [f"u{i}" for i in range(120)]

    # 400 calls: some requests retried several times, some users sending several requests.
    calls: list[tuple[str, str, int]] = []
    while len(calls) < 400:
        user = rng.choice(users)
        request = (user, f"{user}-rq{len(calls)}", rng.choice([1, 2]))
        calls += [request] * rng.choice([1, 1, 1, 2, 3, 5])
    calls = calls[:400]
    rng.shuffle(calls)
    assert sum({rid: qty for _, rid, qty in calls}.values()) > 2 * quantity  # real demand
    plan = [(call, rng.choice(engines), rng.choice([0, 0, 1, 2])) for call in calls]

    async def attempt(
        call: tuple[str, str, int], engine: Engine, yields: int
    ) -> tuple[tuple[str, str, int], dict[str, Any]]:
        for _ in range(yields):
            await asyncio.sleep(0)
        user, rid, qty = call
        return call, await buy(engine, user, qty, rid)

    results = await asyncio.gather(*(attempt(*p) for p in plan))

    per_request: dict[str, list[dict[str, Any]]] = {}
    placed: dict[str, dict[str, Any]] = {}
    for (user, rid, qty), result in results:
        per_request.setdefault(rid, []).append(result)
        if "error" in result:
            assert result == {"error": "sold_out"} or result == {"error": "limit_exceeded"}
            continue
        order = result["order"]
        assert (order["user_id"], order["request_id"], order["qty"]) == (user, rid, qty)
        placed[order["id"]] = order
    for rid, outcomes in per_request.items():
        ids = {r["order"]["id"] for r in outcomes if "order" in r}
        if ids:  # every attempt of a request that placed an order returned that order
            assert len(ids) == 1 and all("order" in r for r in outcomes), rid
            assert sum(r["new"] for r in outcomes) == 1, rid

    assert sum(order["qty"] for order in placed.values()) == quantity  # never oversold
    state = await sale_get(engines[-1])
    assert state is not None and state["left"] == 0 and state["status"] == "sold_out"
    stored = await orders_of(engines[-1])
    assert set(stored) == set(placed)
    held = held_by_orders(stored)
    assert max(held.values()) <= 2
    assert await holds_of(engines[-1]) == held
    assert any(r == {"error": "sold_out"} for _, r in results)
    logged = await collect_log(engines[0])
    assert sorted(o["id"] for o in logged) == sorted(placed)  # each order logged once


# ---------------------------------------------------------------------- order steps

EXP = T0 + 61_000  # buy() at T0 + 1000 holds for 60 s


async def reserved_order(engine: Engine, user: str = "u1", qty: int = 1) -> str:
    order_id = f"o{next(_ids)}"
    await buy(engine, user, qty, order_id=order_id)
    return order_id


async def test_pay_begin_then_ok(engine: Engine) -> None:
    await install(engine, qty=5)
    oid = await reserved_order(engine, qty=2)
    begun = await step(engine, oid, "pay_begin", EXP - 1)
    assert begun == {"order": {**begun["order"], "status": "paying", "updated_at": EXP - 1}}
    assert begun["order"]["id"] == oid
    assert (await step(engine, oid, "pay_begin", EXP - 1))["error"] == "conflict"
    paid = await step(engine, oid, "pay_ok", EXP + 500)  # a late answer still lands
    assert paid["changed"] is True and paid["order"]["status"] == "paid"
    assert "error" not in paid and "stock_changed" not in paid
    assert (await order_of(engine, oid))["status"] == "paid"
    # Retries of a paid order answer with it and change nothing.
    assert await step(engine, oid, "pay_begin", EXP + 600) == {"order": paid["order"]}
    assert await step(engine, oid, "pay_ok", EXP + 600) == {"order": paid["order"]}
    assert await step(engine, oid, "expire", EXP + 600) == {"order": paid["order"]}
    assert await left_of(engine) == 3
    assert await holds_of(engine) == {"u1": 2}
    # Logged: the reservation and the payment, not the intermediate paying.
    assert [o["status"] for o in await collect_log(engine)] == ["reserved", "paid"]


async def test_pay_fail_before_expiry_reserves_again(engine: Engine) -> None:
    await install(engine, qty=5)
    oid = await reserved_order(engine)
    await step(engine, oid, "pay_begin", EXP - 10)
    failed = await step(engine, oid, "pay_fail", EXP - 5)
    assert failed == {"order": {**failed["order"], "status": "reserved"}}
    assert await left_of(engine) == 4
    assert await step(engine, oid, "pay_fail", EXP - 5) == {"order": failed["order"]}
    # It can be paid again, or expire as any reserved order.
    assert (await step(engine, oid, "pay_begin", EXP - 1))["order"]["status"] == "paying"


async def test_pay_fail_after_expiry_releases(engine: Engine) -> None:
    await install(engine, qty=5)
    oid = await reserved_order(engine, qty=2)
    await step(engine, oid, "pay_begin", EXP - 10)
    failed = await step(engine, oid, "pay_fail", EXP + 1)
    assert failed["order"]["status"] == "expired" and "error" not in failed
    assert failed["stock_changed"] is True and failed["left"] == 5
    assert await holds_of(engine) == {}


async def test_pay_begin_after_expiry_expires_once(engine: Engine) -> None:
    await install(engine, qty=5)
    oid = await reserved_order(engine, "u1", 2)
    await reserved_order(engine, "u2", 1)
    assert await left_of(engine) == 2
    late = await step(engine, oid, "pay_begin", EXP)  # expires_at itself is too late
    assert late["error"] == "expired" and late["order"]["status"] == "expired"
    assert late["changed"] is True and late["left"] == 4
    assert await holds_of(engine) == {"u2": 1}
    for action in ("pay_begin", "expire", "pay_fail", "cancel", "pay_begin"):
        again = await step(engine, oid, action, EXP + 100)
        assert again["order"]["status"] == "expired"
        assert "changed" not in again and "left" not in again
    assert (await step(engine, oid, "pay_ok", EXP + 100))["error"] == "expired"
    assert await left_of(engine) == 4  # released exactly once
    assert await holds_of(engine) == {"u2": 1}
    statuses = [o["status"] for o in await collect_log(engine) if o["id"] == oid]
    assert statuses == ["reserved", "expired"]


async def test_expire_only_after_expires_at_and_never_while_paying(engine: Engine) -> None:
    await install(engine, qty=5)
    early, paying = await reserved_order(engine), await reserved_order(engine, "u2")
    assert await step(engine, early, "expire", EXP - 1) == {"order": await order_of(engine, early)}
    assert (await order_of(engine, early))["status"] == "reserved"
    await step(engine, paying, "pay_begin", EXP - 1)
    untouched = await step(engine, paying, "expire", EXP + 10_000)
    assert untouched["order"]["status"] == "paying" and "changed" not in untouched
    assert await left_of(engine) == 3
    expired = await step(engine, early, "expire", EXP)
    assert expired["order"]["status"] == "expired" and expired["left"] == 4
    assert await holds_of(engine) == {"u2": 1}


async def test_cancel(engine: Engine) -> None:
    await install(engine, qty=5)
    oid = await reserved_order(engine, qty=2)
    cancelled = await step(engine, oid, "cancel", T0 + 2000)
    assert cancelled["order"]["status"] == "cancelled" and cancelled["left"] == 5
    assert cancelled["changed"] is True and cancelled["status_changed"] is False
    again = await step(engine, oid, "cancel", T0 + 3000)
    assert again == {"order": cancelled["order"]}  # idempotent
    assert await left_of(engine) == 5
    assert await holds_of(engine) == {}
    paid = await reserved_order(engine)
    await step(engine, paid, "pay_begin", T0 + 2000)
    assert (await step(engine, paid, "cancel", T0 + 2000))["error"] == "conflict"  # paying
    await step(engine, paid, "pay_ok", T0 + 2000)
    refused = await step(engine, paid, "cancel", T0 + 2000)
    assert refused["error"] == "conflict" and refused["order"]["status"] == "paid"
    assert await left_of(engine) == 4


async def test_release_puts_a_sold_out_sale_back_on_sale(engine: Engine) -> None:
    await install(engine, qty=2)
    first, second = await reserved_order(engine, "u1"), await reserved_order(engine, "u2")
    assert (await sale_get(engine) or {})["status"] == "sold_out"
    back = await step(engine, first, "cancel", T0 + 2000)
    assert back["status_changed"] is True and back["left"] == 1
    assert (await sale_get(engine) or {})["status"] == "live"
    more = await step(engine, second, "expire", EXP)
    assert more["status_changed"] is False and more["left"] == 2
    assert (await buy(engine, "u3", 2))["status_changed"] is True


async def test_unknown_order_and_action(engine: Engine) -> None:
    await install(engine)
    assert await step(engine, "o-none", "cancel", T0) == {"error": "not_found"}
    oid = await reserved_order(engine)
    assert await step(engine, oid, "refund", T0) == {"error": "invalid"}


# ---------------------------------------------------------------------- pay vs expiry


@pytest.mark.parametrize("seed", [7, 8])
async def test_payment_races_expiry(make_node: MakeNode, seed: int) -> None:
    """200 orders, each paid on one node while its hold expires on another."""
    rng = random.Random(seed)
    payer, expirer = (await make_node("pay", **QUIET)).engine, (await make_node("exp")).engine
    count, exp = 200, T0 + 60_000
    await install(payer, qty=count, limit=1)
    order_ids = [f"race{seed}-{i}" for i in range(count)]
    for i, oid in enumerate(order_ids):
        assert (await buy(payer, f"u{i}", 1, order_id=oid, now=T0, hold_ms=60_000))["new"]
    assert await left_of(payer) == 0

    async def settle(yields: int) -> None:
        for _ in range(yields):
            await asyncio.sleep(0)

    async def pay(oid: str, now: int, yields: int) -> tuple[bool, str]:
        """(whether this payment began, the status it left the order in)"""
        await settle(yields)
        begun = await step(payer, oid, "pay_begin", now)
        if "error" in begun:
            return False, begun["order"]["status"]
        assert begun["order"]["status"] == "paying"
        await settle(yields)
        return True, (await step(payer, oid, "pay_ok", now + 5))["order"]["status"]

    async def expire(oid: str, now: int, yields: int) -> str:
        await settle(yields)
        return str((await step(expirer, oid, "expire", now))["order"]["status"])

    jobs = []
    for oid in order_ids:
        pay_job = pay(oid, exp + rng.randint(-3, 3), rng.randint(0, 3))
        expire_job = expire(oid, exp + rng.randint(-3, 3), rng.randint(0, 3))
        jobs.append(asyncio.gather(pay_job, expire_job))
    raced = await asyncio.gather(*jobs)
    outcomes = [paid for paid, _ in raced]
    seen_by_expiry = Counter(seen for _, seen in raced)
    # The race really ran: the expiry met orders mid-payment, and expired others itself.
    assert seen_by_expiry["paying"] > 0 and seen_by_expiry["expired"] > 0, seen_by_expiry
    # A payment that began is never expired under it (the order was `paying`): it completes.
    assert all(status == "paid" for began, status in outcomes if began)
    assert all(status == "expired" for began, status in outcomes if not began)
    paid_by_payer = {oid for oid, (began, _) in zip(order_ids, outcomes, strict=True) if began}

    final = await orders_of(expirer)
    statuses = Counter(order["status"] for order in final.values())
    assert set(statuses) == {"paid", "expired"}  # both outcomes happened, nothing else
    assert {oid for oid, o in final.items() if o["status"] == "paid"} == paid_by_payer
    assert await left_of(expirer) == statuses["expired"]  # released exactly once each
    assert await holds_of(expirer) == held_by_orders(final)
    assert sum((await holds_of(expirer)).values()) == statuses["paid"]

    terminal: dict[str, list[str]] = {}
    for order in await collect_log(payer):
        if order["status"] != "reserved":
            terminal.setdefault(order["id"], []).append(order["status"])
    assert terminal == {oid: [order["status"]] for oid, order in final.items()}


# ---------------------------------------------------------------------- twins agree


async def test_memory_and_redis_twins_agree(engine_redis: RedisServer) -> None:
    """One seeded random history of every step, run on both backends: same answers."""
    redis.Redis.from_url(engine_redis.url).flushall()
    memory = MemoryEngine("twin-m")
    red = RedisEngine(engine_redis.url, "twin-r", **FAST)
    rng = random.Random(42)
    try:
        for engine in (memory, red):
            await install(engine, sale="a", qty=6, limit=3, starts_at=T0, ends_at=T0 + 9000)
            await install(engine, sale="b", qty=2, limit=1, status="scheduled")
        order_ids: list[str] = []
        actions = ["pay_begin", "pay_ok", "pay_fail", "expire", "cancel", "bogus"]
        for n in range(300):
            sale = rng.choice(["a", "b", "x"])
            roll = rng.random()
            now = T0 + rng.randint(-500, 10_000)
            call: tuple[str, list[str], list[Any]]
            if roll < 0.45:
                user, qty = rng.choice(["u1", "u2", "u3"]), rng.randint(1, 3)
                oid = f"t{n}"
                order_ids.append(oid)
                order = new_order("r1", sale, user, qty, "x", now=now, expires_at=now + 2000)
                order["id"] = oid
                idem = keys.idempotency("r1", user, f"buy:{sale}", f"rq{rng.randint(0, 20)}")
                args = [now, user, qty, jsonutil.dumps(order), IDEM_TTL_MS]
                call = ("sale_buy", [*sale_keys("r1", sale), idem], args)
            elif roll < 0.85 and order_ids:
                args = [rng.choice(order_ids), rng.choice(actions), now]
                call = ("sale_order_step", sale_keys("r1", sale), args)
            else:
                op = rng.choice(["sale_get", "sale_orders", "sale_order"])
                if op == "sale_order" and not order_ids:
                    op = "sale_get"
                args = [rng.choice(order_ids)] if op == "sale_order" else []
                call = (op, sale_keys("r1", sale), args)
            got = [await engine.atomic(*call) for engine in (memory, red)]
            if call[0] == "sale_orders":
                got = [sorted(g, key=lambda o: o["id"]) for g in got]
            assert got[0] == got[1], (n, call)
        for sale in ("a", "b"):
            assert await holds_of(memory, "r1", sale) == await holds_of(red, "r1", sale)
    finally:
        await red.close()
