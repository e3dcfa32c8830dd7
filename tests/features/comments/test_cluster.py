"""Comments across real server processes sharing Redis: each comment crosses once, every
node's viewers get every comment in each sender's order, a mute set on one node holds on
the other, and a viewer whose node is killed recovers the missed comments by since_seq."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import ack_error
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]

#: Senders may flood and viewers see everything, so order and completeness are checkable.
OPEN_ROOM = {
    "LIVECOMMERCE_COMMENTS__RATE_PER_S": "1000",
    "LIVECOMMERCE_COMMENTS__BURST": "1000",
    "LIVECOMMERCE_COMMENTS__VIEWER_RATE": "10000",
}


async def _live_room(api: Api, host: str) -> str:
    rid = str((await api.ok("POST", "/api/rooms", host, {"title": "Cluster"}))["id"])
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    return rid


def _texts_by_sender(client: Client) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for batch in client.received("comment:batch"):
        for item in batch["items"]:
            out[item["user"]["id"]] += [item["text"]] * item.get("count", 1)
    return out


@pytest.mark.both_databases
async def test_every_node_gets_every_comment_in_each_senders_order(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    nodes = await cluster(2, env=OPEN_ROOM)
    api = api_factory(nodes[0].url)
    rid = await _live_room(api, await add_user(db_url, "anchor", "host"))
    rng = random.Random(7)
    viewers = [await client_factory(n.url) for n in nodes for _ in range(2)]
    senders: list[tuple[str, Client]] = []
    for i in range(6):
        token, user = await api.guest(f"sender{i}")
        senders.append((user["id"], await client_factory(nodes[i % 2].url, token)))
    for client in viewers + [c for _, c in senders]:
        await client.ok("room:join", {"room_id": rid})
    per_sender = 40

    async def burst(client: Client, tag: int) -> None:
        # Fired without waiting for acks: the server must keep the order they were sent in.
        calls = []
        for n in range(per_sender):
            calls.append(client.call("comment:send", {"room_id": rid, "text": f"{tag}:{n:03d}"}))
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() * 0.02)
        acks = await asyncio.gather(*calls)
        assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]

    await asyncio.gather(*(burst(c, i) for i, (_, c) in enumerate(senders)))
    expected = {
        uid: [f"{i}:{n:03d}" for n in range(per_sender)] for i, (uid, _) in enumerate(senders)
    }
    for _ in range(100):
        if all(_texts_by_sender(v) == expected for v in viewers):
            break
        await asyncio.sleep(0.1)
    for viewer in viewers:
        assert _texts_by_sender(viewer) == expected  # all of them, each sender in order, once
        seqs = [b["seq"] for b in viewer.received("comment:batch")]
        assert seqs == sorted(set(seqs))


async def test_mute_set_on_one_node_holds_on_the_other(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2)
    api = api_factory(node_a.url)
    host = await add_user(db_url, "anchor2", "host")
    rid = await _live_room(api, host)
    token, user = await api.guest("loud")
    loud = await client_factory(node_b.url, token)
    moderator = await client_factory(node_a.url, host)
    await moderator.ok("mod:mute", {"room_id": rid, "user_id": user["id"], "duration_s": 30})
    ack = await loud.call("comment:send", {"room_id": rid, "text": "hello?"})
    assert ack_error(ack) == "muted"
    await moderator.ok("mod:unmute", {"room_id": rid, "user_id": user["id"]})
    await loud.ok("comment:send", {"room_id": rid, "text": "hello again"})


async def test_recovery_by_since_seq_after_the_viewers_node_is_killed(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    node_a, node_b = await cluster(2)
    api = api_factory(node_b.url)
    host = await add_user(db_url, "anchor3", "host")
    rid = await _live_room(api, host)
    talker = await client_factory(node_b.url, host)
    viewer = await client_factory(node_a.url)
    state = (await viewer.ok("room:join", {"room_id": rid}))["state"]
    await talker.ok("comment:send", {"room_id": rid, "text": "before"})
    last_seen = (await viewer.wait_for("comment:batch"))["seq"]
    assert last_seen > state["seq"]
    node_a.kill()
    missed = [
        (await talker.ok("comment:send", {"room_id": rid, "text": f"missed {i}"}))["id"]
        for i in range(5)
    ]
    back = await client_factory(node_b.url)
    ack = await back.ok("room:join", {"room_id": rid, "since_seq": last_seen})
    assert ack["recovered"] is True
    replayed = [i["id"] for b in back.received("comment:batch") for i in b["items"]]
    assert replayed[:5] == missed
    await talker.ok("comment:send", {"room_id": rid, "text": "after"})
    await back.wait_for("comment:batch", lambda b: b["items"][0]["text"] == "after")
