"""Socket.IO contract on one in-process node: connect, acks, validation, authorization,
room join snapshot, pinning and recovery by since_seq."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import socketio

from tests.conftest import AppServer, ack_error, make_user
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]


async def _live_room(server: AppServer, api: Api) -> tuple[str, str, list[dict[str, Any]]]:
    host = await make_user(server.node, "anchor", "host")
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "Live"}))["id"]
    products = [
        await api.ok(
            "POST", f"/api/rooms/{rid}/products", host, {"title": t, "price_cents": 100, "stock": 5}
        )
        for t in ("A", "B")
    ]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return host, rid, products


async def test_bad_token_is_refused(app_server: AppServer) -> None:
    client = Client(app_server.url, "garbage")
    refusals: list[Any] = []
    client.sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert refusals, "no connect_error"
    assert refusals[0]["data"]["code"] == "unauthorized"


async def test_anonymous_may_watch_but_not_act(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    _, rid, products = await _live_room(app_server, api)
    anon = await client_factory(app_server.url)
    ack = await anon.ok("room:join", {"room_id": rid})
    assert ack["state"]["me"] is None
    pin = await anon.call("product:pin", {"room_id": rid, "product_id": products[0]["id"]})
    assert ack_error(pin) == "unauthorized"


async def test_join_snapshot_has_every_field(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    _, rid, products = await _live_room(app_server, api)
    token, user = await api.guest("Ann")
    viewer = await client_factory(app_server.url, token)
    state = (await viewer.ok("room:join", {"room_id": rid}))["state"]
    for key in (
        "room",
        "server_time",
        "seq",
        "online",
        "likes",
        "pinned_product",
        "products",
        "flashsales",
        "groupbuys",
        "draw",
        "pk",
        "recent_comments",
        "me",
    ):
        assert key in state, key
    assert state["room"]["id"] == rid and state["room"]["status"] == "live"
    assert {"id", "title", "status", "host", "stream_url"} <= set(state["room"])
    assert [p["id"] for p in state["products"]] == [p["id"] for p in products]
    assert state["me"]["id"] == user["id"] and state["me"]["muted"] is False
    assert state["me"]["orders"] == []
    assert isinstance(state["server_time"], int) and state["seq"] >= 1  # room:status live


async def test_bad_input_gets_typed_errors(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    _, rid, _ = await _live_room(app_server, api)
    c = await client_factory(app_server.url)
    assert ack_error(await c.call("no:such_event", {})) == "invalid"
    assert ack_error(await c.call("room:join", "a string")) == "invalid"
    assert ack_error(await c.call("room:join", [rid])) == "invalid"
    assert ack_error(await c.call("room:join")) == "invalid"
    missing = await c.call("room:join", {})
    assert ack_error(missing) == "invalid" and "room_id" in missing["error"]["fields"]
    typed = await c.call("room:join", {"room_id": rid, "since_seq": "3"})
    assert ack_error(typed) == "invalid" and "since_seq" in typed["error"]["fields"]
    assert ack_error(await c.call("room:join", {"room_id": rid, "since_seq": -1})) == "invalid"
    assert ack_error(await c.call("room:join", {"room_id": "x" * 500})) == "invalid"
    assert ack_error(await c.call("room:join", {"room_id": "r_missing"})) == "not_found"
    assert (await c.call("room:join", {"room_id": rid}))["ok"] is True  # still connected


async def test_pin_authorization_and_broadcast(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, products = await _live_room(app_server, api)
    other_host = await make_user(app_server.node, "other", "host")
    other_rid = (await api.ok("POST", "/api/rooms", other_host, {"title": "Other"}))["id"]
    staff = await make_user(app_server.node, "staffer", "staff")
    viewer_token, _ = await api.guest("v")

    viewer = await client_factory(app_server.url, viewer_token)
    join = await viewer.ok("room:join", {"room_id": rid})
    base_seq = join["state"]["seq"]
    pin = {"room_id": rid, "product_id": products[0]["id"]}
    assert ack_error(await viewer.call("product:pin", pin)) == "forbidden"
    intruder = await client_factory(app_server.url, other_host)
    assert ack_error(await intruder.call("product:pin", pin)) == "forbidden"

    host_c = await client_factory(app_server.url, host)
    ack = await host_c.ok("product:pin", pin)
    assert ack["product"]["id"] == products[0]["id"]
    got = await viewer.wait_for("product:pinned")
    assert got["room_id"] == rid and got["seq"] > base_seq
    assert got["product"]["id"] == products[0]["id"]

    staff_c = await client_factory(app_server.url, staff)
    await staff_c.ok("product:pin", {"room_id": rid, "product_id": None})
    unpinned = await viewer.wait_for("product:pinned", lambda d: d["product"] is None)
    assert unpinned["seq"] > got["seq"]
    foreign = {"room_id": other_rid, "product_id": products[1]["id"]}
    assert ack_error(await intruder.call("product:pin", foreign)) == "not_found"

    state = (await viewer.ok("room:join", {"room_id": rid}))["state"]
    assert state["pinned_product"] is None


async def test_seq_strictly_increases_and_recovery(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    host, rid, products = await _live_room(app_server, api)
    host_c = await client_factory(app_server.url, host)
    viewer = await client_factory(app_server.url)
    seq0 = (await viewer.ok("room:join", {"room_id": rid}))["state"]["seq"]
    for i in range(6):
        await host_c.ok("product:pin", {"room_id": rid, "product_id": products[i % 2]["id"]})
    await viewer.wait_for("product:pinned", lambda d: d["seq"] >= seq0 + 6)
    seqs = [d["seq"] for d in viewer.received("product:pinned")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 6
    await viewer.ok("room:leave", {"room_id": rid})
    last_seen = seqs[-1]

    for i in range(3):  # missed while away
        await host_c.ok("product:pin", {"room_id": rid, "product_id": products[i % 2]["id"]})
    before = len(viewer.events)
    back = await viewer.ok("room:join", {"room_id": rid, "since_seq": last_seen})
    assert back["recovered"] is True
    replayed = [d["seq"] for name, d in viewer.events[before:] if name == "product:pinned"]
    assert replayed == sorted(replayed) and len(replayed) == 3 and replayed[0] > last_seen
    assert replayed[-1] <= back["state"]["seq"]

    future = await viewer.ok("room:join", {"room_id": rid, "since_seq": 10**9})
    assert future["recovered"] is False


async def test_online_count_broadcast(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory
) -> None:
    api = api_factory(app_server.url)
    _, rid, _ = await _live_room(app_server, api)
    first = await client_factory(app_server.url)
    await first.ok("room:join", {"room_id": rid})
    others = [await client_factory(app_server.url) for _ in range(3)]
    for c in others:
        await c.ok("room:join", {"room_id": rid})
    got = await first.wait_for("online:count", lambda d: d["online"] == 4)
    assert got["room_id"] == rid and isinstance(got["seq"], int)
    await others[0].close()
    await first.wait_for("online:count", lambda d: d["online"] == 3)
    listed = (await api.ok("GET", "/api/rooms"))["rooms"]
    assert listed[0]["online"] == 3
