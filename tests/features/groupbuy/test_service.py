"""Group buys on one in-process node, through real Socket.IO clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import AppServer, ack_error, make_user
from tests.features.groupbuy.conftest import (
    COUPON,
    PRODUCT_PRICE,
    ApiFactory,
    ClientFactory,
    Shop,
    eventually,
    make_shop,
    rid,
)


async def test_create_is_for_the_rooms_host_and_validated(shop: Shop) -> None:
    server, url = shop.server, shop.server.url
    anon = await shop.clients(url)
    assert ack_error(await anon.call("groupbuy:create", shop.terms())) == "unauthorized"
    viewer = await shop.member("viewer")
    assert ack_error(await viewer.call("groupbuy:create", shop.terms())) == "forbidden"
    other = await shop.clients(url, await make_user(server.node, "other_host", "host"))
    assert ack_error(await other.call("groupbuy:create", shop.terms())) == "forbidden"
    for bad in (
        {"group_size": 1},
        {"group_size": 51},
        {"group_size": "3"},
        {"price_cents": 0},
        {"group_ttl_s": 0},
        {"group_ttl_s": 86_401},
        {"duration_s": 5},
        {"quantity": 2},  # fewer units than one group
        {"tiers": [{"size": 3, "price_cents": 900}]},  # not above group_size
        {"tiers": [{"size": 4, "price_cents": 1000}]},  # not below price_cents
        {"tiers": [{"size": 5, "price_cents": 800}, {"size": 4, "price_cents": 700}]},
        {"tiers": [{"size": 4}]},
    ):
        ack = await shop.host_client.call("groupbuy:create", shop.terms(**bad))
        assert ack_error(ack) == "invalid", bad
        assert {f.split(".")[0] for f in ack["error"]["fields"]} == set(bad), ack
    not_a_discount = await shop.host_client.call(
        "groupbuy:create", shop.terms(price_cents=PRODUCT_PRICE)
    )
    assert ack_error(not_a_discount) == "invalid"
    assert set(not_a_discount["error"]["fields"]) == {"price_cents"}
    foreign = await shop.host_client.call("groupbuy:create", shop.terms(product_id="p_x"))
    assert ack_error(foreign) == "not_found"

    tiers = [{"size": 4, "price_cents": 900}, {"size": 6, "price_cents": 800}]
    campaign = await shop.campaign(tiers=tiers, quantity=30)
    assert campaign["status"] == "live" and campaign["left"] == 30
    assert campaign["max_size"] == 6 and campaign["tiers"] == tiers
    assert campaign["product_price_cents"] == PRODUCT_PRICE and campaign["groups"] == []
    assert campaign["ends_at"] - campaign["starts_at"] == 3_600_000
    staff = await shop.clients(url, await make_user(server.node, "staff_one", "staff"))
    await staff.ok("groupbuy:create", shop.terms())


async def test_the_shortest_group_ttl_is_a_setting(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    shop = await make_shop(app_server, api_factory(app_server.url), client_factory)
    short = await shop.host_client.call("groupbuy:create", shop.terms(group_ttl_s=59))
    assert ack_error(short) == "invalid"
    assert short["error"]["fields"] == {"group_ttl_s": "at least 60"}
    await shop.campaign(group_ttl_s=60)


async def test_join_payloads_are_validated(shop: Shop) -> None:
    client = await shop.member("picky")
    campaign = await shop.campaign()
    for bad, field in (
        ({"request_id": "r"}, "group_id"),
        ({"campaign_id": campaign["id"], "request_id": "r"}, "auto"),
        ({"group_id": "g_1", "campaign_id": campaign["id"], "auto": True, "request_id": "r"},
         "group_id"),
        ({"group_id": "g_1"}, "request_id"),
        ({"group_id": "g_1", "request_id": "r", "auto": "yes"}, "auto"),
    ):  # fmt: skip
        ack = await client.call("groupbuy:join", bad)
        assert ack_error(ack) == "invalid" and set(ack["error"]["fields"]) == {field}, ack
    assert ack_error(await client.call("groupbuy:open", {"campaign_id": "x"})) == "invalid"
    missing = await client.call("groupbuy:join", {"group_id": "g_nope", "request_id": "r"})
    assert ack_error(missing) == "not_found"
    anon = await shop.clients(shop.server.url)
    ack = await anon.call("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "r"})
    assert ack_error(ack) == "unauthorized"


@pytest.mark.both_databases
async def test_a_full_group_succeeds_and_everyone_hears(shop: Shop) -> None:
    watcher = await shop.clients(shop.server.url)
    await watcher.ok("room:join", {"room_id": shop.room_id})
    campaign = await shop.campaign(quantity=10)
    created = await watcher.wait_for("groupbuy:update")
    assert created["campaign"]["id"] == campaign["id"] and "group" not in created

    opened = await shop.open("leader", campaign["id"])
    group, order = opened["group"], opened["order"]
    assert group["status"] == "open" and group["size"] == 3 and group["needed"] == 2
    assert group["leader"]["name"] == "leader" and [m["name"] for m in group["members"]] == [
        "leader"
    ]
    assert group["share_url"] == f"/rooms/{shop.room_id}?group={group['id']}"
    assert group["price_cents"] == 1000 and group["expires_at"] > group["created_at"]
    assert order["status"] == "paid" and order["kind"] == "groupbuy"
    assert order["ref_id"] == group["id"] and order["amount_cents"] == 1000
    progress = await watcher.wait_for("groupbuy:update", lambda d: "group" in d)
    assert progress["group"]["needed"] == 2 and progress["campaign"]["left"] == 9

    state = (await watcher.ok("room:join", {"room_id": shop.room_id}))["state"]
    [listed] = state["groupbuys"]
    assert listed["id"] == campaign["id"] and [g["id"] for g in listed["groups"]] == [group["id"]]

    confirmed_sales: list[dict[str, Any]] = []

    async def hook(order: dict[str, Any]) -> None:
        confirmed_sales.append(order)

    shop.server.node.groupbuys.confirmed_hooks.append(hook)
    second = await shop.join("second", group["id"])
    assert second["ok"] and second["group"]["needed"] == 1
    assert confirmed_sales == []  # paid is not a sale yet: the group may still fail
    third = await shop.join("third", group["id"])
    assert third["group"]["status"] == "succeeded" and third["order"]["status"] == "confirmed"
    done = await watcher.wait_for(
        "groupbuy:update", lambda d: d.get("group", {}).get("status") == "succeeded"
    )
    assert len(done["group"]["members"]) == 3 and done["campaign"]["groups_succeeded"] == 1
    leader = shop.members["leader"]
    confirmed = await leader.wait_for("order:update", lambda d: d["order"]["status"] == "confirmed")
    assert confirmed["order"]["id"] == order["id"]
    late = await shop.join("late", group["id"])
    assert ack_error(late) == "group_full"
    assert sorted(o["id"] for o in confirmed_sales) == sorted(
        [order["id"], second["order"]["id"], third["order"]["id"]]
    )

    for oid in (order["id"], second["order"]["id"], third["order"]["id"]):
        assert await shop.ledger(oid) == [("charge", "succeeded", 1000, None)]
        row = await shop.server.node.orders.get(oid)  # written before the ack in-process
        assert row is not None and row.status == "confirmed" and row.ref_id == group["id"]
    sql_group = await shop.server.node.groupbuys.records.group(group["id"])
    assert sql_group is not None and sql_group.status == "succeeded" and sql_group.members == 3
    orders = (await shop.api.ok("GET", "/api/orders", _token(shop, "second")))["orders"]
    assert [o["status"] for o in orders] == ["confirmed"]


def _token(shop: Shop, name: str) -> str:
    token = shop.members[name].token
    assert token is not None
    return token


async def test_same_user_twice_retries_and_declines(shop: Shop) -> None:
    campaign = await shop.campaign(group_size=2, quantity=4)
    leader = await shop.member("leader")
    first = await leader.ok("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "o1"})
    again = await leader.ok("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "o1"})
    assert again["group"]["id"] == first["group"]["id"]
    assert again["order"] == first["order"]
    gid, oid = first["group"]["id"], first["order"]["id"]
    twice = await leader.call("groupbuy:join", {"group_id": gid, "request_id": "j1"})
    assert ack_error(twice) == "already_joined"
    assert await shop.ledger(oid) == [("charge", "succeeded", 1000, None)]  # charged once

    decline = await shop.member("decline-dora")
    refused = await decline.call("groupbuy:join", {"group_id": gid, "request_id": "d1"})
    assert ack_error(refused) == "payment_failed"
    declined = refused["error"]["order"]
    assert declined["status"] == "declined"
    retried = await decline.call("groupbuy:join", {"group_id": gid, "request_id": "d1"})
    assert ack_error(retried) == "payment_failed"
    assert retried["error"]["order"]["id"] == declined["id"]
    assert await shop.ledger(declined["id"]) == [
        ("charge", "declined", 1000, "card declined (sandbox)")
    ]
    # The declined seat was freed: the group still has room, and the unit came back.
    member = await shop.join("member", gid)
    assert member["group"]["status"] == "succeeded"
    state = await shop.server.node.groupbuys.campaign(campaign["id"])
    assert state["left"] == 2 and state["groups_succeeded"] == 1
    same = await shop.members["member"].call("groupbuy:join", {"group_id": gid, "request_id": "x"})
    assert ack_error(same) == "already_joined"


@pytest.mark.both_databases
async def test_a_short_group_fails_refunds_once_and_compensates(shop: Shop) -> None:
    watcher = await shop.clients(shop.server.url)
    await watcher.ok("room:join", {"room_id": shop.room_id})
    campaign = await shop.campaign(group_size=4, group_ttl_s=1, quantity=8)
    opened = await shop.open("leader", campaign["id"])
    gid = opened["group"]["id"]
    joined = [await shop.join(name, gid) for name in ("ann", "bob")]
    orders = [opened["order"], *(j["order"] for j in joined)]
    failed = await watcher.wait_for(
        "groupbuy:update", lambda d: d.get("group", {}).get("status") == "failed", timeout=10
    )
    assert failed["group"]["id"] == gid and failed["campaign"]["groups_failed"] == 1
    node = shop.server.node

    async def settled() -> bool:
        rows = [await node.orders.get(o["id"]) for o in orders]
        return all(r is not None and r.status == "refunded" for r in rows)

    await eventually(settled)
    for order in orders:
        assert await shop.ledger(order["id"]) == [
            ("charge", "succeeded", 1000, None),
            ("refund", "succeeded", 1000, "group_failed"),
        ]
    coupons = await node.groupbuys.coupons.for_group(gid)
    assert sorted(c.order_id for c in coupons) == sorted(o["id"] for o in orders)
    assert {(c.amount_cents, c.reason) for c in coupons} == {(COUPON, "group_failed")}
    note = await shop.members["ann"].wait_for("groupbuy:coupon")
    assert note["coupon"]["amount_cents"] == COUPON
    refunded = await shop.members["bob"].wait_for(
        "order:update", lambda d: d["order"]["status"] == "refunded"
    )
    assert refunded["order"]["refund_cents"] == 1000
    state = await node.groupbuys.campaign(campaign["id"])
    assert state["left"] == 8 and state["groups"] == []  # every unit came back
    late = await shop.join("late", gid)
    assert ack_error(late) == "expired"
    # The settlement is a replay: running it again repays nobody and credits nothing new.
    where = {"room_id": shop.room_id, "campaign_id": campaign["id"]}
    await node.groupbuys.settlement.on_expire(gid, where)
    assert len(await node.payments.ledger.for_order(orders[0]["id"])) == 2
    assert len(await node.groupbuys.coupons.for_group(gid)) == 3


@pytest.mark.both_databases
async def test_tiers_price_the_size_reached_and_refund_the_difference(shop: Shop) -> None:
    tiers = [{"size": 3, "price_cents": 900}, {"size": 4, "price_cents": 800}]
    campaign = await shop.campaign(group_size=2, group_ttl_s=2, tiers=tiers)
    # Group A reaches the largest tier: it succeeds at once, at 800.
    a = await shop.open("a0", campaign["id"])
    a_orders = [a["order"]]
    for name in ("a1", "a2", "a3"):
        joined = await shop.join(name, a["group"]["id"])
        a_orders.append(joined["order"])
    assert joined["group"]["status"] == "succeeded" and joined["group"]["price_cents"] == 800
    assert joined["order"]["amount_cents"] == 800 and joined["order"]["refund_cents"] == 200
    # Group B keeps taking members past group_size, and succeeds at expiry at 900.
    b = await shop.open("b0", campaign["id"])
    b_orders = [b["order"]]
    for name in ("b1", "b2"):
        joined = await shop.join(name, b["group"]["id"])
        b_orders.append(joined["order"])
    assert joined["group"]["status"] == "open" and joined["group"]["price_cents"] == 900
    assert joined["group"]["next_tier"] == {"size": 4, "price_cents": 800}

    async def refunded(orders: list[dict[str, Any]]) -> bool:
        return all([len(await shop.ledger(o["id"])) == 2 for o in orders])

    await eventually(lambda: refunded(a_orders))
    await eventually(lambda: refunded(b_orders))
    for orders, price in ((a_orders, 800), (b_orders, 900)):
        for order in orders:
            assert await shop.ledger(order["id"]) == [
                ("charge", "succeeded", 1000, None),
                ("refund", "succeeded", 1000 - price, "tier_difference"),
            ]
            row = await shop.server.node.orders.get(order["id"])
            assert row is not None and (row.status, row.amount_cents) == ("confirmed", price)
    group_b = await shop.server.node.groupbuys.group(b["group"]["id"])
    assert group_b["status"] == "succeeded" and group_b["price_cents"] == 900


async def test_auto_joins_the_fullest_group_then_the_earliest(shop: Shop) -> None:
    campaign = await shop.campaign(group_size=4)
    cid = campaign["id"]

    async def auto(name: str) -> dict[str, Any]:
        client = await shop.member(name)
        payload = {"campaign_id": cid, "auto": True, "request_id": rid()}
        return (await client.ok("groupbuy:join", payload))["group"]

    g1 = (await shop.open("l1", cid))["group"]["id"]
    g2 = (await shop.open("l2", cid))["group"]["id"]
    g3 = (await shop.open("l3", cid))["group"]["id"]
    await shop.join("x", g3)
    await shop.join("y", g2)  # g2 and g3 both have 2 members; g2 expires first
    assert (await auto("u1"))["id"] == g2
    assert (await auto("u2"))["id"] == g2  # 3 of 4 now: the closest to completing
    assert (await auto("u3"))["id"] == g3
    assert (await auto("x"))["id"] == g1  # x is in g3 already; g2 succeeded
    solo = await shop.campaign(group_size=2)
    client = await shop.member("first")
    payload = {"campaign_id": solo["id"], "auto": True, "request_id": rid()}
    fresh = (await client.ok("groupbuy:join", payload))["group"]
    assert fresh["leader"]["name"] == "first" and fresh["needed"] == 1  # nothing open: opens


async def test_stock_cap(gb_server: AppServer, shop: Shop) -> None:
    campaign = await shop.campaign(group_size=2, quantity=2, duration_s=10)
    opened = await shop.open("lead", campaign["id"])
    racers = await asyncio.gather(*(shop.member(f"r{i}") for i in range(3)))
    acks = await asyncio.gather(
        *(c.call("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "x"})
          for c in racers)
    )  # fmt: skip
    assert sorted(ack.get("ok", False) for ack in acks) == [False, False, True]
    assert {ack_error(a) for a in acks if not a.get("ok")} == {"sold_out"}
    state = await gb_server.node.groupbuys.campaign(campaign["id"])
    assert state["status"] == "sold_out" and state["left"] == 0
    assert ack_error(await shop.join("late", opened["group"]["id"])) == "sold_out"
