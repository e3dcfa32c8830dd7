"""Several nodes (one connection pool each) writing the same rows at once, on SQLite and
on PostgreSQL: no write is lost, none is doubled, no writer fails.

On SQLite write transactions run one at a time (BEGIN IMMEDIATE); on PostgreSQL they
really overlap at READ COMMITTED, which is where a read-then-write loses an update, an
insert of a row another node just inserted fails, and two writers deadlock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from livecommerce.persistence.commerce import Payments
from livecommerce.persistence.db import Database
from livecommerce.persistence.draws import Draws
from livecommerce.persistence.groupbuy import Coupons, GroupRecords
from livecommerce.persistence.metrics import MetricsHistory
from livecommerce.persistence.migrate import migrate
from livecommerce.persistence.models import Comment, Order, PkBattle
from livecommerce.persistence.pk import PkBattles
from livecommerce.persistence.repositories import Orders, Rooms, Users
from livecommerce.persistence.social import Comments, LikeTotals

pytestmark = pytest.mark.both_databases

NODES = 4
ROUNDS = 8


@pytest.fixture
async def nodes(db_url: str) -> AsyncIterator[list[Database]]:
    """NODES handles on one migrated database, each with its own pool, as nodes have."""
    await migrate(db_url)
    databases = [Database(db_url) for _ in range(NODES)]
    yield databases
    for database in databases:
        await database.close()


async def _count(db: Database, model: Any) -> int:
    async with db.session(readonly=True) as s:
        return int(await s.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def _order(order_id: str, updated_at: int) -> dict[str, Any]:
    return {
        "id": order_id,
        "user_id": "u_1",
        "room_id": "r_1",
        "product_id": "p_1",
        "kind": "flashsale",
        "ref_id": "s_1",
        "qty": 1,
        "unit_price_cents": 100,
        "amount_cents": 100,
        "status": f"s{updated_at}",  # one status per write: the newest must be the one kept
        "request_id": f"q_{order_id}",
        "created_at": 1,
        "updated_at": updated_at,
    }


async def test_overlapping_order_batches_keep_one_row_each_and_the_newest(
    nodes: list[Database],
) -> None:
    """The order writers of four nodes upsert overlapping batches (the log is at-least-once
    and claimed by whichever node is free): every order is reported inserted exactly once,
    stored once, and ends at the newest status any node wrote for it."""
    ids = [f"o_{n:02d}" for n in range(20)]
    written: dict[str, list[int]] = {order_id: [] for order_id in ids}
    inserted: list[int] = []

    async def node(worker: int) -> None:
        orders, rng = Orders(nodes[worker]), random.Random(worker)
        for round_ in range(2 * ROUNDS):
            picked = rng.sample(ids, 15)
            # Unique per (round, worker, position), so unique per order id.
            stamp = (round_ * NODES + worker) * 100
            batch = [_order(oid, stamp + i) for i, oid in enumerate(picked)]
            for row in batch:
                written[row["id"]].append(row["updated_at"])
            if round_ % 4 == 3:  # the single-order path races the batch path too
                inserted.extend([int(await orders.upsert(row)) for row in batch[:3]])
                batch = batch[3:]
            inserted.append(await orders.upsert_many(batch))

    await asyncio.gather(*(node(w) for w in range(NODES)))
    assert sum(inserted) == len(ids)
    assert await _count(nodes[0], Order) == len(ids)
    for order_id, stamps in written.items():
        stored = await Orders(nodes[0]).get(order_id)
        newest = max(stamps)
        assert stored is not None and (stored.status, stored.updated_at) == (f"s{newest}", newest)


def _group(group_id: str, updated_at: int, members: int) -> dict[str, Any]:
    return {
        "id": group_id,
        "campaign_id": "gc_1",
        "room_id": "r_1",
        "leader": {"id": "u_1"},
        "status": f"s{updated_at}",
        "members": [{"status": "paid"}] * members,
        "price_cents": 100 * members,
        "created_at": 1,
        "expires_at": 10_000,
        "settled_at": None,
        "updated_at": updated_at,
    }


async def test_overlapping_group_records_keep_one_row_each_and_the_newest(
    nodes: list[Database],
) -> None:
    """Group-buy log writers on four nodes: member orders and groups, written together in
    one transaction, each stored once at its newest state."""
    group_ids = [f"g_{n}" for n in range(6)]
    order_ids = [f"o_{n:02d}" for n in range(12)]
    newest: dict[str, tuple[int, int]] = {}  # id -> (updated_at, members) written last
    newest_order: dict[str, int] = {}

    async def node(worker: int) -> None:
        records, rng = GroupRecords(nodes[worker]), random.Random(100 + worker)
        for round_ in range(ROUNDS):
            stamp = (round_ * NODES + worker) * 10
            groups = [_group(g, stamp, rng.randint(1, 5)) for g in rng.sample(group_ids, 3)]
            orders = [_order(o, stamp) | {"kind": "groupbuy"} for o in rng.sample(order_ids, 6)]
            for group in groups:
                if stamp > newest.get(group["id"], (-1, 0))[0]:
                    newest[group["id"]] = (stamp, len(group["members"]))
            for order in orders:
                newest_order[order["id"]] = max(stamp, newest_order.get(order["id"], -1))
            await records.write(orders, groups)

    await asyncio.gather(*(node(w) for w in range(NODES)))
    records = GroupRecords(nodes[0])
    for group_id, (stamp, members) in newest.items():
        stored = await records.group(group_id)
        assert stored is not None
        assert (stored.status, stored.updated_at, stored.members) == (f"s{stamp}", stamp, members)
    assert await _count(nodes[0], Order) == len(newest_order)
    for order_id, stamp in newest_order.items():
        order = await Orders(nodes[0]).get(order_id)
        assert order is not None and (order.status, order.updated_at) == (f"s{stamp}", stamp)


async def test_overlapping_comment_batches_store_each_comment_once(
    nodes: list[Database],
) -> None:
    """Comment writers on four nodes insert overlapping batches and delete some comments:
    each comment is inserted by exactly one of them, and a deletion is whole."""
    ids = [f"c_{n:02d}" for n in range(40)]
    inserted: list[int] = []

    def comment(comment_id: str) -> dict[str, Any]:
        return {
            "id": comment_id,
            "room_id": "r_1",
            "user_id": "u_1",
            "user_name": "U",
            "user_role": "viewer",
            "text": f"about {comment_id}",
            "created_at": 5,
        }

    async def node(worker: int) -> None:
        comments, rng = Comments(nodes[worker]), random.Random(200 + worker)
        for round_ in range(ROUNDS):
            batch = [comment(c) for c in rng.sample(ids, 12)]
            gone = {c: (round_, f"w{worker}") for c in rng.sample(ids[:10], 2)}
            inserted.append(await comments.write(batch, gone))

    await asyncio.gather(*(node(w) for w in range(NODES)))
    stored = {c.id: c for c in await Comments(nodes[0]).list_for_room("r_1", limit=100)}
    assert sum(inserted) == len(stored) == await _count(nodes[0], Comment)
    for row in stored.values():
        assert row.text == f"about {row.id}"
        assert (row.deleted_at is None) == (row.deleted_by is None)


async def test_like_totals_from_several_nodes_add_up(nodes: list[Database]) -> None:
    """Four nodes flush like deltas for the same rooms in opposite orders: no deadlock,
    no lost increment."""
    host = await Users(nodes[0]).create(name="H", role="host", username="host")
    rooms = [(await Rooms(nodes[0]).create(host_id=host.id, title=f"r{n}")).id for n in range(5)]

    async def node(worker: int) -> None:
        likes = LikeTotals(nodes[worker])
        order = rooms if worker % 2 else rooms[::-1]
        for round_ in range(ROUNDS):
            await likes.add({room: worker + round_ + 1 for room in order})

    await asyncio.gather(*(node(w) for w in range(NODES)))
    expected = sum(w + r + 1 for w in range(NODES) for r in range(ROUNDS))
    assert [await LikeTotals(nodes[0]).get(room) for room in rooms] == [expected] * len(rooms)


async def test_metrics_rows_of_one_period_race_to_one_row(nodes: list[Database]) -> None:
    """Two nodes that both believe they won a period's election write its row: one row,
    holding one node's numbers whole."""

    def row(worker: int) -> dict[str, Any]:
        n = worker + 1
        return {
            "period_s": 60,
            "online": n,
            "peak_online": n,
            "comments": n,
            "likes": n,
            "orders": n,
            "gmv_cents": n,
            "buyers": n,
            "products": {"p_1": n},
        }

    for at in range(0, 60_000 * ROUNDS, 60_000):
        await asyncio.gather(
            *(MetricsHistory(nodes[w]).write("r_1", at, row(w)) for w in range(NODES))
        )
    stored = await MetricsHistory(nodes[0]).since("r_1", 0)
    assert [r.at for r in stored] == list(range(0, 60_000 * ROUNDS, 60_000))
    for r in stored:
        public = r.to_public()
        n = public["online"]
        assert public == row(n - 1) | {"at": r.at, "products": {"p_1": n}}


