"""Group-buy atomic steps (``engine/lua/group_*.lua`` and their twins in
``memory_group_ops.py``): one contract, both backends.

Keys and records mirror ``features/groupbuy/service.py`` (``group_keys``, ``_order``,
``_group``) but are built here, so these tests pin the engine's side on their own.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import redis

from livecommerce import jsonutil
from livecommerce.engine import Engine, keys
from livecommerce.engine.memory import MemoryEngine
from livecommerce.engine.redis import RedisEngine
from livecommerce.features.groupbuy.public import GROUP_LOG, group_keys
from tests.engine.conftest import FAST, MakeNode
from tests.support.redis_server import RedisServer

T0 = 1_700_000_000_000
TTL = 60_000
IDEM_TTL_MS = 3_600_000
Json = dict[str, Any]

_ids = itertools.count(1)


async def install(
    engine: Engine,
    *,
    camp: str = "c1",
    size: int = 3,
    tiers: tuple[tuple[int, int], ...] = (),
    price: int = 1000,
    left: int = -1,
    ends_at: int = T0 + 3_600_000,
) -> Json:
    terms = {"id": camp, "room_id": "r1", "group_size": size, "price_cents": price}
    max_size = tiers[-1][0] if tiers else size
    args = [jsonutil.dumps(terms), size, max_size, price, jsonutil.dumps(tiers), ends_at, left]
    result: Json = await engine.atomic("group_init", group_keys("r1", camp), args)
    return result


async def seat(
    engine: Engine,
    user: str,
    mode: str = "open",
    group_id: str = "",
    *,
    camp: str = "c1",
    request_id: str | None = None,
    now: int = T0,
    new_group: str | None = None,
    order_id: str | None = None,
) -> Json:
    """One ``group_seat`` as the service sends it (fresh order and group ids each call)."""
    n = next(_ids)
    order = {
        "id": order_id or f"o{n}",
        "user_id": user,
        "room_id": "r1",
        "product_id": "p1",
        "kind": "groupbuy",
        "ref_id": "",
        "qty": 1,
        "unit_price_cents": 1000,
        "amount_cents": 1000,
        "refund_cents": 0,
        "status": "paying",
        "request_id": request_id or f"rq{n}",
        "created_at": now,
        "updated_at": now,
        "expires_at": None,
    }
    group = {
        "id": new_group or f"g{n}",
        "campaign_id": camp,
        "room_id": "r1",
        "leader": {"id": user, "name": user.upper()},
        "members": [],
        "status": "forming",
        "price_cents": 1000,
        "created_at": now,
        "expires_at": now + TTL,
        "updated_at": now,
    }
    idem = keys.idempotency("r1", user, f"gb:{camp}", order["request_id"])
    args = [now, user, user.upper(), mode, group_id, jsonutil.dumps(order)]
    args += [jsonutil.dumps(group), IDEM_TTL_MS]
    result: Json = await engine.atomic("group_seat", [*group_keys("r1", camp), idem], args)
    return result


async def step(engine: Engine, order_id: str, action: str, now: int = T0 + 10) -> Json:
    result: Json = await engine.atomic(
        "group_step", group_keys("r1", "c1"), [order_id, action, now]
    )
    return result


async def settle(engine: Engine, group_id: str, now: int = T0 + TTL) -> Json:
    result: Json = await engine.atomic("group_settle", group_keys("r1", "c1"), [group_id, now])
    return result


async def read(engine: Engine, group_id: str) -> Json | None:
    found: Json | None = await engine.atomic("group_read", group_keys("r1", "c1"), [group_id])
    return found


async def campaign(engine: Engine, with_groups: bool = True) -> Json | None:
    flag = "1" if with_groups else "0"
    found: Json | None = await engine.atomic("group_campaign", group_keys("r1", "c1"), [flag])
    return found


async def order(engine: Engine, order_id: str) -> Json | None:
    found: Json | None = await engine.atomic("group_order", group_keys("r1", "c1"), [order_id])
    return found


async def paid_member(engine: Engine, user: str, mode: str = "join", group_id: str = "") -> Json:
    """Seat ``user`` and pay: the step's result."""
    seated = await seat(engine, user, mode, group_id)
    assert seated.get("new"), seated
    return await step(engine, seated["order"]["id"], "pay_ok")


async def open_group(engine: Engine, leader: str = "lead", now: int = T0) -> str:
    seated = await seat(engine, leader, now=now)
    await step(engine, seated["order"]["id"], "pay_ok", now)
    return str(seated["group"]["id"])


