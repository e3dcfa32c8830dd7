"""Repositories against a real, migrated database (a SQLite file, and a real PostgreSQL),
including races between tasks and between OS processes sharing the database."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from livecommerce import errors
from livecommerce.persistence.db import Database
from livecommerce.persistence.migrate import migrate
from livecommerce.persistence.models import Order, new_id
from livecommerce.persistence.repositories import Orders, Products, Rooms, Secrets, Users

pytestmark = pytest.mark.both_databases

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    await migrate(db_url)
    database = Database(db_url)
    yield database
    await database.close()


async def _host(db: Database, username: str = "anchor") -> str:
    return (await Users(db).create(name="Anchor", role="host", username=username)).id


def _order(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": new_id("o"),
        "user_id": "u_1",
        "room_id": "r_1",
        "product_id": "p_1",
        "kind": "flashsale",
        "ref_id": "s_1",
        "qty": 2,
        "unit_price_cents": 500,
        "amount_cents": 1000,
        "status": "reserved",
        "request_id": new_id("req"),
        "created_at": 1_000,
        "updated_at": 1_000,
        "expires_at": 301_000,
    }
    return fields | over


async def _count_orders(db: Database) -> int:
    async with db.session(readonly=True) as s:
        return int(await s.scalar(sa.select(sa.func.count()).select_from(Order)) or 0)


# --- users ---------------------------------------------------------------------------


async def test_users_create_get_and_lookup(db: Database) -> None:
    users = Users(db)
    anchor = await users.create(name="Anchor", role="host", username="anchor", password_hash="h")
    guest = await users.create(name="Guest", role="viewer", is_guest=True)
    other_guest = await users.create(name="Guest", role="viewer", is_guest=True)
    assert anchor.id.startswith("u_") and len(anchor.id) == 18
    assert anchor.to_public() == {"id": anchor.id, "name": "Anchor", "role": "host"}
    assert (await users.by_username("anchor")) is not None
    assert await users.by_username("nobody") is None
    fetched = await users.get(guest.id)
    assert fetched is not None and fetched.is_guest and fetched.username is None
    many = await users.get_many([anchor.id, other_guest.id, "u_missing"])
    assert set(many) == {anchor.id, other_guest.id}
    assert await users.get_many([]) == {}


async def test_duplicate_username_is_a_conflict(db: Database) -> None:
    users = Users(db)
    await users.create(name="A", role="viewer", username="same")
    with pytest.raises(errors.Conflict, match="username taken"):
        await users.create(name="B", role="viewer", username="same")


# --- rooms and products ----------------------------------------------------------------


async def test_rooms_create_list_and_public_shape(db: Database) -> None:
    rooms = Rooms(db)
    host = await _host(db)
    room = await rooms.create(host_id=host, title="Spring sale", stream_url="https://x/s.m3u8")
    assert room.id.startswith("r_") and room.status == "scheduled"
    public = room.to_public("Anchor")
    assert public["host"] == {"id": host, "name": "Anchor"}
    assert set(public) == {"id", "title", "status", "host", "stream_url", "starts_at",
                           "started_at", "ended_at", "created_at"}  # fmt: skip
    second = await rooms.create(host_id=host, title="Later", starts_at=123)
    assert {r.id for r in await rooms.list_by_host(host)} == {room.id, second.id}
    assert await rooms.list_by_host("u_other") == []
    assert len(await rooms.list_all(limit=1)) == 1
    assert await rooms.list_live() == []
    await rooms.transition(room.id, "live", from_={"scheduled"})
    assert [r.id for r in await rooms.list_live()] == [room.id]


async def test_room_for_unknown_host_is_not_found(db: Database) -> None:
    with pytest.raises(errors.NotFound):
        await Rooms(db).create(host_id="u_nobody", title="x")


async def test_room_transition_stamps_times_and_checks_status(db: Database) -> None:
    rooms = Rooms(db)
    room = await rooms.create(host_id=await _host(db), title="t")
    live = await rooms.transition(room.id, "live", from_={"scheduled"})
    assert live is not None and live.status == "live" and live.started_at is not None
    assert await rooms.transition(room.id, "live", from_={"scheduled"}) is None
    ended = await rooms.transition(room.id, "ended", from_={"scheduled", "live"})
    assert ended is not None and ended.ended_at is not None
    assert ended.started_at == live.started_at
    got = await rooms.get(room.id)
    assert got is not None and got.status == "ended"
    with pytest.raises(errors.NotFound):
        await rooms.transition("r_missing", "live", from_={"scheduled"})


async def test_concurrent_transitions_have_one_winner(db: Database) -> None:
    rooms = Rooms(db)
    room = await rooms.create(host_id=await _host(db), title="race")
    results = await asyncio.gather(
        *(rooms.transition(room.id, "live", from_={"scheduled"}) for _ in range(20))
    )
    assert sum(r is not None for r in results) == 1


async def test_products(db: Database) -> None:
    rooms, products = Rooms(db), Products(db)
    room = await rooms.create(host_id=await _host(db), title="t")
    first = await products.create(room_id=room.id, title="Mug", price_cents=1299, stock=10)
    await products.create(room_id=room.id, title="Cap", price_cents=900, stock=3, image_url="i")
    assert first.to_public() == {"id": first.id, "room_id": room.id, "title": "Mug",
                                 "price_cents": 1299, "stock": 10, "image_url": None}  # fmt: skip
    assert [p.title for p in await products.list_for_room(room.id)] == ["Mug", "Cap"]
    assert await products.get(first.id) is not None
    with pytest.raises(errors.NotFound):  # foreign keys are enforced
        await products.create(room_id="r_missing", title="x", price_cents=1, stock=1)


# --- orders ----------------------------------------------------------------------------


async def test_order_upsert_is_idempotent_and_moves_status_forward(db: Database) -> None:
    orders = Orders(db)
    fields = _order()
    assert await orders.upsert(fields) is True
    assert await orders.upsert(fields) is False
    assert await orders.upsert(fields | {"status": "paid", "updated_at": 2_000}) is False
    assert await orders.upsert(fields | {"status": "expired", "updated_at": 1_500}) is False
    stored = await orders.get(fields["id"])
    assert stored is not None and (stored.status, stored.updated_at) == ("paid", 2_000)
    assert stored.to_public()["amount_cents"] == 1000
    assert await _count_orders(db) == 1


async def test_order_upsert_ignores_extra_keys_and_rejects_request_reuse(db: Database) -> None:
    orders = Orders(db)
    fields = _order(sale={"id": "s_1"})
    assert await orders.upsert(fields) is True
    with pytest.raises(errors.Conflict):
        await orders.upsert(fields | {"id": new_id("o")})  # same request, another id


async def test_concurrent_upserts_of_one_order_leave_one_row(db: Database) -> None:
    orders = Orders(db)
    fields = _order()
    inserted = await asyncio.gather(*(orders.upsert(dict(fields)) for _ in range(12)))
    assert inserted.count(True) == 1
    assert await _count_orders(db) == 1


async def test_orders_list_for_user(db: Database) -> None:
    orders = Orders(db)
    await orders.upsert(_order(user_id="u_a", room_id="r_1", created_at=1))
    await orders.upsert(_order(user_id="u_a", room_id="r_2", created_at=2))
    await orders.upsert(_order(user_id="u_b", room_id="r_1"))
    assert [o.room_id for o in await orders.list_for_user("u_a")] == ["r_2", "r_1"]
    assert [o.room_id for o in await orders.list_for_user("u_a", "r_1")] == ["r_1"]
    assert await orders.list_for_user("u_c") == []


async def _hammer(url: str, start_at: float, worker: int) -> None:
    """One process's share of test_writes_from_several_processes_all_land."""
    db = Database(url)
    orders = Orders(db)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    fresh = [orders.upsert(_order()) for _ in range(30)]
    # Shared ids: read-then-write transactions that really change rows, the pattern
    # that fails at once with SQLITE_BUSY unless the write lock is taken at BEGIN.
    shared = [
        orders.upsert(_order(id=f"o_shared{n}", request_id=f"q{n}", status=f"s{worker}",
                             updated_at=time.time_ns()))
        for n in range(10)
    ]  # fmt: skip
    await asyncio.gather(*fresh, *shared)
    await db.close()