async def test_settlements_are_recorded_once_whichever_node_races(nodes: list[Database]) -> None:
    """A re-fired timer or a retried settlement on every node at once: one PK row, one
    draw result, one coupon per order, one ledger row per idempotency key, one room
    transition; every caller agrees on which."""
    pk = {
        "id": "pk_1",
        "room_a": "r_a",
        "room_b": "r_b",
        "mode": "likes",
        "started_at": 1,
        "ended_at": 2,
        "score_a": 3,
        "score_b": 4,
        "winner_room_id": None,
        "final_json": "{}",
    }
    settled = await asyncio.gather(*(PkBattles(db).settle(**pk) for db in nodes))
    assert sorted(settled) == [False] * (NODES - 1) + [True]
    assert await _count(nodes[0], PkBattle) == 1

    await Draws(nodes[0]).create(
        id="d_1",
        room_id="r_1",
        prize="p",
        winners=1,
        entry_type="anyone",
        ends_at=9,
        seed_hex="00",
        commitment="c",
    )
    finished = await asyncio.gather(
        *(
            Draws(db).finish(
                "d_1",
                entrants=[f"u_{n}"],
                winners=[{"id": f"u_{n}", "name": "n"}],
                entered=n + 1,
                at=n,
            )
            for n, db in enumerate(nodes)
        )
    )
    assert finished.count(True) == 1
    draw = await Draws(nodes[0]).get("d_1")
    first = finished.index(True)
    assert draw is not None and (draw.status, draw.entrants_count) == ("drawn", first + 1)

    granted = await asyncio.gather(
        *(
            Coupons(db).grant(
                order_id="o_1",
                user_id="u_1",
                group_id="g_1",
                campaign_id="c_1",
                room_id="r_1",
                amount_cents=100,
            )
            for db in nodes
        )
    )
    assert [created for _, created in granted].count(True) == 1
    assert len({coupon.id for coupon, _ in granted}) == 1

    recorded = await asyncio.gather(
        *(
            Payments(db).record(
                "refund:o_1",
                order_id="o_1",
                user_id="u_1",
                kind="refund",
                amount_cents=100,
                status="succeeded",
            )
            for db in nodes
        )
    )
    assert len({payment.id for payment in recorded}) == 1
    assert len(await Payments(nodes[0]).for_order("o_1")) == 1

    host = await Users(nodes[0]).create(name="H", role="host", username="host")
    room = await Rooms(nodes[0]).create(host_id=host.id, title="t")
    moved = await asyncio.gather(
        *(Rooms(db).transition(room.id, "live", from_={"scheduled"}) for db in nodes)
    )
    assert sum(r is not None for r in moved) == 1
