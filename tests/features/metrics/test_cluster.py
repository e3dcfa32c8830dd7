"""Staff metrics across two real server processes sharing Redis: subscribers on either
node see the same cluster-wide totals, and the cluster view lists both nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user, mint_token

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
ENV = {
    "LIVECOMMERCE_METRICS__TICK_MS": "500",
    "LIVECOMMERCE_METRICS__CLUSTER_REPORT_S": "0.5",
    "LIVECOMMERCE_LIKES__BROADCAST_MS": "100",
}


async def test_both_nodes_show_the_same_totals(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2, env=ENV)
    api = api_factory(nodes[0].url)
    host_token = await add_user(db_url, "anchor", "host")
    staff_token = await add_user(db_url, "boss", "staff")
    rid = (await api.ok("POST", "/api/rooms", host_token, {"title": "Two nodes"}))["id"]
    product = {"title": "Tea", "price_cents": 500, "stock": 100}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host_token, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host_token)
    host = await client_factory(nodes[1].url, host_token)
    terms = {"room_id": rid, "product_id": pid, "price_cents": 700, "quantity": 20,
             "duration_s": 60}  # fmt: skip
    sale_id = (await host.ok("flashsale:create", terms))["sale"]["id"]
    watchers = [
        await client_factory(nodes[0].url, staff_token),
        await client_factory(nodes[1].url, host_token),
    ]
    for w in watchers:
        await w.ok("metrics:subscribe", {"room_id": rid})
    for w in watchers:  # the baseline tick, before any activity
        await w.wait_for("metrics:tick", timeout=3)

    for i in range(6):
        fan = await client_factory(nodes[i % 2].url, mint_token(f"u_fan{i}", f"fan{i}"))
        await fan.ok("room:join", {"room_id": rid})
        await fan.ok("comment:send", {"room_id": rid, "text": f"hi {i}"})
        await fan.ok("like:send", {"room_id": rid, "count": 5})
        order = (await fan.ok("flashsale:buy", {"sale_id": sale_id, "request_id": "x"}))["order"]
        await fan.ok("order:pay", {"order_id": order["id"]})

    expected = {"comments": 6, "likes": 30, "orders": 6, "gmv_cents": 6 * 700, "buyers": 6}

    def done(tick: dict[str, Any]) -> bool:
        return bool(tick["totals"] == expected and tick["online"] == 6)

    ticks = [await w.wait_for("metrics:tick", done, timeout=8) for w in watchers]
    for tick in ticks:
        assert tick["gmv_cents"] == 4200 and tick["buyers"] == 6
        assert tick["flashsales"][0]["left"] == 14
    assert ticks[0]["peak_online"] == ticks[1]["peak_online"] >= 6
    for w in watchers:  # rates on either node add up to the same totals
        rates = w.received("metrics:tick")[1:]
        assert sum(t["orders_per_s"] for t in rates) == 6
        assert sum(t["comments_per_s"] for t in rates) == 6

    # Each node reports every cluster_report_s: the view catches up within a report or two.
    for _ in range(50):
        nodes_seen = (await api.ok("GET", "/api/cluster", staff_token))["nodes"]
        if sum(n["connections"] for n in nodes_seen) >= 8:
            break
        await asyncio.sleep(0.2)
    assert sorted(n["node_id"] for n in nodes_seen) == ["node1", "node2"]
    assert sum(n["connections"] for n in nodes_seen) >= 8
