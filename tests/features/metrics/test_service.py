"""Staff metrics on one in-process node, through real Socket.IO clients: who may watch,
what the ticks say after known activity, when they stop, the persisted history, batched
sales notices and the cluster view."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import AppServer, ack_error, make_user
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
FAST = {
    "metrics": {"tick_ms": 500, "rollup_s": 1, "notice_ms": 1000, "cluster_report_s": 0.5},
    "likes": {"broadcast_ms": 100},
}


async def _room(server: AppServer, api: Api) -> tuple[str, str, str]:
    host = await make_user(server.node, "anchor", "host")
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Metrics room"}))["id"]
    product = {"title": "Green tea", "price_cents": 2000, "stock": 100}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return host, rid, pid


async def _sale(host: Client, rid: str, pid: str, quantity: int = 50) -> str:
    terms = {"room_id": rid, "product_id": pid, "price_cents": 990, "quantity": quantity,
             "per_user_limit": 2, "duration_s": 60}  # fmt: skip
    return str((await host.ok("flashsale:create", terms))["sale"]["id"])


async def _buy_and_pay(client: Client, sale_id: str, qty: int = 1) -> dict[str, Any]:
    order = (await client.ok("flashsale:buy", {"sale_id": sale_id, "qty": qty,
                                                "request_id": "r1"}))["order"]  # fmt: skip
    return dict((await client.ok("order:pay", {"order_id": order["id"]}))["order"])


async def _viewers(
    server: AppServer, api: Api, factory: ClientFactory, rid: str, n: int
) -> list[Client]:
    out = []
    for i in range(n):
        token, _ = await api.guest(f"fan{i}")
        client = await factory(server.url, token)
        await client.ok("room:join", {"room_id": rid})
        out.append(client)
    return out


def _ticks(client: Client) -> list[dict[str, Any]]:
    return client.received("metrics:tick")


async def test_subscribe_is_for_staff_and_the_rooms_host(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, _ = await _room(app_server, api)
    other_host = await make_user(app_server.node, "rival", "host")
    staff = await make_user(app_server.node, "boss", "staff")
    viewer, _ = await api.guest("viewer")
    anon = await client_factory(app_server.url)
    assert ack_error(await anon.call("metrics:subscribe", {"room_id": rid})) == "unauthorized"
    for token in (viewer, other_host):
        c = await client_factory(app_server.url, token)
        assert ack_error(await c.call("metrics:subscribe", {"room_id": rid})) == "forbidden"
        await asyncio.sleep(0)
        assert not _ticks(c)
    s = await client_factory(app_server.url, staff)
    assert ack_error(await s.call("metrics:subscribe", {"room_id": "nope"})) == "not_found"
    assert ack_error(await s.call("metrics:subscribe", {"room_id": 5})) == "invalid"
    for token in (host, staff):
        c = await client_factory(app_server.url, token)
        assert await c.call("metrics:subscribe", {"room_id": rid}) == {"ok": True}
        tick = await c.wait_for("metrics:tick", timeout=3)
        assert tick["room_id"] == rid
        for field in ("at", "online", "peak_online", "comments_per_s", "likes_per_s",
                      "orders_per_s", "gmv_cents", "conversion", "keywords", "flashsales",
                      "groupbuys", "pk"):  # fmt: skip
            assert field in tick, field
    status, _ = await api.request("GET", f"/api/rooms/{rid}/metrics/history", viewer)
    assert status == 403
    status, _ = await api.request("GET", "/api/cluster", host)
    assert status == 403


async def test_ticks_count_known_activity(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    host_token, rid, pid = await _room(server, api)
    host = await client_factory(server.url, host_token)
    sale_id = await _sale(host, rid, pid)
    fans = await _viewers(server, api, client_factory, rid, 4)
    staff = await client_factory(server.url, await make_user(server.node, "boss", "staff"))
    await staff.ok("metrics:subscribe", {"room_id": rid})
    first = await staff.wait_for("metrics:tick", timeout=3)
    assert first["online"] == 4

    paid = []
    for i, fan in enumerate(fans):
        await fan.ok("comment:send", {"room_id": rid, "text": "好看 口红"})
        await fan.ok("comment:send", {"room_id": rid, "text": "口红 多少钱"})
        await fan.ok("like:send", {"room_id": rid, "count": 10 + i})
        if i < 3:
            paid.append(await _buy_and_pay(fan, sale_id, qty=1 + i % 2))
    gmv = sum(o["amount_cents"] for o in paid)

    def settled(tick: dict[str, Any]) -> bool:
        t = tick["totals"]
        return t["comments"] == 8 and t["likes"] == 46 and t["orders"] == 3

    last = await staff.wait_for("metrics:tick", settled, timeout=5)
    ticks = _ticks(staff)
    after = ticks[ticks.index(first) + 1 : ticks.index(last) + 1]
    assert sum(t["comments_per_s"] for t in after) == 8
    assert sum(t["likes_per_s"] for t in after) == 46
    assert sum(t["orders_per_s"] for t in after) == 3
    assert last["gmv_cents"] == gmv == sum(t["gmv_cents_per_s"] for t in after)
    assert last["buyers"] == 3 and last["peak_online"] == 4
    assert last["conversion"] == 0.75
    assert dict(map(tuple, last["keywords"]))["口红"] == 8
    [sale] = last["flashsales"]
    assert sale["id"] == sale_id and sale["left"] == 50 - sum(o["qty"] for o in paid)
    assert {p["product_id"]: p["units"] for p in last["products"]} == {pid: 4}

    # About one tick per tick_ms (0.5 s here), not more.
    await asyncio.sleep(2.0)
    recent = _ticks(staff)[-4:]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(recent)]
    assert all(350 <= gap <= 800 for gap in gaps), gaps


async def test_no_ticks_after_unsubscribe_or_disconnect(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    host_token, rid, _ = await _room(server, api)
    staff_token = await make_user(server.node, "boss", "staff")
    a = await client_factory(server.url, staff_token)
    b = await client_factory(server.url, host_token)
    for c in (a, b):
        await c.ok("metrics:subscribe", {"room_id": rid})
        await c.wait_for("metrics:tick", timeout=3)
    await a.ok("metrics:unsubscribe", {"room_id": rid})
    seen = len(_ticks(a))
    await b.close()
    await asyncio.sleep(1.5)
    assert len(_ticks(a)) <= seen + 1  # one may have been on the wire
    metrics = server.node.room_metrics
    assert not metrics._watched and not metrics._prev
    # Unsubscribing what one never subscribed is fine.
    assert (await a.call("metrics:unsubscribe", {"room_id": rid}))["ok"] is True


@pytest.mark.both_databases
async def test_rollups_are_persisted_and_served(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    host_token, rid, pid = await _room(server, api)
    host = await client_factory(server.url, host_token)
    sale_id = await _sale(host, rid, pid)
    fans = await _viewers(server, api, client_factory, rid, 2)
    for fan in fans:
        await fan.ok("comment:send", {"room_id": rid, "text": "hello"})
        await _buy_and_pay(fan, sale_id, qty=2)
    await fans[0].ok("like:send", {"room_id": rid, "count": 7})

    path = f"/api/rooms/{rid}/metrics/history?minutes=5"
    deadline = time.monotonic() + 6
    while True:
        data = await api.ok("GET", path, host_token)
        rows = data["rows"]
        totals = {k: sum(r[k] for r in rows) for k in ("comments", "likes", "orders")}
        if totals == {"comments": 2, "likes": 7, "orders": 2} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert totals == {"comments": 2, "likes": 7, "orders": 2}, rows
    assert data["period_s"] == 1
    assert sum(r["gmv_cents"] for r in rows) == 4 * 990
    assert sum(r["products"].get(pid, 0) for r in rows) == 4
    assert max(r["peak_online"] for r in rows) == 2
    ats = [r["at"] for r in rows]
    assert ats == sorted(ats) and len(set(ats)) == len(ats)
    assert all(r["at"] % 1000 == 0 for r in rows)
    status, body = await api.request(
        "GET", f"/api/rooms/{rid}/metrics/history?minutes=0", host_token
    )
    assert status == 400 and body["error"]["code"] == "invalid"


async def test_sales_notices_are_batched(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    host_token, rid, pid = await _room(server, api)
    host = await client_factory(server.url, host_token)
    sale_id = await _sale(host, rid, pid)
    watcher = (await _viewers(server, api, client_factory, rid, 1))[0]
    buyers = await _viewers(server, api, client_factory, rid, 6)
    await asyncio.sleep(1.2)
    assert not watcher.received("sales:notice")  # nothing bought: nothing said
    await asyncio.gather(*(_buy_and_pay(b, sale_id) for b in buyers[:3]))
    await asyncio.sleep(0.3)
    await asyncio.gather(*(_buy_and_pay(b, sale_id) for b in buyers[3:]))
    await watcher.wait_for("sales:notice", timeout=3)

    def counted() -> int:
        return sum(i["count"] for n in watcher.received("sales:notice") for i in n["items"])

    deadline = time.monotonic() + 5
    while counted() < 6 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a list
        await asyncio.sleep(0.1)
    notices = watcher.received("sales:notice")
    assert counted() == 6
    assert len(notices) < 6
    for notice in notices:
        assert notice["room_id"] == rid and isinstance(notice["seq"], int)
        assert notice["items"] == [{"product_id": pid, "title": "Green tea",
                                    "count": notice["items"][0]["count"]}]  # fmt: skip
    ats = [n["at"] for n in notices]
    assert all(b - a >= 900 for a, b in itertools.pairwise(ats)), ats


async def test_cluster_view_lists_this_node(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    staff = await make_user(server.node, "boss", "staff")
    for _ in range(3):
        await client_factory(server.url)
    await asyncio.sleep(0.8)
    nodes = (await api.ok("GET", "/api/cluster", staff))["nodes"]
    assert [n["node_id"] for n in nodes] == ["test-node"]
    assert nodes[0]["connections"] == 3
