"""HTTP API against a real in-process node: auth, rooms, products, errors, health."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import AppServer, make_user
from tests.support.client import Api


async def test_health_ready_and_metrics(
    app_server: AppServer, api_factory: Callable[[str], Api]
) -> None:
    api = api_factory(app_server.url)
    assert (await api.request("GET", "/healthz"))[0] == 200
    status, ready = await api.request("GET", "/readyz")
    assert status == 200
    assert ready["checks"] == {"database": True, "engine": True, "accepting": True}
    await api.request("GET", "/api/rooms")
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    assert "livecommerce_connections" in text
    assert (
        'livecommerce_http_requests_total{node="test-node",route="/api/rooms",status="200"} 1.0'
        in text
    )


async def test_guest_and_login(app_server: AppServer, api_factory: Callable[[str], Api]) -> None:
    api = api_factory(app_server.url)
    token, user = await api.guest("  Mia  ")
    assert user["name"] == "Mia" and user["role"] == "viewer" and token
    status, me = await api.request("GET", "/api/me", token)
    assert status == 200 and me["user"]["id"] == user["id"]

    await make_user(app_server.node, "anchor", "host", "pw-123456")
    assert await api.login("anchor", "pw-123456")
    status, body = await api.request(
        "POST", "/api/auth/login", json={"username": "anchor", "password": "nope-nope"}
    )
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.request("POST", "/api/auth/guest", json={"name": ""})
    assert (
        status == 400 and body["error"]["code"] == "invalid" and "name" in body["error"]["fields"]
    )
    status, body = await api.request("GET", "/api/me", "not-a-token")
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_room_lifecycle_and_authorization(
    app_server: AppServer, api_factory: Callable[[str], Api]
) -> None:
    api = api_factory(app_server.url)
    node = app_server.node
    host = await make_user(node, "host1", "host")
    other_host = await make_user(node, "host2", "host")
    staff = await make_user(node, "staff1", "staff")
    viewer, _ = await api.guest("viewer")

    status, body = await api.request("POST", "/api/rooms", json={"title": "x"})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.request("POST", "/api/rooms", viewer, {"title": "x"})
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await api.request("POST", "/api/rooms", host, {"title": ""})
    assert status == 400 and "title" in body["error"]["fields"]

    room = await api.ok(
        "POST", "/api/rooms", host, {"title": "Spring sale", "stream_url": "https://x.test/a.m3u8"}
    )
    assert room["status"] == "scheduled" and room["host"]["name"] == "host1"
    rid = room["id"]
    assert (await api.ok("GET", "/api/rooms"))["rooms"] == []  # not live yet

    for token, code in ((None, 401), (viewer, 403), (other_host, 403)):
        status, body = await api.request("POST", f"/api/rooms/{rid}/start", token)
        assert status == code, body
    live = await api.ok("POST", f"/api/rooms/{rid}/start", host)
    assert live["status"] == "live" and live["started_at"]
    again = await api.ok("POST", f"/api/rooms/{rid}/start", host)  # retry: same outcome
    assert again["status"] == "live"
    listed = (await api.ok("GET", "/api/rooms"))["rooms"]
    assert [r["id"] for r in listed] == [rid] and listed[0]["online"] == 0
    mine = (await api.ok("GET", "/api/rooms?host=me", host))["rooms"]
    assert [r["id"] for r in mine] == [rid]

    ended = await api.ok("POST", f"/api/rooms/{rid}/end", staff)  # staff may end any room
    assert ended["status"] == "ended"
    status, body = await api.request("POST", f"/api/rooms/{rid}/start", host)
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await api.request("GET", "/api/rooms/r_nope")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_products(app_server: AppServer, api_factory: Callable[[str], Api]) -> None:
    api = api_factory(app_server.url)
    host = await make_user(app_server.node, "host_a", "host")
    other = await make_user(app_server.node, "host_b", "host")
    rid = (await api.ok("POST", "/api/rooms", host, {"title": "r"}))["id"]
    payload = {"title": "Tea", "price_cents": 1990, "stock": 10}
    status, _ = await api.request("POST", f"/api/rooms/{rid}/products", other, payload)
    assert status == 403
    for bad in (
        {**payload, "price_cents": 0},
        {**payload, "stock": -1},
        {**payload, "price_cents": "19"},
    ):
        status, body = await api.request("POST", f"/api/rooms/{rid}/products", host, bad)
        assert status == 400 and body["error"]["code"] == "invalid", bad
    product = await api.ok("POST", f"/api/rooms/{rid}/products", host, payload)
    assert product["price_cents"] == 1990 and product["room_id"] == rid
    listed = (await api.ok("GET", f"/api/rooms/{rid}/products"))["products"]
    assert [p["id"] for p in listed] == [product["id"]]
    viewer, _ = await api.guest("v")
    assert (await api.ok("GET", "/api/orders", viewer)) == {"orders": []}
    status, body = await api.request("GET", "/api/orders")
    assert status == 401


async def test_errors_are_json(app_server: AppServer, api_factory: Callable[[str], Api]) -> None:
    api = api_factory(app_server.url)
    status, body = await api.request("GET", "/api/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    async with api.session.post(app_server.url + "/api/auth/guest", data=b"{not json") as res:
        assert res.status == 400 and (await res.json())["error"]["code"] == "invalid"
    async with api.session.post(app_server.url + "/api/auth/guest", json=[1, 2]) as res:
        assert res.status == 400 and (await res.json())["error"]["code"] == "invalid"


async def test_pages_are_served(app_server: AppServer, api_factory: Callable[[str], Api]) -> None:
    api = api_factory(app_server.url)
    status, html = await api.request("GET", "/")
    assert status == 200 and "/api/rooms" in html
    status, html = await api.request("GET", "/rooms/anything")
    assert status == 200 and "<html" in html
