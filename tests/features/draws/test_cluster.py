"""Lucky draws across real server processes sharing Redis: keyword entries from two
nodes count each eligible user once, and a killed scheduling node still yields exactly one
result."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livecommerce.features.draws import fair
from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
ENV = {"LIVECOMMERCE_DRAWS__MIN_DURATION_S": "1"}


async def _room(api: Api, host: str) -> str:
    rid = str((await api.ok("POST", "/api/rooms", host, {"title": "Giveaway"}))["id"])
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return rid


async def _viewers(
    api: Api, nodes: list[ServerProcess], factory: ClientFactory, rid: str, n: int, tag: str
) -> list[tuple[str, Client]]:
    async def one(i: int) -> tuple[str, Client]:
        token, user = await api.guest(f"{tag}{i}")
        client = await factory(nodes[i % len(nodes)].url, token)
        await client.ok("room:join", {"room_id": rid})
        return user["id"], client

    out: list[tuple[str, Client]] = []
    for start in range(0, n, 100):
        out += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    return out


async def test_500_keyword_entrants_on_two_nodes(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2, env=ENV)
    api = api_factory(nodes[0].url)
    host_token = await add_user(db_url, "giver", "host")
    rid = await _room(api, host_token)
    host = await client_factory(nodes[0].url, host_token)
    users = await _viewers(api, nodes, client_factory, rid, 500, "fan")
    rng = random.Random(11)
    rng.shuffle(users)
    keen, quiet, muted = users[:300], users[300:450], users[450:]
    for uid, _ in muted:
        await host.ok("mod:mute", {"room_id": rid, "user_id": uid, "duration_s": 300})
    entry = {"type": "comment", "keyword": "抽我"}
    terms = {"room_id": rid, "prize": "耳机", "winners": 50, "duration_s": 8, "entry": entry}
    draw = (await host.ok("draw:create", terms))["draw"]

    async def talk(client: Client, texts: list[str]) -> list[dict[str, Any]]:
        return [await client.call("comment:send", {"room_id": rid, "text": t}) for t in texts]

    said = await asyncio.gather(
        *(talk(c, ["抽我抽我"] * rng.randint(1, 3)) for _, c in keen),
        *(talk(c, ["好看", "多少钱"][: rng.randint(1, 2)]) for _, c in quiet),
        *(talk(c, ["抽 我"]) for _, c in muted),
    )
    assert all(a["ok"] for acks in said[:450] for a in acks)
    assert all(ack_error(a) == "muted" for acks in said[450:] for a in acks)
    watcher_a, watcher_b = keen[0][1], quiet[1][1]
    result = await watcher_a.wait_for("draw:result", timeout=20)
    proof = await api.ok("GET", f"/api/draws/{draw['id']}/proof")
    assert sorted(proof["entrants"]) == sorted(uid for uid, _ in keen)  # each exactly once
    assert result["entrants_count"] == 300 and len(set(proof["winners"])) == 50
    assert [w["id"] for w in result["winners"]] == proof["winners"]
    assert set(proof["winners"]) <= {uid for uid, _ in keen}
    assert fair.verify(proof) == []
    tampered = {**proof, "entrants": fair.order([*proof["entrants"][1:], "u_someone_else"])}
    assert fair.verify(tampered)
    await asyncio.sleep(1.0)
    for client in (watcher_a, watcher_b):
        assert len(client.received("draw:result")) == 1


@pytest.mark.both_databases
async def test_the_draw_still_comes_once_when_its_node_is_killed(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2, env=ENV)
    api = api_factory(node_b.url)
    host_token = await add_user(db_url, "giver2", "host")
    rid = await _room(api, host_token)
    fans = await _viewers(api, [node_b], client_factory, rid, 10, "b")
    host = await client_factory(node_a.url, host_token)  # the draw is scheduled on node A
    terms = {"room_id": rid, "prize": "T-shirt", "winners": 3, "duration_s": 4,
             "entry": {"type": "anyone"}}  # fmt: skip
    draw = (await host.ok("draw:create", terms))["draw"]
    for _, client in fans:
        await client.ok("draw:enter", {"draw_id": draw["id"]})
    await asyncio.sleep(max(0.0, draw["ends_at"] / 1000 - time.time() - 1.5))
    node_a.kill()
    watcher = fans[0][1]
    result = await watcher.wait_for("draw:result", timeout=15)
    assert result["draw_id"] == draw["id"] and result["entrants_count"] == 10
    await asyncio.sleep(2.0)
    assert len(watcher.received("draw:result")) == 1
    proof = await api.ok("GET", f"/api/draws/{draw['id']}/proof")
    assert fair.verify(proof) == [] and len(proof["winners"]) == 3
