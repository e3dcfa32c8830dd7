"""PK battles between rooms on two real server processes sharing Redis: final scores equal
what was paid (or liked) in each room during the fight, both rooms get the same result, and
a killed node does not stop the settlement."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user, mint_token

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
ENV = {
    "LIVECOMMERCE_PK__MIN_DURATION_S": "1",
    "LIVECOMMERCE_PK__UPDATE_MS": "100",
    "LIVECOMMERCE_LIKES__BROADCAST_MS": "100",
    "LIVECOMMERCE_LIKES__RATE_PER_S": "100",
    "LIVECOMMERCE_LIKES__BURST": "100",
}


async def _room(api: Api, host: str, title: str) -> tuple[str, str]:
    rid = (await api.ok("POST", "/api/rooms", host, {"title": title}))["id"]
    product = {"title": "Lipstick", "price_cents": 12_900, "stock": 10_000}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return rid, pid


async def _fans(
    node: ServerProcess, factory: ClientFactory, rid: str, n: int, tag: str
) -> list[Client]:
    async def one(i: int) -> Client:
        client = await factory(node.url, mint_token(f"u_{tag}_{i}", f"{tag}{i}"))
        await client.ok("room:join", {"room_id": rid})
        return client

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _final(client: Client, pk_id: str) -> dict[str, Any] | None:
    for update in client.received("pk:update"):
        if update["pk"]["id"] == pk_id and update["pk"]["phase"] == "punishing":
            return dict(update["pk"])
    return None


async def _fight(
    api: Api, hosts: list[Client], rooms: list[str], mode: str, duration_s: int
) -> dict[str, Any]:
    terms = {"room_id": rooms[0], "target_room_id": rooms[1], "duration_s": duration_s,
             "punish_s": 2, "mode": mode}  # fmt: skip
    pk = (await hosts[0].ok("pk:invite", terms))["pk"]
    started = (await hosts[1].ok("pk:respond", {"pk_id": pk["id"], "accept": True}))["pk"]
    assert started["phase"] == "fighting"
    return dict(started)


async def test_scores_are_exactly_what_was_paid_or_liked_in_each_room(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2, env=ENV)
    api = api_factory(nodes[0].url)
    host_tokens = [await add_user(db_url, f"pkhost{i}", "host") for i in range(2)]
    made = [await _room(api, host_tokens[i], f"room {i}") for i in range(2)]
    rooms = [rid for rid, _ in made]
    hosts = [await client_factory(nodes[i].url, host_tokens[i]) for i in range(2)]
    for i in range(2):
        await hosts[i].ok("room:join", {"room_id": rooms[i]})
    fans = [await _fans(nodes[i], client_factory, rooms[i], 100, f"s{i}") for i in range(2)]
    sales = []
    for i, (rid, pid) in enumerate(made):
        terms = {"room_id": rid, "product_id": pid, "price_cents": 990 + i * 10,
                 "quantity": 1000, "per_user_limit": 5, "duration_s": 600}  # fmt: skip
        sales.append((await hosts[i].ok("flashsale:create", terms))["sale"])
    rng = random.Random(3)

    # Sales: buying before the fight must not count; paying during it must.
    early = [
        await fans[i][0].ok("flashsale:buy", {"sale_id": sales[i]["id"], "request_id": "early"})
        for i in range(2)
    ]
    for i in range(2):
        await fans[i][0].ok("order:pay", {"order_id": early[i]["order"]["id"]})
    pk = await _fight(api, hosts, rooms, "sales", 8)
    expected = [0, 0]

    async def shop(i: int, client: Client, n: int) -> None:
        for k in range(rng.randint(1, 2)):
            order = (
                await client.ok(
                    "flashsale:buy", {"sale_id": sales[i]["id"], "request_id": f"r{n}-{k}"}
                )
            )["order"]
            if rng.random() < 0.8:  # some never pay: reserved orders do not score
                paid = (await client.ok("order:pay", {"order_id": order["id"]}))["order"]
                expected[i] += paid["amount_cents"]

    await asyncio.gather(*(shop(i, c, n) for i in range(2) for n, c in enumerate(fans[i])))
    assert time.time() * 1000 < pk["ends_at"] - 1000, "the shopping ran past the fight"
    await hosts[0].ok("pk:end", {"pk_id": pk["id"]})
    await _assert_final(hosts, pk["id"], expected, rooms)

    # Likes: a rematch on the same rooms, once the punishment is over.
    await hosts[0].wait_for(
        "pk:update", lambda d: d["pk"]["id"] == pk["id"] and d["pk"]["phase"] == "ended"
    )
    pk2 = await _fight(api, hosts, rooms, "likes", 6)
    expected = [0, 0]

    async def cheer(i: int, client: Client) -> None:
        for _ in range(rng.randint(1, 4)):
            count = rng.randint(1, 100)
            await client.ok("like:send", {"room_id": rooms[i], "count": count})
            expected[i] += count

    await asyncio.gather(*(cheer(i, c) for i in range(2) for c in fans[i]))
    assert time.time() * 1000 < pk2["ends_at"] - 1500, "the cheering ran past the fight"
    await _assert_final(hosts, pk2["id"], expected, rooms, wait_for_end=True)


async def _assert_final(
    hosts: list[Client],
    pk_id: str,
    expected: list[int],
    rooms: list[str],
    wait_for_end: bool = False,
) -> None:
    timeout = 20 if wait_for_end else 10
    for host in hosts:
        await host.wait_for(
            "pk:update", lambda d: d["pk"]["id"] == pk_id and d["pk"]["phase"] == "punishing",
            timeout=timeout,
        )  # fmt: skip
    finals = [_final(host, pk_id) for host in hosts]
    assert finals[0] == finals[1] is not None  # both rooms: the same final update
    assert finals[0] is not None
    assert [r["room_id"] for r in finals[0]["rooms"]] == rooms
    assert [r["score"] for r in finals[0]["rooms"]] == expected
    leader = (
        rooms[0] if expected[0] > expected[1] else rooms[1] if expected[1] > expected[0] else None
    )
    assert finals[0]["winner_room_id"] == leader
    for host in hosts:
        assert (
            sum(
                1
                for u in host.received("pk:update")
                if u["pk"]["id"] == pk_id and u["pk"]["phase"] == "punishing"
            )
            == 1
        )


async def test_the_pk_settles_once_when_the_node_holding_its_end_is_killed(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2, env=ENV)
    api = api_factory(node_a.url)
    tokens = [await add_user(db_url, f"killhost{i}", "host") for i in range(2)]
    rooms = [(await _room(api, tokens[i], f"k{i}"))[0] for i in range(2)]
    host_a = await client_factory(node_a.url, tokens[0])
    host_b = await client_factory(node_b.url, tokens[1])  # accepts: schedules the end on B
    watcher = await client_factory(node_a.url)
    await watcher.ok("room:join", {"room_id": rooms[0]})
    fans = await _fans(node_a, client_factory, rooms[0], 5, "k")
    pk = await _fight(api, [host_a, host_b], rooms, "likes", 4)
    for fan in fans:
        await fan.ok("like:send", {"room_id": rooms[0], "count": 10})
    await asyncio.sleep(1.0)
    node_b.kill()
    final = await watcher.wait_for(
        "pk:update", lambda d: d["pk"]["phase"] == "punishing", timeout=20
    )
    assert [r["score"] for r in final["pk"]["rooms"]] == [50, 0]
    assert final["pk"]["winner_room_id"] == rooms[0]
    await watcher.wait_for("pk:update", lambda d: d["pk"]["phase"] == "ended", timeout=10)
    with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
        settled = conn.execute("SELECT id, score_a FROM pk_battles").fetchall()
    assert settled == [(pk["id"], 50)]
    punishing = [u for u in watcher.received("pk:update") if u["pk"]["phase"] == "punishing"]
    assert len(punishing) == 1