def statuses(group: Json) -> list[tuple[str, str]]:
    return [(m["id"], m["status"]) for m in group["members"]]


# ---------------------------------------------------------------------- install and read


async def test_init_installs_once_and_reads(engine: Engine) -> None:
    assert await campaign(engine) is None
    assert await install(engine, left=5) == {"installed": True}
    assert await install(engine, left=99, size=9) == {"installed": False}
    found = await campaign(engine)
    assert found == {
        "terms": {"id": "c1", "room_id": "r1", "group_size": 3, "price_cents": 1000},
        "campaign": {"left": 5, "status": "live", "succeeded": 0, "failed": 0, "open": 0},
        "groups": [],
    }
    assert await install(engine, camp="c0", left=0) == {"installed": True}
    zero = await engine.atomic("group_campaign", group_keys("r1", "c0"), ["0"])
    assert zero["campaign"]["status"] == "sold_out"
    assert await read(engine, "g-none") is None and await order(engine, "o-none") is None


# ---------------------------------------------------------------------- seats


async def test_open_is_invisible_until_the_leader_paid(engine: Engine) -> None:
    await install(engine, left=10)
    opened = await seat(engine, "lead", new_group="g-a", order_id="o-a")
    assert opened["new"] is True and opened["opened"] is True
    assert opened["status_changed"] is False and opened["campaign"]["left"] == 9
    group, placed = opened["group"], opened["order"]
    assert group["status"] == "forming" and statuses(group) == [("lead", "paying")]
    assert group["members"][0] == {"id": "lead", "name": "LEAD", "order_id": "o-a",
                                   "status": "paying"}  # fmt: skip
    assert placed["ref_id"] == "g-a" and placed["expires_at"] == T0 + TTL
    assert placed["status"] == "paying" and await order(engine, "o-a") == placed
    # Nobody can see or join a forming group; auto-match opens another one.
    assert await seat(engine, "u1", "join", "g-a") == {"error": "not_found"}
    other = await seat(engine, "u1", "auto", new_group="g-b")
    assert other["opened"] is True and other["group"]["id"] == "g-b"
    assert (await campaign(engine) or {})["groups"] == []
    paid = await step(engine, "o-a", "pay_ok")
    assert paid["changed"] is True and paid["opened"] is True and paid["settled"] is None
    assert paid["order"]["status"] == "paid" and paid["group"]["status"] == "open"
    assert paid["campaign"]["open"] == 1 and paid["orders"] == []
    assert [g["id"] for g in (await campaign(engine) or {})["groups"]] == ["g-a"]
    assert (await seat(engine, "u2", "join", "g-a"))["new"] is True


async def test_join_refusals(engine: Engine) -> None:
    await install(engine, size=2)
    gid = await open_group(engine)
    assert await seat(engine, "lead", "join", gid) == {"error": "already_joined"}
    assert await seat(engine, "u1", "join", "g-nope") == {"error": "not_found"}
    assert await seat(engine, "u1", "join", gid, now=T0 + TTL) == {"error": "expired"}
    assert await seat(engine, "u1", "bogus") == {"error": "invalid"}
    assert await seat(engine, "u1", camp="c-nope") == {"error": "not_found"}
    held = await seat(engine, "u1", "join", gid)  # the last seat, still paying
    assert await seat(engine, "u2", "join", gid) == {"error": "group_full"}
    assert await seat(engine, "u1", "join", gid) == {"error": "already_joined"}
    done = await step(engine, held["order"]["id"], "pay_ok")
    assert done["settled"] == "succeeded"
    assert await seat(engine, "u2", "join", gid) == {"error": "group_full"}
    assert await seat(engine, "u1", "join", gid) == {"error": "already_joined"}
    # A failed group is expired for everyone but its members.
    failed = await open_group(engine, "lead2")
    await settle(engine, failed)
    assert await seat(engine, "u3", "join", failed) == {"error": "expired"}
    assert await seat(engine, "lead2", "join", failed) == {"error": "already_joined"}


