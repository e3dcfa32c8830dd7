"""Flash sales on one in-process node, through real Socket.IO clients."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import AppServer, ack_error, make_user
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]


async def _room(server: AppServer, api: Api, host_name: str = "anchor") -> tuple[str, str, str]:
    host = await make_user(server.node, host_name, "host")
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Sale room"}))["id"]
    product = {"title": "Tea", "price_cents": 2000, "stock": 100}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return host, rid, pid


def _sale(rid: str, pid: str, **over: Any) -> dict[str, Any]:
    return {
        "room_id": rid,
        "product_id": pid,
        "price_cents": 990,
        "quantity": 5,
        "duration_s": 60,
        **over,
    }


async def test_create_is_for_the_rooms_host_and_validated(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    other_host = await make_user(app_server.node, "other_host", "host")
    viewer, _ = await api.guest("viewer")
    anon = await client_factory(app_server.url)
    assert ack_error(await anon.call("flashsale:create", _sale(rid, pid))) == "unauthorized"
    for token in (viewer, other_host):
        c = await client_factory(app_server.url, token)
        assert ack_error(await c.call("flashsale:create", _sale(rid, pid))) == "forbidden"
    h = await client_factory(app_server.url, host)
    for bad in (
        {"quantity": 0},
        {"quantity": 1_000_001},
        {"price_cents": 0},
        {"duration_s": 5},
        {"per_user_limit": 0},
        {"quantity": "5"},
    ):
        ack = await h.call("flashsale:create", _sale(rid, pid, **bad))
        assert ack_error(ack) == "invalid", bad
        assert set(ack["error"]["fields"]) == set(bad), ack
    other_rid = (await api.ok("POST", "/api/rooms", other_host, {"title": "x"}))["id"]
    foreign = await h.call("flashsale:create", _sale(rid, "p_elsewhere"))
    assert ack_error(foreign) == "not_found"
    assert ack_error(await h.call("flashsale:create", _sale(other_rid, pid))) == "forbidden"

    sale = (await h.ok("flashsale:create", _sale(rid, pid, per_user_limit=2, hold_s=30)))["sale"]
    assert sale["left"] == sale["quantity"] == 5 and sale["status"] == "live"
    assert sale["ends_at"] - sale["starts_at"] == 60_000 and sale["hold_s"] == 30
    staff = await make_user(app_server.node, "staff_one", "staff")
    s = await client_factory(app_server.url, staff)
    await s.ok("flashsale:create", _sale(rid, pid))


@pytest.mark.both_databases
async def test_buy_retry_limit_sold_out_and_broadcasts(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    h = await client_factory(app_server.url, host)
    watcher = await client_factory(app_server.url)
    await watcher.ok("room:join", {"room_id": rid})
    sale = (await h.ok("flashsale:create", _sale(rid, pid, quantity=3, per_user_limit=2)))["sale"]
    created = await watcher.wait_for("flashsale:update")
    assert created["sale"]["id"] == sale["id"] and created["seq"] > 0

    token, user = await api.guest("Bo")
    buyer = await client_factory(app_server.url, token)
    anon = await client_factory(app_server.url)
    assert (
        ack_error(await anon.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "a"}))
        == "unauthorized"
    )
    first = (await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "r-1"}))["order"]
    assert first["status"] == "reserved" and first["user_id"] == user["id"]
    assert first["amount_cents"] == 990 and first["expires_at"] > time.time() * 1000
    again = (await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "r-1"}))["order"]
    assert again["id"] == first["id"]  # a retry, not a second order
    await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "r-2"})
    limit = await buyer.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "r-3"})
    assert ack_error(limit) == "limit_exceeded"
    update = await buyer.wait_for("order:update", lambda d: d["order"]["id"] == first["id"])
    assert update["order"]["status"] == "reserved"

    token2, _ = await api.guest("Cy")
    other = await client_factory(app_server.url, token2)
    too_many = await other.call(
        "flashsale:buy", {"sale_id": sale["id"], "qty": 2, "request_id": "x"}
    )
    assert ack_error(too_many) == "sold_out"
    await other.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "y"})
    sold = await watcher.wait_for("flashsale:update", lambda d: d["sale"]["status"] == "sold_out")
    assert sold["sale"]["left"] == 0
    gone = await other.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "z"})
    assert ack_error(gone) == "limit_exceeded" or ack_error(gone) == "sold_out"
    unknown = await other.call("flashsale:buy", {"sale_id": "fs_nope", "request_id": "z"})
    assert ack_error(unknown) == "not_found"

    state = (await buyer.ok("room:join", {"room_id": rid}))["state"]
    assert [s["id"] for s in state["flashsales"]] == [sale["id"]]
    assert len(state["me"]["orders"]) == 2  # written to SQL before the ack in-process
    orders = (await api.ok("GET", "/api/orders", token))["orders"]
    assert {o["id"] for o in orders} >= {first["id"]}


async def test_not_started_then_live_by_timer(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    h = await client_factory(app_server.url, host)
    watcher = await client_factory(app_server.url)
    await watcher.ok("room:join", {"room_id": rid})
    starts_at = int(time.time() * 1000) + 1500
    sale = (await h.ok("flashsale:create", _sale(rid, pid, starts_at=starts_at)))["sale"]
    assert sale["status"] == "scheduled"
    token, _ = await api.guest("early")
    buyer = await client_factory(app_server.url, token)
    early = await buyer.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "e"})
    assert ack_error(early) == "not_started"
    live = await watcher.wait_for(
        "flashsale:update", lambda d: d["sale"]["status"] == "live", timeout=5
    )
    assert live["sale"]["id"] == sale["id"]
    await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "e"})


@pytest.mark.both_databases
async def test_pay_decline_cancel_and_ledger(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    h = await client_factory(app_server.url, host)
    sale = (await h.ok("flashsale:create", _sale(rid, pid, quantity=3)))["sale"]
    ledger = app_server.node.payments.ledger

    token, _ = await api.guest("payer")
    payer = await client_factory(app_server.url, token)
    order = (await payer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))["order"]
    paid = (await payer.ok("order:pay", {"order_id": order["id"]}))["order"]
    assert paid["status"] == "paid"
    assert (await payer.ok("order:pay", {"order_id": order["id"]}))["order"]["status"] == "paid"
    assert ack_error(await payer.call("order:cancel", {"order_id": order["id"]})) == "conflict"
    charges = await ledger.for_order(order["id"])
    assert [(p.kind, p.status, p.amount_cents) for p in charges] == [("charge", "succeeded", 990)]

    declined_token, _ = await api.guest("decline-dan")
    dan = await client_factory(app_server.url, declined_token)
    d_order = (await dan.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))["order"]
    failed = await dan.call("order:pay", {"order_id": d_order["id"]})
    assert (
        ack_error(failed) == "payment_failed" and failed["error"]["order"]["status"] == "reserved"
    )
    assert ack_error(await dan.call("order:pay", {"order_id": d_order["id"]})) == "payment_failed"
    assert [p.status for p in await ledger.for_order(d_order["id"])] == ["declined"]
    # Someone else's order is not yours to pay or cancel.
    assert ack_error(await payer.call("order:cancel", {"order_id": d_order["id"]})) == "not_found"

    cancelled = (await dan.ok("order:cancel", {"order_id": d_order["id"]}))["order"]
    assert cancelled["status"] == "cancelled"
    assert (await dan.ok("order:cancel", {"order_id": d_order["id"]}))["order"][
        "status"
    ] == "cancelled"
    assert ack_error(await dan.call("order:pay", {"order_id": d_order["id"]})) == "expired"
    state = await app_server.node.flashsales.state(rid, sale["id"])
    assert state["left"] == 2  # 3 - paid 1; the cancelled unit came back once


@pytest.mark.both_databases
async def test_unpaid_hold_expires_and_stock_returns(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    h = await client_factory(app_server.url, host)
    sale = (await h.ok("flashsale:create", _sale(rid, pid, quantity=1, hold_s=1)))["sale"]
    token, _ = await api.guest("slow")
    slow = await client_factory(app_server.url, token)
    order = (await slow.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))["order"]
    token2, _ = await api.guest("fast")
    fast = await client_factory(app_server.url, token2)
    assert (
        ack_error(await fast.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))
        == "sold_out"
    )
    expired = await slow.wait_for(
        "order:update", lambda d: d["order"]["status"] == "expired", timeout=5
    )
    assert expired["order"]["id"] == order["id"]
    assert ack_error(await slow.call("order:pay", {"order_id": order["id"]})) == "expired"
    await fast.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"})
    sql = await app_server.node.orders.get(order["id"])
    assert sql is not None and sql.status == "expired"


@pytest.mark.both_databases
async def test_pay_races_expiry_never_both_and_stock_returns_once(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """200 buyers each pay at a random moment around their hold's expiry, racing the
    durable hold timer: every order ends paid or expired, never both."""
    api = api_factory(app_server.url)
    host, rid, pid = await _room(app_server, api)
    h = await client_factory(app_server.url, host)
    sale = (await h.ok("flashsale:create", _sale(rid, pid, quantity=200, hold_s=1)))["sale"]
    rng = random.Random(7)
    node = app_server.node
    buyers = [
        await client_factory(
            app_server.url,
            node.auth.issue(await node.users.create(name=f"b{i}", role="viewer", is_guest=True)),
        )
        for i in range(200)
    ]

    async def buy_then_pay(client: Client) -> tuple[str, dict[str, Any]]:
        order = (await client.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))[
            "order"
        ]
        # Pay at a random moment within 150 ms either side of the hold's end (same clock).
        pay_at = order["expires_at"] / 1000 + rng.uniform(-0.15, 0.15)
        await asyncio.sleep(max(0.0, pay_at - time.time()))
        return order["id"], await client.call("order:pay", {"order_id": order["id"]})

    results = await asyncio.gather(*(buy_then_pay(c) for c in buyers))
    paid = {oid for oid, ack in results if ack.get("ok")}
    refused = {oid for oid, ack in results if not ack.get("ok")}
    assert {ack["error"]["code"] for _, ack in results if not ack.get("ok")} <= {"expired"}
    assert paid and refused, f"the race was not exercised on both sides: {len(paid)} paid"

    async def settled() -> bool:  # every hold timer has fired and its order is in SQL
        for oid in paid | refused:
            row = await node.orders.get(oid)
            if row is None or row.status != ("paid" if oid in paid else "expired"):
                return False
        return True

    deadline = time.monotonic() + 15
    while not await settled():
        assert time.monotonic() < deadline, "orders did not settle in SQL"
        await asyncio.sleep(0.2)
    for client, (oid, _) in zip(buyers, results, strict=True):
        statuses = {
            d["order"]["status"] for d in client.received("order:update") if d["order"]["id"] == oid
        }
        assert not {"paid", "expired"} <= statuses, (oid, statuses)
    state = await node.flashsales.state(rid, sale["id"])
    assert state["left"] == len(refused)  # each expired unit came back exactly once
    charged = [p for oid in paid for p in await node.payments.ledger.for_order(oid)]
    assert [p.kind for p in charged] == ["charge"] * len(paid)