async def test_writes_from_several_processes_all_land(db: Database, db_url: str) -> None:
    """Four processes write at once, fresh orders and shared ones: none sees 'database is
    locked' (SQLite) or a duplicate key (PostgreSQL), and every order is stored once."""
    start_at = time.time() + 1.5  # all begin together, after interpreter start-up
    script = (
        "import asyncio, sys\n"
        "from tests.persistence.test_repositories import _hammer\n"
        "asyncio.run(_hammer(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            db_url,
            str(start_at),
            str(worker),
            cwd=REPO,
            stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(4)
    ]
    errs = [(await proc.communicate())[1].decode() for proc in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    assert await _count_orders(db) == 4 * 30 + 10


# --- secrets ---------------------------------------------------------------------------


async def test_secret_get_or_create_races_to_one_value(db: Database, db_url: str) -> None:
    other = Database(db_url)  # a second pool, as another node would have
    try:
        calls = [
            Secrets(each).get_or_create("jwt", partial(str, f"value-{n}"))
            for n, each in enumerate([db, other] * 8)
        ]
        values = await asyncio.gather(*calls)
    finally:
        await other.close()
    assert len(set(values)) == 1
    assert await Secrets(db).get_or_create("jwt", lambda: "never") == values[0]
    assert await Secrets(db).get("absent") is None


async def test_order_batch_upsert_inserts_new_and_moves_known_forward(db: Database) -> None:
    orders = Orders(db)
    await orders.upsert(_order(id="o_known", status="reserved", updated_at=100))
    batch = [
        _order(id="o_new", status="reserved", updated_at=100, request_id="n"),
        _order(id="o_new", status="paid", updated_at=200, request_id="n"),  # same batch
        _order(id="o_known", status="expired", updated_at=300),
        _order(id="o_known", status="paid", updated_at=250),  # older: ignored
    ]
    assert await orders.upsert_many(batch) == 1
    new, known = await orders.get("o_new"), await orders.get("o_known")
    assert new is not None and (new.status, new.updated_at) == ("paid", 200)
    assert known is not None and (known.status, known.updated_at) == ("expired", 300)
    assert await orders.upsert_many(batch) == 0  # a replayed batch changes nothing
    known = await orders.get("o_known")
    assert known is not None and known.status == "expired"


async def test_order_batch_with_rows_of_different_shapes(db: Database) -> None:
    """Engine order dicts need not all carry the optional fields: one batch may mix them."""
    bare = {k: v for k, v in _order(id="o_bare").items() if k not in ("expires_at", "request_id")}
    batch = [_order(id="o_full"), bare, _order(id="o_late", created_at=7) | {"extra": 1}]
    assert await Orders(db).upsert_many(batch) == 3
    stored = await Orders(db).get("o_bare")
    assert stored is not None and stored.expires_at is None and stored.request_id is None
    assert await _count_orders(db) == 3


async def test_order_batch_reusing_a_request_is_a_conflict(db: Database) -> None:
    orders = Orders(db)
    taken = _order(id="o_first")
    assert await orders.upsert(taken) is True
    with pytest.raises(errors.Conflict):  # same user, sale and request as o_first
        await orders.upsert_many([_order(id="o_fine"), taken | {"id": "o_thief"}])
    assert await orders.get("o_thief") is None
    assert await orders.upsert_many([taken | {"status": "paid", "updated_at": 5_000}]) == 0
    stored = await orders.get("o_first")
    assert stored is not None and stored.status == "paid"