async def test_campaign_window_and_stock(engine: Engine) -> None:
    await install(engine, size=2, left=2, ends_at=T0 + 1000)
    gid = await open_group(engine)
    assert await seat(engine, "u1", now=T0 + 1000) == {"error": "ended"}
    # Open groups still take members after the campaign's end, until they expire.
    last = await seat(engine, "u1", "auto", now=T0 + 1000, new_group="g-x")
    assert last["group"]["id"] == gid and last["status_changed"] is True
    assert last["campaign"] == {
        "left": 0, "status": "sold_out", "succeeded": 0, "failed": 0, "open": 1,
    }  # fmt: skip
    assert await seat(engine, "u2", "auto", now=T0 + 1000) == {"error": "ended"}
    await install(engine, camp="c2", left=1)
    first = await seat(engine, "a", camp="c2")
    assert first["campaign"]["left"] == 0
    assert await seat(engine, "b", camp="c2") == {"error": "sold_out"}


async def test_retried_request_returns_the_first_seat(engine: Engine) -> None:
    await install(engine, left=5)
    first = await seat(engine, "lead", request_id="r1", new_group="g-1", order_id="o-1")
    again = await seat(engine, "lead", request_id="r1", new_group="g-2", order_id="o-2")
    assert again == {
        "new": False,
        "order": first["order"],
        "group": first["group"],
        "campaign": {**first["campaign"]},
    }
    await step(engine, "o-1", "pay_ok")
    paid = await seat(engine, "lead", "auto", request_id="r1", new_group="g-3")
    assert paid["new"] is False and paid["order"]["status"] == "paid"
    assert paid["group"]["status"] == "open" and paid["campaign"]["left"] == 4
    assert (await seat(engine, "other", request_id="r1"))["new"] is True  # another user


async def test_decline_releases_the_seat_and_the_unit(engine: Engine) -> None:
    await install(engine, size=3, left=3)
    gid = await open_group(engine)
    a = await seat(engine, "a", "join", gid)
    b = await seat(engine, "b", "join", gid)
    assert b["status_changed"] is True and b["campaign"]["status"] == "sold_out"
    declined = await step(engine, a["order"]["id"], "pay_fail")
    assert declined["changed"] is True and declined["status_changed"] is True
    assert declined["order"]["status"] == "declined"
    assert statuses(declined["group"]) == [("lead", "paid"), ("b", "paying")]
    assert declined["campaign"]["left"] == 1 and declined["campaign"]["status"] == "live"
    # Replays change nothing: no second unit, and a late charge is answered `expired`.
    assert await step(engine, a["order"]["id"], "pay_fail") == {"order": declined["order"]}
    late = await step(engine, a["order"]["id"], "pay_ok")
    assert late == {"order": declined["order"], "error": "expired"}
    assert (await campaign(engine) or {})["campaign"]["left"] == 1
    assert (await seat(engine, "a", "join", gid))["new"] is True  # the seat is free again


async def test_a_declined_leader_leaves_no_group(engine: Engine) -> None:
    await install(engine, left=4)
    opened = await seat(engine, "lead", new_group="g-gone")
    dropped = await step(engine, opened["order"]["id"], "pay_fail")
    assert dropped["group"]["status"] == "cancelled" and dropped["opened"] is False
    assert statuses(dropped["group"]) == [("lead", "declined")]
    assert dropped["campaign"] == {
        "left": 4, "status": "live", "succeeded": 0, "failed": 0, "open": 0,
    }  # fmt: skip
    assert await read(engine, "g-gone") is None
    assert await settle(engine, "g-gone") == {"error": "not_found"}
    assert await seat(engine, "u1", "join", "g-gone") == {"error": "not_found"}


async def test_the_last_paid_seat_succeeds_the_group(engine: Engine) -> None:
    await install(engine, size=3, left=10)
    gid = await open_group(engine)
    second = await paid_member(engine, "a", group_id=gid)
    assert second["settled"] is None and second["group"]["status"] == "open"
    last = await paid_member(engine, "b", group_id=gid)
    assert last["settled"] == "succeeded" and last["group"]["status"] == "succeeded"
    assert last["group"]["price_cents"] == 1000 and last["group"]["settled_at"] == T0 + 10
    assert sorted(o["user_id"] for o in last["orders"]) == ["a", "b", "lead"]
    assert {(o["status"], o["amount_cents"], o["refund_cents"]) for o in last["orders"]} == {
        ("confirmed", 1000, 0)
    }
    assert last["campaign"] == {
        "left": 7, "status": "live", "succeeded": 1, "failed": 0, "open": 0,
    }  # fmt: skip
    # Settling it again at expiry hands back the same orders and changes nothing.
    again = await settle(engine, gid)
    assert "changed" not in again and again["group"] == last["group"]
    assert sorted(again["orders"], key=lambda o: o["id"]) == sorted(
        last["orders"], key=lambda o: o["id"]
    )
    assert again["campaign"]["succeeded"] == 1


