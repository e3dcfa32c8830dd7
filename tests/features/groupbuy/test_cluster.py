"""Group buys across real server processes sharing Redis and SQLite: the last seat of a
group raced from two nodes, and failure refunds that survive kill -9 at the deadline."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user, mint_token

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
#: Group TTLs of a few seconds (the schema's minimum is a setting: 60 s by default).
ENV = {"LIVECOMMERCE_GROUPBUY__MIN_TTL_S": "1", "LIVECOMMERCE_GROUPBUY__COUPON_CENTS": "300"}


@dataclass
class Room:
    room_id: str
    product_id: str
    host: Client


async def _room(api: Api, host_token: str, host: Client) -> Room:
    rid = (await api.ok("POST", "/api/rooms", host_token, {"title": "拼团"}))["id"]
    product = {"title": "Rice cooker", "price_cents": 30_000, "stock": 1000}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host_token, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host_token)
    return Room(rid, pid, host)


async def _campaign(room: Room, **over: Any) -> dict[str, Any]:
    terms = {
        "room_id": room.room_id,
        "product_id": room.product_id,
        "group_size": 3,
        "price_cents": 19_900,
        "group_ttl_s": 600,
        "duration_s": 3600,
        **over,
    }
    return dict((await room.host.ok("groupbuy:create", terms))["campaign"])


async def _buyers(
    nodes: list[ServerProcess], clients: ClientFactory, n: int, tag: str
) -> list[Client]:
    async def one(i: int) -> Client:
        return await clients(nodes[i % len(nodes)].url, mint_token(f"u_{tag}{i}", f"{tag} {i}"))

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _sql(db_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
        return conn.execute(query, args).fetchall()


async def _eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_last_seat_race_from_two_nodes(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2, env=ENV)
    host = await add_user(db_url, "anchor", "host")
    room = await _room(api_factory(nodes[0].url), host, await client_factory(nodes[1].url, host))
    campaign = await _campaign(room)
    joiners = await _buyers(nodes, client_factory, 20, "j")
    rng = random.Random(20261123)
    for round_, size in enumerate([3] + [rng.randint(2, 6) for _ in range(2)]):
        sized = campaign if size == 3 else await _campaign(room, group_size=size)
        leader = await client_factory(nodes[round_ % 2].url, mint_token(f"u_l{round_}", "lead"))
        opened = await leader.ok("groupbuy:open", {"campaign_id": sized["id"], "request_id": "o"})
        gid = opened["group"]["id"]
        acks = await asyncio.gather(
            *(c.call("groupbuy:join", {"group_id": gid, "request_id": f"r{round_}"})
              for c in joiners)
        )  # fmt: skip
        won = [a for a in acks if a.get("ok")]
        assert len(won) == size - 1, (size, Counter(ack_error(a) for a in acks if not a["ok"]))
        assert {ack_error(a) for a in acks if not a.get("ok")} == {"group_full"}
        assert sum(a["group"]["status"] == "succeeded" for a in won) >= 1
        members = {opened["order"]["id"], *(a["order"]["id"] for a in won)}

        def settled(gid: str = gid, members: set[str] = members) -> bool:
            rows = _sql(db_url, "SELECT id, status FROM orders WHERE ref_id = ?", gid)
            return {r[0] for r in rows} == members and {r[1] for r in rows} == {"confirmed"}

        await _eventually(settled)
        charges = _sql(
            db_url,
            "SELECT p.kind, p.status, p.amount_cents FROM payments p"
            " JOIN orders o ON o.id = p.order_id WHERE o.ref_id = ?",
            gid,
        )
        assert Counter(charges) == {("charge", "succeeded", 19_900): size}  # nobody twice
        assert _sql(db_url, "SELECT status, members FROM group_buys WHERE id = ?", gid) == [
            ("succeeded", size)
        ]


async def _failing_groups(
    room: Room, nodes: list[ServerProcess], clients: ClientFactory, groups: int, ttl_s: int
) -> tuple[list[str], dict[str, str], int]:
    """``groups`` groups of size 6 with 3 members each, opened on nodes[0], joined from
    both nodes: (group ids, member order id -> group id, the earliest expiry)."""
    campaign = await _campaign(room, group_size=6, group_ttl_s=ttl_s, quantity=100)
    buyers = await _buyers(nodes, clients, groups * 2, "m")
    orders: dict[str, str] = {}
    ids, first_expiry = [], 0
    for g in range(groups):
        leader = await clients(nodes[0].url, mint_token(f"u_lead{g}", f"leader {g}"))
        opened = await leader.ok(
            "groupbuy:open", {"campaign_id": campaign["id"], "request_id": "o"}
        )
        gid = opened["group"]["id"]
        first_expiry = first_expiry or opened["group"]["expires_at"]
        ids.append(gid)
        orders[opened["order"]["id"]] = gid
        for buyer in buyers[2 * g : 2 * g + 2]:
            joined = await buyer.ok("groupbuy:join", {"group_id": gid, "request_id": "j"})
            orders[joined["order"]["id"]] = gid
    return ids, orders, first_expiry


def _refunds(db_url: str, order_ids: set[str]) -> Counter[tuple[str, int, str]]:
    rows = _sql(db_url, "SELECT order_id, amount_cents, reason FROM payments WHERE kind='refund'")
    return Counter(row for row in rows if row[0] in order_ids)


async def _check_failed_exactly_once(
    db_url: str, groups: list[str], orders: dict[str, str]
) -> None:
    def settled() -> bool:  # SQL follows the engine's log: wait for it to catch up
        rows = _sql(db_url, "SELECT id, status FROM orders WHERE kind = 'groupbuy'")
        refunded = {oid for oid, status in rows if status == "refunded"}
        failed = {
            gid for gid, s in _sql(db_url, "SELECT id, status FROM group_buys") if s == "failed"
        }
        coupons = _sql(db_url, "SELECT count(*) FROM group_coupons")[0][0]
        return refunded >= set(orders) and failed >= set(groups) and coupons >= len(orders)

    await _eventually(settled, timeout=30)
    assert _refunds(db_url, set(orders)) == {(oid, 19_900, "group_failed"): 1 for oid in orders}
    coupons = _sql(db_url, "SELECT order_id, amount_cents FROM group_coupons")
    assert Counter(coupons) == {(oid, 300): 1 for oid in orders}
    statuses = _sql(db_url, "SELECT id, status FROM orders WHERE kind = 'groupbuy'")
    assert {oid: s for oid, s in statuses if oid in orders} == dict.fromkeys(orders, "refunded")
    rows = _sql(db_url, "SELECT id, status FROM group_buys")
    assert {gid: s for gid, s in rows if gid in groups} == dict.fromkeys(groups, "failed")


async def test_failure_refunds_once_when_the_scheduling_node_dies_before_the_deadline(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2, env=ENV)
    host = await add_user(db_url, "anchor", "host")
    room = await _room(api_factory(node_b.url), host, await client_factory(node_b.url, host))
    groups, orders, expiry = await _failing_groups(
        room, [node_a, node_b], client_factory, groups=3, ttl_s=3
    )
    await asyncio.sleep(max(0.0, expiry / 1000 - time.time() - 0.3))
    node_a.kill()  # it scheduled every expiry; node B fires them
    await _check_failed_exactly_once(db_url, groups, orders)


async def test_failure_refunds_once_when_a_node_dies_mid_settlement(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """The only node alive at the deadline claims every expiry and is killed as soon as
    its first refund reaches the ledger; a node started afterwards takes over the timers
    once their leases lapse, and finishes the settlement: no refund lost, none repeated."""
    # Refunds take 100 ms each, so the kill lands mid-settlement even on a busy machine.
    slow_refunds = {**ENV, "LIVECOMMERCE_PAYMENTS__SANDBOX_REFUND_LATENCY_MS": "100"}
    node_a, node_b = await cluster(2, env=slow_refunds)
    host = await add_user(db_url, "anchor", "host")
    room = await _room(api_factory(node_a.url), host, await client_factory(node_a.url, host))
    groups, orders, expiry = await _failing_groups(
        room, [node_a, node_b], client_factory, groups=6, ttl_s=3
    )
    node_b.kill()  # before the deadline: it holds no timer
    assert time.time() * 1000 < expiry, "set-up outlived the groups"
    while not _refunds(db_url, set(orders)):  # noqa: ASYNC110 - polls another process
        await asyncio.sleep(0.002)
    node_a.kill()
    done_before = len(_refunds(db_url, set(orders)))
    (node_c,) = await cluster(1, env=ENV)
    await _check_failed_exactly_once(db_url, groups, orders)
    assert done_before < len(orders), "node A finished before it was killed"
    status, _ = await api_factory(node_c.url).request("GET", "/readyz")
    assert status == 200
