"""Lucky draws on one in-process node, through real Socket.IO clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livecommerce.features.draws import fair
from tests.conftest import AppServer, ack_error, make_user
from tests.features.comments.conftest import live_room
from tests.features.comments.test_service import joined
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
FAST = {"draws": {"min_duration_s": 1}}


def _draw(rid: str, **over: Any) -> dict[str, Any]:
    return {"room_id": rid, "prize": "口红一支", "winners": 2, "duration_s": 2,
            "entry": {"type": "anyone"}, **over}  # fmt: skip


async def test_only_the_host_creates_one_draw_at_a_time(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    room = await live_room(server, api_factory(server.url))
    rid = room.room_id
    viewer = await joined(client_factory, room, (await room.api.guest("v"))[0])
    rival = await client_factory(server.url, await make_user(server.node, "rival", "host"))
    assert ack_error(await viewer.call("draw:create", _draw(rid))) == "forbidden"
    assert ack_error(await rival.call("draw:create", _draw(rid))) == "forbidden"
    host = await joined(client_factory, room, room.host)
    bad_fields: list[dict[str, Any]] = [
        {"winners": 0}, {"winners": 1001}, {"duration_s": 3601}, {"prize": ""},
        {"entry": {"type": "comment"}}, {"entry": {"type": "lottery"}},
    ]  # fmt: skip
    for bad in bad_fields:
        assert ack_error(await host.call("draw:create", _draw(rid, **bad))) == "invalid", bad
    acks = await asyncio.gather(*(host.call("draw:create", _draw(rid)) for _ in range(5)))
    assert sorted(a["ok"] for a in acks) == [False] * 4 + [True]
    assert {ack_error(a) for a in acks if not a["ok"]} == {"busy"}
    draw = next(a for a in acks if a["ok"])["draw"]
    assert draw["status"] == "open" and len(draw["commitment"]) == 64 and draw["entrants"] == 0
    update = await viewer.wait_for("draw:update")
    assert update["draw"]["id"] == draw["id"] and "seed" not in str(update)
    state = (await viewer.ok("room:join", {"room_id": rid}))["state"]
    assert state["draw"]["id"] == draw["id"] and state["me"]["entered_draw"] is False


@pytest.mark.both_databases
async def test_anyone_draw_enter_result_proof_and_the_winners_told(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    room = await live_room(server, api_factory(server.url))
    rid = room.room_id
    host = await joined(client_factory, room, room.host)
    draw = (await host.ok("draw:create", _draw(rid, winners=3)))["draw"]
    viewers: list[tuple[str, Client]] = []
    for i in range(8):
        token, user = await room.api.guest(f"fan{i}")
        viewers.append((user["id"], await joined(client_factory, room, token)))
    muted_token, muted_user = await room.api.guest("muted")
    muted = await joined(client_factory, room, muted_token)
    await host.ok("mod:mute", {"room_id": rid, "user_id": muted_user["id"], "duration_s": 60})
    assert ack_error(await muted.call("draw:enter", {"draw_id": draw["id"]})) == "not_eligible"
    for _, client in viewers:
        assert (await client.ok("draw:enter", {"draw_id": draw["id"]}))["entrants"] >= 1
    again = await viewers[0][1].call("draw:enter", {"draw_id": draw["id"]})
    assert ack_error(again) == "already_entered"
    leaver_id, leaver = viewers.pop()  # entered, then left the room: not drawn
    await leaver.close()
    result = await host.wait_for("draw:result", timeout=10)
    assert result["draw_id"] == draw["id"] and result["commitment"] == draw["commitment"]
    assert result["entrants_count"] == 7
    ids = [w["id"] for w in result["winners"]]
    assert len(set(ids)) == 3 and set(ids) <= {uid for uid, _ in viewers}
    assert leaver_id not in ids
    for uid, client in viewers:
        won = [e for e in client.received("draw:won") if e["draw_id"] == draw["id"]]
        if uid in ids:
            await client.wait_for("draw:won")
        else:
            assert won == []
    proof = await room.api.ok("GET", f"/api/draws/{draw['id']}/proof")
    assert fair.verify(proof) == [] and proof["winners"] == ids
    assert sorted(proof["entrants"]) == sorted(uid for uid, _ in viewers)
    assert ack_error(await viewers[0][1].call("draw:enter", {"draw_id": draw["id"]})) == "ended"
    await host.ok("draw:create", _draw(rid))  # the room is free for the next one


async def test_proof_is_withheld_until_the_draw_and_keyword_entry_works(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST, comments={"rate_per_s": 100, "burst": 100})
    room = await live_room(server, api_factory(server.url))
    rid = room.room_id
    host = await joined(client_factory, room, room.host)
    entry = {"type": "comment", "keyword": "想要"}
    draw = (await host.ok("draw:create", _draw(rid, entry=entry, duration_s=2)))["draw"]
    status, body = await room.api.request("GET", f"/api/draws/{draw['id']}/proof")
    assert status == 409 and body["error"]["code"] == "conflict"
    assert ack_error(await host.call("draw:enter", {"draw_id": draw["id"]})) == "not_eligible"
    fans = {}
    for i, text in enumerate(["我想要!", "想 要 想要", "just looking", "想要想要"]):
        token, user = await room.api.guest(f"k{i}")
        client = await joined(client_factory, room, token)
        await client.ok("comment:send", {"room_id": rid, "text": text})
        fans[user["id"]] = text
    result = await host.wait_for("draw:result", timeout=10)
    proof = await room.api.ok("GET", f"/api/draws/{draw['id']}/proof")
    entered = {uid for uid, text in fans.items() if text != "just looking"}
    assert set(proof["entrants"]) == entered and result["entrants_count"] == 3
    assert fair.verify(proof) == []
