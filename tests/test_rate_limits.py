"""Connection and event rate limits per client IP and per user (transport/limits.py).

The buckets are checked with deterministic clocks; the wiring with a real node and real
Socket.IO clients, whose client address is set through X-Forwarded-For from 127.0.0.1 (a
trusted proxy by default) so that one test machine can be many addresses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from livecommerce.settings import LOADTEST_LIMITS, LimitSettings
from livecommerce.transport.limits import Bucket, Buckets, Limits
from tests.conftest import AppServer, ack_error, make_user, start_app
from tests.support.client import Api, Client

# -- the buckets ----------------------------------------------------------------------


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = Bucket(rate=2.0, burst=3, tokens=3, at=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)  # one token every half second
    assert bucket.take(100.25) == pytest.approx(0.25)  # refused takes spend nothing
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) > 0
    assert [bucket.take(200.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills to burst


def test_buckets_are_per_key_and_full_ones_are_forgotten() -> None:
    buckets = Buckets(rate=1.0, burst=2)
    assert buckets.take("a", 0.0) == 0.0 and buckets.take("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0  # another key has its own bucket
    assert len(buckets) == 2
    buckets.take("c", 1000.0)  # long after: a and b are full again, so swept
    assert len(buckets) == 1


def test_random_takes_never_exceed_rate_times_time_plus_burst() -> None:
    rng = random.Random(7)
    for _ in range(50):
        rate, burst = rng.uniform(0.5, 50), rng.randint(1, 40)
        bucket = Bucket(rate, burst, burst, 0.0)
        now, allowed = 0.0, 0
        for _ in range(2000):
            now += rng.expovariate(rate * 3)
            allowed += bucket.take(now) == 0.0
        assert allowed <= burst + rate * now + 1e-6
        # and it lets the rate through: at worst (burst 1, arrivals 3x the rate) a grant
        # waits 1/rate for its token plus 1/(3 rate) for the next arrival: 3/4 of the rate
        assert allowed >= rate * now * 0.72


def test_client_ip_believes_only_trusted_proxies() -> None:
    limits = Limits(LimitSettings(trusted_proxies=["127.0.0.1", "10.0.0.0/8"]))
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3"}
    # through two trusted hops: the right-most untrusted address is the client
    assert limits.client_ip("127.0.0.1", headers) == "203.0.113.9"
    # an untrusted peer's header is its own to forge: ignored
    assert limits.client_ip("198.51.100.7", headers) == "198.51.100.7"
    assert limits.client_ip("127.0.0.1", {"X-Real-IP": "192.0.2.1"}) == "192.0.2.1"
    assert limits.client_ip("127.0.0.1", {"X-Real-IP": "not-an-ip"}) == "127.0.0.1"
    assert limits.client_ip("127.0.0.1", {}) == "127.0.0.1"


# -- a node with tight limits -----------------------------------------------------------


def _tight(**values: Any) -> dict[str, Any]:
    """The suite's lifted limits, with the ones under test set low."""
    return {**LOADTEST_LIMITS, **values}


@pytest.fixture
async def servers(db_url: str) -> AsyncIterator[list[AppServer]]:
    started: list[AppServer] = []
    yield started
    for server in started:
        await server.server.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


async def _node(servers: list[AppServer], db_url: str, **limits: Any) -> AppServer:
    servers.append(await start_app(db_url, limits=_tight(**limits)))
    return servers[-1]


async def _connect(
    clients: list[Client], url: str, token: str | None = None, ip: str = "192.0.2.10"
) -> Client:
    client = Client(url, token, headers={"X-Forwarded-For": ip})
    clients.append(client)
    return await client.connect()


async def _refused(url: str, token: str | None = None, ip: str = "192.0.2.10") -> dict[str, Any]:
    client = Client(url, token, headers={"X-Forwarded-For": ip})
    refused: list[Any] = []
    client.sio.on("connect_error", refused.append)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect()
    finally:
        await client.close()
    assert refused, "no connect_error"
    return dict(refused[0]["data"])


async def test_connections_per_ip_are_limited_and_other_ips_are_not(
    servers: list[AppServer], clients: list[Client], db_url: str
) -> None:
    app = await _node(servers, db_url, connect_per_ip_rate=0.01, connect_per_ip_burst=3)
    for _ in range(3):
        await _connect(clients, app.url, ip="203.0.113.5")
    refused = await _refused(app.url, ip="203.0.113.5")
    assert refused["code"] == "rate_limited" and refused["retry_after_ms"] > 1000
    await _connect(clients, app.url, ip="203.0.113.6")  # a different address: its own bucket