async def test_a_paying_seat_holds_success_back(engine: Engine) -> None:
    await install(engine, size=2)
    gid = await open_group(engine)
    held = await seat(engine, "a", "join", gid)
    assert await settle(engine, gid, T0 + TTL - 1) == {
        "early": True, "group": held["group"], "orders": [], "campaign": held["campaign"],
    }  # fmt: skip
    waiting = await settle(engine, gid)
    assert waiting["paying"] == [held["order"]["id"]] and "changed" not in waiting
    # Paid after the deadline: the seat was taken before it, so the group is full.
    done = await step(engine, held["order"]["id"], "pay_ok", T0 + TTL + 5)
    assert done["settled"] == "succeeded"


async def test_short_groups_fail_at_expiry_and_give_units_back(engine: Engine) -> None:
    await install(engine, size=3, left=2)
    gid = await open_group(engine)
    await paid_member(engine, "a", group_id=gid)
    failed = await settle(engine, gid)
    assert failed["changed"] is True and failed["status_changed"] is True
    assert failed["group"]["status"] == "failed" and failed["group"]["settled_at"] == T0 + TTL
    assert {(o["status"], o["refund_cents"]) for o in failed["orders"]} == {("refunding", 1000)}
    assert len({o["id"] for o in failed["orders"]}) == 2  # one refund per member order
    assert failed["campaign"] == {
        "left": 2, "status": "live", "succeeded": 0, "failed": 1, "open": 0,
    }  # fmt: skip
    first = failed["orders"][0]["id"]
    refunded = await step(engine, first, "refunded", T0 + TTL + 1)
    assert refunded == {"changed": True, "order": {**refunded["order"], "status": "refunded"}}
    assert await step(engine, first, "refunded") == {"order": refunded["order"]}
    again = await settle(engine, gid, T0 + TTL + 99)  # a re-fired timer
    assert "changed" not in again and again["campaign"]["left"] == 2  # no second give-back
    assert sorted(o["status"] for o in again["orders"]) == ["refunded", "refunding"]
    assert await step(engine, first, "bogus") == {"error": "invalid"}


async def test_tiers_keep_the_group_open_and_price_the_reached_tier(engine: Engine) -> None:
    await install(engine, size=2, tiers=((3, 900), (4, 800)))
    gid = await open_group(engine)
    for user in ("a", "b"):  # 3 paid: past group_size, below the largest tier
        assert (await paid_member(engine, user, group_id=gid))["settled"] is None
    done = await settle(engine, gid)
    assert done["group"]["status"] == "succeeded" and done["group"]["price_cents"] == 900
    assert {(o["status"], o["amount_cents"], o["refund_cents"]) for o in done["orders"]} == {
        ("confirmed", 900, 100)
    }
    # A group reaching the largest tier succeeds at once, at its price.
    full = await open_group(engine, "lead2")
    for user in ("a", "b"):
        await paid_member(engine, user, group_id=full)
    last = await paid_member(engine, "c", group_id=full)
    assert last["settled"] == "succeeded" and last["group"]["price_cents"] == 800
    assert {(o["amount_cents"], o["refund_cents"]) for o in last["orders"]} == {(800, 200)}
    assert len(last["orders"]) == 4
    assert await seat(engine, "d", "join", full) == {"error": "group_full"}


async def test_auto_match_picks_the_fullest_then_the_earliest(engine: Engine) -> None:
    await install(engine, size=4)
    g1 = await open_group(engine, "l1", T0)
    g2 = await open_group(engine, "l2", T0 + 1)
    g3 = await open_group(engine, "l3", T0 + 2)
    await paid_member(engine, "x", group_id=g3)  # g3: 2 members, the fullest
    await paid_member(engine, "y", group_id=g2)  # g2: 2 members, earlier than g3
    await paid_member(engine, "z", group_id=g1)  # ... and g1 too, the earliest
    await paid_member(engine, "w", group_id=g1)  # g1: 3 members now
    assert (await seat(engine, "u1", "auto"))["group"]["id"] == g1
    assert (await seat(engine, "u2", "auto"))["group"]["id"] == g2  # g1 is held full
    assert (await seat(engine, "x", "auto"))["group"]["id"] == g2  # skips its own g3
    assert (await seat(engine, "u3", "auto"))["group"]["id"] == g3
    # Expired groups are skipped; with none left, auto opens a group of its own.
    late = await seat(engine, "u4", "auto", now=T0 + TTL + 2, new_group="g-new")
    assert late["opened"] is True and late["group"]["id"] == "g-new"


