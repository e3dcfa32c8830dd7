"""Several real server processes sharing redis-server and one SQLite file.

The foundation's promises across nodes: a broadcast published on one node reaches members
on another; online counts agree; a client whose node is killed recovers on another node by
since_seq; a timer whose scheduling node is killed fires exactly once elsewhere.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]


async def _room_with_products(api: Api, host: str, n: int = 3) -> tuple[str, list[dict[str, Any]]]:
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Cross-node"}))["id"]
    products = [
        await api.ok(
            "POST",
            f"/api/rooms/{rid}/products",
            host,
            {"title": f"P{i}", "price_cents": 500, "stock": 3},
        )
        for i in range(n)
    ]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return rid, products


async def _metric(api: Api, name: str) -> float:
    _, text = await api.request("GET", "/metrics")
    match = re.search(rf'^{name}\{{node="[^"]+"\}} ([0-9.e+]+)$', text, re.M)
    assert match, f"{name} missing"
    return float(match.group(1))


async def test_pin_reaches_other_node_counts_agree_and_recovery_after_kill(
    cluster: ClusterFactory,
    db_url: str,
    api_factory: Callable[[str], Api],
    client_factory: ClientFactory,
) -> None:
    node_a, node_b = await cluster(2)
    host = await add_user(db_url, "anchor", "host")
    api_b = api_factory(node_b.url)
    rid, products = await _room_with_products(api_b, host)

    viewer_token, _ = await api_b.guest("roamer")
    viewer = await client_factory(node_a.url, viewer_token)  # viewer on A
    host_c = await client_factory(node_b.url, host)  # host on B
    await viewer.ok("room:join", {"room_id": rid})
    await host_c.ok("room:join", {"room_id": rid})

    await host_c.ok("product:pin", {"room_id": rid, "product_id": products[0]["id"]})
    pinned = await viewer.wait_for("product:pinned")
    assert pinned["product"]["id"] == products[0]["id"] and pinned["room_id"] == rid

    # Online counts: 2 on both nodes, as broadcast and as served over HTTP.
    await viewer.wait_for("online:count", lambda d: d["online"] == 2)
    await host_c.wait_for("online:count", lambda d: d["online"] == 2)
    for url in (node_a.url, node_b.url):
        assert (await api_factory(url).ok("GET", f"/api/rooms/{rid}"))["online"] == 2

    last_seen = max(d["seq"] for _, d in viewer.events if isinstance(d, dict) and "seq" in d)
    node_a.kill()
    # Node A's viewer stops counting once A's presence expires (ttl 2 s in tests).
    await host_c.wait_for("online:count", lambda d: d["online"] == 1, timeout=8)
    for product in products[1:]:  # missed while the viewer has no connection
        await host_c.ok("product:pin", {"room_id": rid, "product_id": product["id"]})

    back = await client_factory(node_b.url, viewer_token)
    ack = await back.ok("room:join", {"room_id": rid, "since_seq": last_seen})
    assert ack["recovered"] is True
    replayed = back.received("product:pinned")
    assert [d["product"]["id"] for d in replayed] == [p["id"] for p in products[1:]]
    assert all(d["seq"] > last_seen for d in replayed)
    assert ack["state"]["pinned_product"]["id"] == products[-1]["id"]


async def test_node_without_members_receives_nothing(
    cluster: ClusterFactory,
    db_url: str,
    api_factory: Callable[[str], Api],
    client_factory: ClientFactory,
    redis_url: str,
) -> None:
    import redis.asyncio as aioredis

    node_a, _idle_node = await cluster(2)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(node_a.url)
    rid, _ = await _room_with_products(api, host, 1)
    viewer = await client_factory(node_a.url)
    await viewer.ok("room:join", {"room_id": rid})
    r = aioredis.from_url(redis_url)
    try:
        channels = await r.pubsub_numsub(f"lc:{{room:{rid}}}:bus")
        assert channels[0][1] == 1  # only node A subscribes
        await viewer.ok("room:leave", {"room_id": rid})
        await asyncio.sleep(0.2)
        assert (await r.pubsub_numsub(f"lc:{{room:{rid}}}:bus"))[0][1] == 0
    finally:
        await r.aclose()


async def test_scheduled_start_fires_once_after_its_node_is_killed(
    cluster: ClusterFactory,
    db_url: str,
    api_factory: Callable[[str], Api],
    client_factory: ClientFactory,
) -> None:
    node_a, node_b, node_c = await cluster(3)
    host = await add_user(db_url, "anchor", "host")
    api_a = api_factory(node_a.url)
    import time

    starts_at = int(time.time() * 1000) + 2500
    room = await api_a.ok("POST", "/api/rooms", host, {"title": "At nine", "starts_at": starts_at})
    rid = room["id"]
    watchers = [await client_factory(n.url) for n in (node_b, node_c)]
    for w in watchers:
        assert (await w.ok("room:join", {"room_id": rid}))["state"]["room"]["status"] == "scheduled"
    node_a.kill()  # the node that scheduled the start is gone before it is due

    for w in watchers:
        got = await w.wait_for("room:status", timeout=10)
        assert got["status"] == "live" and got["room_id"] == rid
    await asyncio.sleep(4)  # longer than the lease: a double firing would show up by now
    for w in watchers:
        assert len(w.received("room:status")) == 1
    fired = [
        await _metric(api_factory(n.url), "livecommerce_timers_fired") for n in (node_b, node_c)
    ]
    assert sum(fired) == 1
    assert (await api_factory(node_b.url).ok("GET", f"/api/rooms/{rid}"))["status"] == "live"


async def test_redis_down_answers_unavailable_and_readyz_503(
    cluster: ClusterFactory,
    db_url: str,
    api_factory: Callable[[str], Api],
    client_factory: ClientFactory,
    redis_server: Any,
) -> None:
    (node,) = await cluster(1)
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(node.url)
    rid, products = await _room_with_products(api, host, 1)
    host_c = await client_factory(node.url, host)
    await host_c.ok("room:join", {"room_id": rid})
    redis_server.stop()
    try:
        status, body = await api.request("GET", "/readyz")
        assert status == 503 and body["checks"]["engine"] is False
        ack = await host_c.call("product:pin", {"room_id": rid, "product_id": products[0]["id"]})
        assert ack_error(ack) == "unavailable"
    finally:
        redis_server.restart()
    for _ in range(50):
        if (await api.request("GET", "/readyz"))[0] == 200:
            break
        await asyncio.sleep(0.2)
    await host_c.ok("product:pin", {"room_id": rid, "product_id": products[0]["id"]})
