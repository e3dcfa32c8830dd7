"""PK battles on one in-process node: who may do what, the whole life of a PK, crossed
invitations, and one settlement recorded."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import AppServer, ack_error, make_user
from tests.features.comments.conftest import LiveRoom, live_room
from tests.features.comments.test_service import joined
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
FAST = {"pk": {"min_duration_s": 1, "update_ms": 100}, "likes": {"broadcast_ms": 100}}


async def _two_rooms(server: AppServer, api: Api) -> tuple[LiveRoom, LiveRoom]:
    return await live_room(server, api, "host_a"), await live_room(server, api, "host_b")


def _invite(a: LiveRoom, b: LiveRoom, **over: Any) -> dict[str, Any]:
    return {"room_id": a.room_id, "target_room_id": b.room_id, "duration_s": 3,
            "punish_s": 1, "mode": "likes", **over}  # fmt: skip


async def test_only_the_hosts_may_invite_answer_and_end(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    a, b = await _two_rooms(server, api)
    third = await live_room(server, api, "host_c")
    viewer = await client_factory(server.url, (await api.guest("v"))[0])
    outsider = await client_factory(server.url, third.host)
    anon = await client_factory(server.url)
    for client in (viewer, outsider):
        assert ack_error(await client.call("pk:invite", _invite(a, b))) == "forbidden"
    assert ack_error(await anon.call("pk:invite", _invite(a, b))) == "unauthorized"
    host_a = await client_factory(server.url, a.host)
    host_b = await client_factory(server.url, b.host)
    for bad in ({"duration_s": 3601}, {"mode": "gifts"}, {"punish_s": -1}):
        assert ack_error(await host_a.call("pk:invite", _invite(a, b, **bad))) == "invalid"
    assert ack_error(await host_a.call("pk:invite", _invite(a, a))) == "invalid"
    pk = (await host_a.ok("pk:invite", _invite(a, b)))["pk"]
    invited = await host_b.wait_for("pk:invited")
    assert invited["pk"]["id"] == pk["id"] and pk["phase"] == "invited"
    for client in (viewer, outsider, host_a):  # only the invited room's host answers
        ack = await client.call("pk:respond", {"pk_id": pk["id"], "accept": True})
        assert ack_error(ack) == "forbidden"
    await host_b.ok("pk:respond", {"pk_id": pk["id"], "accept": True})
    for client in (viewer, outsider):
        assert ack_error(await client.call("pk:end", {"pk_id": pk["id"]})) == "forbidden"
    ended = (await host_b.ok("pk:end", {"pk_id": pk["id"]}))["pk"]  # either host may end
    assert ended["phase"] == "punishing"
    assert ack_error(await host_a.call("pk:end", {"pk_id": pk["id"]})) == "conflict"
    staff = await client_factory(server.url, await make_user(server.node, "scene", "staff"))
    assert ack_error(await staff.call("pk:end", {"pk_id": "pk_nope"})) == "not_found"


async def test_a_likes_pk_from_invite_to_ended(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory, db_url: str
) -> None:
    server = await node_factory(**FAST)
    api = api_factory(server.url)
    a, b = await _two_rooms(server, api)
    host_a = await joined(client_factory, a, a.host)
    host_b = await joined(client_factory, b, b.host)
    fans_a = [await joined(client_factory, a, (await api.guest(f"a{i}"))[0]) for i in range(3)]
    fans_b = [await joined(client_factory, b, (await api.guest(f"b{i}"))[0]) for i in range(2)]
    pk = (await host_a.ok("pk:invite", _invite(a, b, duration_s=30, punish_s=1)))["pk"]
    await host_b.ok("pk:respond", {"pk_id": pk["id"], "accept": True})
    fighting = await host_a.wait_for("pk:update", lambda d: d["pk"]["phase"] == "fighting")
    assert fighting["pk"]["ends_at"] - fighting["pk"]["started_at"] == 30_000
    taps_a = [(fans_a[0], 10), (fans_a[1], 20), (fans_a[0], 5), (fans_a[2], 1)]
    taps_b = [(fans_b[0], 7), (fans_b[1], 7)]
    for client, count in taps_a:
        await client.ok("like:send", {"room_id": a.room_id, "count": count})
    for client, count in taps_b:
        await client.ok("like:send", {"room_id": b.room_id, "count": count})
    await host_b.wait_for("pk:update", lambda d: [r["score"] for r in d["pk"]["rooms"]] == [36, 14])
    await host_a.ok("pk:end", {"pk_id": pk["id"]})
    final_a = await host_a.wait_for("pk:update", lambda d: d["pk"]["phase"] == "punishing")
    final_b = await host_b.wait_for("pk:update", lambda d: d["pk"]["phase"] == "punishing")
    assert final_a["pk"] == final_b["pk"]  # both rooms see the same result
    side_a = final_a["pk"]["rooms"][0]
    assert final_a["pk"]["winner_room_id"] == a.room_id and side_a["score"] == 36
    assert side_a["mvp"]["name"] == "a1" and side_a["mvp"]["score"] == 20
    assert [t["score"] for t in side_a["top"]] == [20, 15, 1]
    done = await host_b.wait_for("pk:update", lambda d: d["pk"]["phase"] == "ended", timeout=5)
    assert done["pk"]["rooms"] == final_b["pk"]["rooms"]
    await fans_a[0].ok("like:send", {"room_id": a.room_id, "count": 50})  # after: not counted
    with sqlite3.connect(db_url.split("///", 1)[1]) as conn:
        rows = conn.execute("SELECT score_a, score_b, winner_room_id FROM pk_battles").fetchall()
    assert rows == [(36, 14, a.room_id)]
    again = (await host_a.ok("pk:invite", _invite(a, b)))["pk"]  # a rematch is a new invite
    assert again["id"] != pk["id"]


async def test_crossed_invites_and_a_lapse(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(**{**FAST, "pk": {"min_duration_s": 1, "invite_ttl_s": 1.0}})
    api = api_factory(server.url)
    a, b = await _two_rooms(server, api)
    host_a = await client_factory(server.url, a.host)
    host_b = await client_factory(server.url, b.host)
    acks = await asyncio.gather(
        host_a.call("pk:invite", _invite(a, b)), host_b.call("pk:invite", _invite(b, a))
    )
    assert sorted(ack["ok"] for ack in acks) == [False, True]
    assert ack_error(next(ack for ack in acks if not ack["ok"])) == "busy"
    pk = next(ack for ack in acks if ack["ok"])["pk"]
    watcher = await joined(client_factory, a, None)
    lapsed = await watcher.wait_for("pk:update", lambda d: d["pk"]["phase"] == "lapsed")
    assert lapsed["pk"]["id"] == pk["id"]
    invited_host = host_b if pk["rooms"][1]["room_id"] == b.room_id else host_a
    ack = await invited_host.call("pk:respond", {"pk_id": pk["id"], "accept": True})
    assert ack_error(ack) == "expired"
    await host_a.ok("pk:invite", _invite(a, b))  # the rooms are free again