async def test_concurrent_joiners_never_overfill(make_node: MakeNode) -> None:
    """The last-seat race on one backend: joiners on two nodes at once, several sizes."""
    a, b = (await make_node("a")).engine, (await make_node("b")).engine
    rng = random.Random(5)
    for round_ in range(4):
        size = rng.randint(2, 6)
        camp = f"race{round_}"
        await install(a, camp=camp, size=size)
        seated = await seat(a, "lead", camp=camp)
        await a.atomic("group_step", group_keys("r1", camp), [seated["order"]["id"], "pay_ok", T0])
        gid = seated["group"]["id"]
        results = await asyncio.gather(
            *(seat((a, b)[i % 2], f"u{i}", "join", gid, camp=camp) for i in range(20))
        )
        won = [r for r in results if r.get("new")]
        assert len(won) == size - 1
        assert {r["error"] for r in results if "error" in r} == {"group_full"}
        group = (await b.atomic("group_read", group_keys("r1", camp), [gid]))["group"]
        assert len(group["members"]) == size


async def test_steps_log_orders_and_groups(engine: Engine) -> None:
    await install(engine, size=2)
    await engine.log_register(GROUP_LOG, group_keys("r1", "c1")[4])
    entries: list[tuple[str, Json]] = []

    async def sink(batch: list[Json]) -> None:
        entries.extend((kind, jsonutil.loads(v)) for e in batch for kind, v in e.items())

    engine.on_log(GROUP_LOG, sink)
    gid = await open_group(engine)
    await paid_member(engine, "a", group_id=gid)
    await engine.drain_logs()
    seen = [(kind, r["status"]) for kind, r in entries]
    assert seen == [
        ("g", "forming"), ("o", "paying"), ("o", "paid"), ("g", "open"),  # the leader
        ("g", "open"), ("o", "paying"), ("o", "paid"),  # a seat, then paid
        ("o", "confirmed"), ("o", "confirmed"), ("g", "succeeded"),  # the group is full
    ]  # fmt: skip


# ---------------------------------------------------------------------- twins agree


async def test_memory_and_redis_twins_agree(engine_redis: RedisServer) -> None:
    """One seeded random history of every op, run on both backends: same answers."""
    redis.Redis.from_url(engine_redis.url).flushall()
    memory = MemoryEngine("twin-m")
    red = RedisEngine(engine_redis.url, "twin-r", **FAST)
    rng = random.Random(11)
    try:
        for engine in (memory, red):
            await install(engine, size=2, tiers=((3, 900),), left=15, ends_at=T0 + TTL)
        orders: list[str] = []
        groups: list[str] = []
        for n in range(400):
            roll, now = rng.random(), T0 + rng.randint(0, 2 * TTL)
            user = rng.choice(["u1", "u2", "u3", "u4", "u5"])
            if roll < 0.4:
                mode = rng.choice(["open", "join", "auto", "auto", "join", "x"])
                target = rng.choice(groups) if groups and mode == "join" else ""
                ids = {"new_group": f"tg{n}", "order_id": f"to{n}"}
                rq = f"rq{rng.randint(0, 40)}"
                got = [await seat(e, user, mode, target, now=now, request_id=rq, **ids)
                       for e in (memory, red)]  # fmt: skip
                if got[0].get("new"):
                    orders.append(got[0]["order"]["id"])
                    groups.append(got[0]["group"]["id"])
            elif roll < 0.8 and orders:
                action = rng.choice(["pay_ok", "pay_ok", "pay_fail", "refunded", "bogus"])
                oid = rng.choice(orders)
                got = [await step(e, oid, action, now) for e in (memory, red)]
            elif groups:
                gid = rng.choice(groups)
                got = [await settle(e, gid, now) for e in (memory, red)]
            else:
                continue
            for reply in got:
                if isinstance(reply.get("orders"), list):
                    reply["orders"].sort(key=lambda o: o["id"])
            assert got[0] == got[1], n
        state = [await campaign(e) for e in (memory, red)]
        for found in state:
            assert found is not None
            found["groups"].sort(key=lambda g: g["id"])
        assert state[0] == state[1]
    finally:
        await red.close()
