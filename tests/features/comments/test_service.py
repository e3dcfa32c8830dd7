"""Bullet comments on one in-process node, through real Socket.IO clients: sending,
every error code, batching, moderation and its audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import AppServer, ack_error, make_user
from tests.features.comments.conftest import LiveRoom, live_room
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]


def items_of(client: Client) -> list[dict[str, Any]]:
    return [item for batch in client.received("comment:batch") for item in batch["items"]]


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def joined(factory: ClientFactory, room: LiveRoom, token: str | None) -> Client:
    client = await factory(room.server.url, token)
    await client.ok("room:join", {"room_id": room.room_id})
    return client


@pytest.mark.both_databases
async def test_send_delivers_one_batch_and_retries_are_idempotent(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    token, user = await room.api.guest("Ann")
    sender = await joined(client_factory, room, token)
    watcher = await joined(client_factory, room, (await room.api.guest("Bo"))[0])
    ack = await sender.ok(
        "comment:send", {"room_id": room.room_id, "text": "  hello  ", "request_id": "r1"}
    )
    again = await sender.ok(
        "comment:send", {"room_id": room.room_id, "text": "hello", "request_id": "r1"}
    )
    assert again["id"] == ack["id"]  # the same answer, and no second comment
    batch = await watcher.wait_for("comment:batch")
    assert batch["room_id"] == room.room_id and batch["seq"] > 0
    [item] = batch["items"]
    assert item["id"] == ack["id"] and item["text"] == "hello"
    assert item["user"] == {"id": user["id"], "name": "Ann", "role": "viewer"}
    await asyncio.sleep(0.4)  # a few more ticks: the retry must not show up
    assert [i["id"] for i in items_of(watcher)] == [ack["id"]]
    late = await joined(client_factory, room, None)
    state = (await late.call("room:join", {"room_id": room.room_id}))["state"]
    assert [c["id"] for c in state["recent_comments"]] == [ack["id"]]
    status, body = await room.api.request("GET", f"/api/rooms/{room.room_id}/comments")
    assert status == 200 and [c["text"] for c in body["comments"]] == ["hello"]


async def test_every_refusal_has_its_code(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(comments={"banned_words": ["badword"]})
    api = api_factory(server.url)
    room = await live_room(server, api)
    viewer = await joined(client_factory, room, (await api.guest("Cy"))[0])
    send = lambda text: viewer.call("comment:send", {"room_id": room.room_id, "text": text})  # noqa: E731
    for bad in ("", "   ", "x" * 101):
        ack = await send(bad)
        assert ack_error(ack) == "invalid" and "text" in ack["error"]["fields"], bad
    assert (
        ack_error(await viewer.call("comment:send", {"room_id": room.room_id, "text": 5}))
        == "invalid"
    )
    # the global list, full-width, mixed case, spaced, dotted, zero-width
    for variant in (
        "badword",
        "ＢＡＤＷＯＲＤ",
        "BadWord!",
        "b a d w o r d",
        "b.a.d.w.o.r.d",
        "bad\u200bword",
    ):
        assert ack_error(await send(f"this is {variant} ok")) == "blocked", variant
    anon = await joined(client_factory, room, None)
    assert (
        ack_error(await anon.call("comment:send", {"room_id": room.room_id, "text": "hi"}))
        == "unauthorized"
    )
    # burst 3 at 1/s: the fourth in a row is rate limited, with how long to wait
    for i in range(3):
        await send(f"hi {i}")
    limited = await send("one too many")
    assert ack_error(limited) == "rate_limited" and 0 < limited["error"]["retry_after_ms"] <= 1000
    scheduled = (await api.ok("POST", "/api/rooms", room.host, {"title": "Later"}))["id"]
    ack = await viewer.call("comment:send", {"room_id": scheduled, "text": "early"})
    assert ack_error(ack) == "room_not_live"
    assert (
        ack_error(await viewer.call("comment:send", {"room_id": "nope", "text": "x"}))
        == "not_found"
    )


async def test_host_and_staff_are_not_rate_limited(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    staff = await make_user(app_server.node, "staffer", "staff")
    for token in (room.host, staff):
        client = await joined(client_factory, room, token)
        acks = [
            await client.call("comment:send", {"room_id": room.room_id, "text": f"t{i}"})
            for i in range(8)
        ]
        assert all(a["ok"] for a in acks), acks


@pytest.mark.both_databases
async def test_room_banned_words_mute_slow_mode_and_the_audit_trail(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    token, user = await room.api.guest("Dee")
    viewer = await joined(client_factory, room, token)
    host = await joined(client_factory, room, room.host)
    rid = room.room_id
    words = await host.ok(
        "mod:banned_words", {"room_id": rid, "add": ["傻逼", "SPAM"], "reason": "rules"}
    )
    assert words["words"] == ["spam", "傻逼"]
    for text in ("傻 逼", "ｓｐａｍ here", "S-P-A-M"):
        assert (
            ack_error(await viewer.call("comment:send", {"room_id": rid, "text": text}))
            == "blocked"
        )
    await host.ok("mod:banned_words", {"room_id": rid, "remove": ["spam"]})
    await viewer.ok("comment:send", {"room_id": rid, "text": "spam is fine now"})

    muted = await host.ok(
        "mod:mute", {"room_id": rid, "user_id": user["id"], "duration_s": 60, "reason": "flood"}
    )
    refused = await viewer.call("comment:send", {"room_id": rid, "text": "let me talk"})
    assert ack_error(refused) == "muted" and refused["error"]["until"] == muted["until"]
    told = await viewer.wait_for("comment:muted")
    assert told == {"room_id": rid, "until": muted["until"]}
    me = (await viewer.ok("room:join", {"room_id": rid}))["state"]["me"]
    assert me["muted"] is True and me["muted_until"] == muted["until"]
    assert (
        ack_error(
            await host.call(
                "mod:mute",
                {"room_id": rid, "user_id": (await room.api.guest("x"))[1]["id"], "duration_s": 0},
            )
        )
        == "invalid"
    )
    host_user = (await room.api.ok("GET", "/api/me", room.host))["user"]["id"]
    assert (
        ack_error(
            await host.call("mod:mute", {"room_id": rid, "user_id": host_user, "duration_s": 5})
        )
        == "forbidden"
    )
    await host.ok("mod:unmute", {"room_id": rid, "user_id": user["id"]})
    await viewer.ok("comment:send", {"room_id": rid, "text": "back"})

    await host.ok("mod:slow_mode", {"room_id": rid, "interval_s": 30})
    assert (await viewer.wait_for("room:slow_mode"))["interval_s"] == 30
    await asyncio.sleep(1.1)  # a token back in the bucket: only slow mode can refuse now
    await viewer.ok("comment:send", {"room_id": rid, "text": "first in slow mode"})
    await asyncio.sleep(1.1)
    slow = await viewer.call("comment:send", {"room_id": rid, "text": "again"})
    assert ack_error(slow) == "rate_limited" and slow["error"]["reason"] == "slow_mode"
    assert 25_000 < slow["error"]["retry_after_ms"] <= 30_000
    await host.ok("comment:send", {"room_id": rid, "text": "hosts ignore slow mode"})
    await host.ok("mod:slow_mode", {"room_id": rid, "interval_s": 0})
    await viewer.ok("comment:send", {"room_id": rid, "text": "free again"})

    actions = (await room.api.ok("GET", f"/api/rooms/{rid}/moderation", room.host))["actions"]
    seen = sorted(a["action"] for a in actions)
    assert seen == ["banned_words", "banned_words", "mute", "slow_mode", "slow_mode", "unmute"]
    mute = next(a for a in actions if a["action"] == "mute")
    assert mute["actor_id"] == host_user and mute["target_user_id"] == user["id"]
    assert mute["reason"] == "flood" and mute["created_at"] > 0
    status, _ = await room.api.request("GET", f"/api/rooms/{rid}/moderation", token)
    assert status == 403


async def test_moderation_is_refused_to_viewers_and_other_hosts(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    other = await make_user(app_server.node, "rival", "host")
    token, user = await room.api.guest("Eve")
    rid = room.room_id
    calls = {
        "mod:mute": {"room_id": rid, "user_id": user["id"], "duration_s": 60},
        "mod:unmute": {"room_id": rid, "user_id": user["id"]},
        "mod:delete_comment": {"room_id": rid, "comment_id": "c_x"},
        "mod:banned_words": {"room_id": rid, "add": ["x1"]},
        "mod:slow_mode": {"room_id": rid, "interval_s": 5},
    }
    anon = await client_factory(app_server.url)
    for event, payload in calls.items():
        assert ack_error(await anon.call(event, payload)) == "unauthorized", event
        for who in (token, other):
            client = await client_factory(app_server.url, who)
            assert ack_error(await client.call(event, payload)) == "forbidden", event
    words = await (await client_factory(app_server.url, room.host)).ok(
        "mod:banned_words", {"room_id": rid}
    )
    assert words["words"] == []  # nothing changed by the refused calls


@pytest.mark.both_databases
async def test_delete_comment_broadcasts_and_reaches_sql(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    viewer = await joined(client_factory, room, (await room.api.guest("Fay"))[0])
    staff = await joined(client_factory, room, await make_user(app_server.node, "mod1", "staff"))
    rid = room.room_id
    keep = (await viewer.ok("comment:send", {"room_id": rid, "text": "keep me"}))["id"]
    gone = (await viewer.ok("comment:send", {"room_id": rid, "text": "delete me"}))["id"]
    await staff.ok("mod:delete_comment", {"room_id": rid, "comment_id": gone, "reason": "spam"})
    deleted = await viewer.wait_for("comment:deleted")
    assert deleted["ids"] == [gone] and deleted["room_id"] == rid
    state = (await viewer.ok("room:join", {"room_id": rid}))["state"]
    assert [c["id"] for c in state["recent_comments"]] == [keep]
    assert (
        ack_error(await staff.call("mod:delete_comment", {"room_id": rid, "comment_id": "c_none"}))
        == "not_found"
    )
    stored = app_server.node.moderation.stored
    await until(lambda: app_server.node.comment_writer.written >= 2)
    await app_server.node.engine.drain_logs()
    row = await stored.get(gone)
    assert row is not None and row.deleted_at is not None and row.text == "delete me"
    assert (await stored.get(keep)).deleted_at is None  # type: ignore[union-attr]


async def test_identical_texts_in_a_tick_are_merged(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(comments={"tick_ms": 300})
    room = await live_room(server, api_factory(server.url))
    watcher = await joined(client_factory, room, None)
    senders = [
        await joined(client_factory, room, (await room.api.guest(f"s{i}"))[0]) for i in range(6)
    ]
    await asyncio.gather(
        *(s.ok("comment:send", {"room_id": room.room_id, "text": "666"}) for s in senders)
    )
    await until(lambda: sum(i.get("count", 1) for i in items_of(watcher)) == 6)
    merged = [i for i in items_of(watcher) if i.get("count", 1) > 1]
    assert merged and all(i["text"] == "666" for i in merged)
    assert len(watcher.received("comment:batch")) < 6  # several comments shared a frame


@pytest.mark.both_databases
async def test_likes_are_totalled_broadcast_and_survive_a_restart(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(likes={"broadcast_ms": 100, "rate_per_s": 5, "burst": 5})
    room = await live_room(server, api_factory(server.url))
    liker = await joined(client_factory, room, (await room.api.guest("Gil"))[0])
    rid = room.room_id
    for bad in (0, 101, "3", None):
        assert ack_error(await liker.call("like:send", {"room_id": rid, "count": bad})) == "invalid"
    for count in (10, 20, 30, 40, 50):
        await liker.ok("like:send", {"room_id": rid, "count": count})
    limited = await liker.call("like:send", {"room_id": rid, "count": 1})
    assert ack_error(limited) == "rate_limited" and limited["error"]["retry_after_ms"] > 0
    total = await liker.wait_for("like:total", lambda d: d["total"] == 150)
    assert total["room_id"] == rid and total["seq"] > 0
    await asyncio.sleep(0.3)
    assert len(liker.received("like:total")) <= 4  # a few per second, not one per like
    await liker.close()
    await server.server.close()  # shutdown flushes the taps to SQL
    again = await node_factory()  # a fresh in-process engine over the same database
    state = (await (await client_factory(again.url)).ok("room:join", {"room_id": rid}))["state"]
    assert state["likes"] == 150


async def test_keywords_are_counted_for_the_host_and_staff(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    room = await live_room(app_server, api_factory(app_server.url))
    host = await joined(client_factory, room, room.host)
    for text in ("这个口红颜色真好看", "口红多少钱", "口红 link please", "link?"):
        await host.ok("comment:send", {"room_id": room.room_id, "text": text})
    path = f"/api/rooms/{room.room_id}/keywords"
    await until(lambda: True)
    words = dict((await room.api.ok("GET", path, room.host))["keywords"])
    assert words["口红"] == 3 and words["link"] == 2
    status, _ = await room.api.request("GET", path, (await room.api.guest("nosy"))[0])
    assert status == 403