async def test_connections_per_user_are_capped_and_rate_limited(
    servers: list[AppServer], clients: list[Client], db_url: str
) -> None:
    app = await _node(
        servers, db_url, conns_per_user=2, connect_per_user_rate=0.01, connect_per_user_burst=4
    )
    token = await make_user(app.node, "tabs", "viewer")
    first = await _connect(clients, app.url, token)
    await _connect(clients, app.url, token)
    third = await _refused(app.url, token)  # a third one at once: over the cap
    assert third["code"] == "rate_limited" and "at most 2" in third["message"]
    await first.close()
    await asyncio.sleep(0.2)  # the server notices the close
    await _connect(clients, app.url, token)  # a slot is free again (4th attempt of 4)
    await clients[-1].close()
    await asyncio.sleep(0.2)
    refused = await _refused(app.url, token)  # slots free, but the connect rate is spent
    assert refused["code"] == "rate_limited" and "user" in refused["message"]
    other = await make_user(app.node, "someone-else", "viewer")
    await _connect(clients, app.url, other)


async def _fire(client: Client, n: int) -> list[dict[str, Any]]:
    """n events at once from one connection (unknown events: each answers at once)."""
    return await asyncio.gather(*(client.call("limits:probe", {"i": i}) for i in range(n)))


def _codes(acks: list[dict[str, Any]]) -> list[str]:
    return [ack_error(ack) for ack in acks]


async def test_events_per_connection_concurrent_burst_lets_exactly_burst_through(
    servers: list[AppServer], clients: list[Client], db_url: str
) -> None:
    app = await _node(servers, db_url, events_per_conn_rate=0.01, events_per_conn_burst=10)
    rng = random.Random(3)
    for _ in range(3):  # fresh connections, random sizes, all at once
        client = await _connect(clients, app.url, ip=f"198.51.100.{rng.randint(1, 250)}")
        n = rng.randint(11, 60)
        codes = _codes(await _fire(client, n))
        assert codes.count("invalid") == 10, codes  # through to the dispatcher: unknown event
        assert codes.count("rate_limited") == n - 10
    acks = await _fire(client, 1)
    assert acks[0]["error"]["retry_after_ms"] > 0


async def test_events_per_user_span_their_connections(
    servers: list[AppServer], clients: list[Client], db_url: str
) -> None:
    app = await _node(servers, db_url, events_per_user_rate=0.01, events_per_user_burst=12)
    token = await make_user(app.node, "twin", "viewer")
    a = await _connect(clients, app.url, token, ip="192.0.2.20")
    b = await _connect(clients, app.url, token, ip="192.0.2.21")
    codes = _codes([*await _fire(a, 8), *await _fire(b, 8)])
    assert codes.count("invalid") == 12 and codes.count("rate_limited") == 4
    other = await make_user(app.node, "bystander", "viewer")
    c = await _connect(clients, app.url, other, ip="192.0.2.22")
    assert _codes(await _fire(c, 3)) == ["invalid"] * 3  # someone else is not affected


async def test_events_per_ip_span_connections_and_refill(
    servers: list[AppServer], clients: list[Client], db_url: str
) -> None:
    app = await _node(servers, db_url, events_per_ip_rate=20, events_per_ip_burst=6)
    a = await _connect(clients, app.url, ip="192.0.2.30")
    b = await _connect(clients, app.url, ip="192.0.2.30")
    codes = _codes([*await _fire(a, 4), *await _fire(b, 4)])
    assert codes.count("invalid") == 6 and codes.count("rate_limited") == 2
    await asyncio.sleep(0.3)  # 20 tokens a second: a few are back
    assert _codes(await _fire(b, 2)) == ["invalid", "invalid"]


async def test_auth_requests_per_ip_get_429_with_retry_after(
    servers: list[AppServer], db_url: str, tmp_path: Path
) -> None:
    app = await _node(servers, db_url, auth_per_ip_rate=0.01, auth_per_ip_burst=2)
    api = Api(app.url)
    try:
        for i in range(2):
            await api.guest(f"guest{i}")
        async with api.session.post(app.url + "/api/auth/guest", json={"name": "third"}) as res:
            assert res.status == 429
            assert int(res.headers["Retry-After"]) >= 1
            assert (await res.json())["error"]["code"] == "rate_limited"
        async with api.session.post(
            app.url + "/api/auth/login",
            json={"username": "x", "password": "y"},
            headers={"X-Forwarded-For": "192.0.2.99"},  # another client: not limited
        ) as res:
            assert res.status == 401
    finally:
        await api.close()


async def test_default_limits_let_a_normal_viewer_session_through(
    db_url: str, clients: list[Client]
) -> None:
    """The shipped defaults (not the suite's loopback ones) on a page's usual traffic."""
    app = await start_app(db_url, limits=LimitSettings().model_dump())
    try:
        host = await make_user(app.node, "host", "host")
        api = Api(app.url)
        try:
            room = await api.ok("POST", "/api/rooms", host, {"title": "Defaults"})
            await api.ok("POST", f"/api/rooms/{room['id']}/start", host)
            token, _ = await api.guest("viewer")
        finally:
            await api.close()
        viewer = await _connect(clients, app.url, token)
        await viewer.ok("room:join", {"room_id": room["id"]})
        for _ in range(10):  # a burst of taps, as the page sends them
            await viewer.ok("like:send", {"room_id": room["id"], "count": 5})
        await viewer.ok("comment:send", {"room_id": room["id"], "text": "hello"})
        await viewer.close()
    finally:
        await app.server.close()
