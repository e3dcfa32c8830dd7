"""The per-tick plan (pure) and, end to end, sampling under a flood: a viewer's own
comments and those of the host and staff are never dropped, and every comment is either
shown or counted in ``dropped``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livecommerce.features.comments.batching import Batcher, plan
from tests.conftest import AppServer, make_user
from tests.features.comments.conftest import live_room
from tests.features.comments.test_service import joined
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]


def _item(i: int, user: str, role: str = "viewer", text: str | None = None) -> dict[str, Any]:
    return {"id": f"c{i}", "user": {"id": user, "name": user, "role": role},
            "text": text or f"t{i}", "at": 1000 + i}  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_plan_shows_priority_samples_the_rest_and_accounts_for_everything(seed: int) -> None:
    rng = random.Random(seed)
    items = []
    for i in range(rng.randint(0, 60)):
        role = rng.choice(["viewer"] * 8 + ["host", "staff"])
        text = rng.choice(["666", "hi", None, None, None])
        items.append(_item(i, f"u{rng.randint(0, 15)}", role, text))
    budget = rng.randint(0, 6)
    tick = plan(7, items, budget, rng)
    priority = [i for i in items if i["user"]["role"] != "viewer"]
    assert all(p in tick.items for p in priority)
    shown_normal = [i for i in tick.items if i["user"]["role"] == "viewer"]
    assert len(shown_normal) <= max(0, budget - len(priority))
    assert [i["at"] for i in tick.items] == sorted(i["at"] for i in tick.items)
    represented = sum(i.get("count", 1) for i in tick.items)
    assert represented + tick.dropped == len(items)
    for user, own in tick.own.items():  # a sender's frame has every comment of theirs
        mine = {i["id"] for i in items if i["user"]["id"] == user and i["user"]["role"] == "viewer"}
        frame = tick.payload_for("r", own)
        ids = {i["id"] for i in frame["items"]}
        assert mine <= ids
        assert frame.get("dropped", 0) == tick.dropped - len(tick.dropped_ids & mine)


class Clock:
    """Simulated time for the batcher's budget (a loaded box cannot stretch it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_follows_the_viewer_rate_without_bursting_after_quiet() -> None:
    clock = Clock()
    batcher = Batcher(viewer_rate=30, tick_s=0.1, rng=random.Random(1), clock=clock)
    shown = 0
    for _ in range(10):
        batcher.add("r", 1, [_item(i, f"u{i}") for i in range(100)])
        tick = batcher.take("r")
        assert tick is not None and len(tick.items) <= 4
        shown += len(tick.items)
        clock.now += 0.1
    assert 25 <= shown <= 40  # ~30 per simulated second


def test_budget_a_late_tick_keeps_what_the_time_accrued_up_to_two_ticks() -> None:
    """A tick the busy loop ran late (0.2 s after the last) shows 6 at 30/s, not 3-4; a
    long quiet spell still gives at most two ticks' worth."""
    clock = Clock()
    batcher = Batcher(viewer_rate=30, tick_s=0.1, rng=random.Random(1), clock=clock)
    batcher.add("r", 1, [_item(i, f"u{i}") for i in range(100)])
    assert batcher.take("r") is not None
    clock.now += 0.2
    batcher.add("r", 2, [_item(i, f"u{i}") for i in range(100, 200)])
    assert (late := batcher.take("r")) is not None and len(late.items) == 6
    clock.now += 10.0
    batcher.add("r", 3, [_item(i, f"u{i}") for i in range(200, 300)])
    assert (quiet := batcher.take("r")) is not None and len(quiet.items) == 6


def test_budget_a_take_leaves_unused_goes_to_the_next_take_of_the_tick() -> None:
    batcher = Batcher(viewer_rate=30, tick_s=0.1, rng=random.Random(1), clock=Clock())
    batcher.add("r", 1, [_item(0, "u0")])
    first = batcher.take("r")
    assert first is not None and len(first.items) == 1  # a tick's budget is 3 or 4
    batcher.add("r", 2, [_item(i, f"u{i}") for i in range(1, 50)])
    second = batcher.take("r")  # at once: only what the first left over
    assert second is not None and 2 <= len(second.items) <= 3
    batcher.add("r", 3, [_item(i, f"u{i}") for i in range(50, 99)])
    third = batcher.take("r")
    assert third is not None and len(third.items) <= 1  # spent: no more than the rate


@pytest.mark.parametrize("seed", [1, 2])
async def test_flood_never_drops_own_host_or_staff_comments(
    seed: int, node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    rng = random.Random(seed)
    server = await node_factory(comments={"viewer_rate": 10, "rate_per_s": 200, "burst": 200})
    room = await live_room(server, api_factory(server.url))
    rid = room.room_id
    me = await joined(client_factory, room, (await room.api.guest("me"))[0])
    bystander = await joined(client_factory, room, None)
    host = await joined(client_factory, room, room.host)
    staff = await joined(client_factory, room, await make_user(server.node, f"st{seed}", "staff"))
    flood = [
        await joined(client_factory, room, (await room.api.guest(f"f{i}"))[0]) for i in range(25)
    ]

    async def talk(client: Client, tag: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            await asyncio.sleep(rng.random() * 0.08)
            ack = await client.ok(
                "comment:send", {"room_id": rid, "text": f"{tag}-{i}-{rng.random()}"}
            )
            ids.append(ack["id"])
        return ids

    started = time.monotonic()
    results = await asyncio.gather(
        talk(me, "mine", 6), talk(host, "host", 6), talk(staff, "staff", 4),
        *(talk(c, f"flood{n}", 12) for n, c in enumerate(flood)),
    )  # fmt: skip
    sent = sum(len(r) for r in results)
    mine, hosts, staffs = set(results[0]), set(results[1]), set(results[2])

    def tally(client: Client) -> tuple[set[str], int, int]:
        batches = client.received("comment:batch")
        ids = {i["id"] for b in batches for i in b["items"]}
        shown = sum(i.get("count", 1) for b in batches for i in b["items"])
        return ids, shown, sum(b.get("dropped", 0) for b in batches)

    async def settled(client: Client) -> None:
        for _ in range(200):
            _, shown, dropped = tally(client)
            if shown + dropped >= sent:
                return
            await asyncio.sleep(0.05)

    for client in (me, bystander):
        await settled(client)
    elapsed = time.monotonic() - started
    for client in (me, bystander):
        ids, shown, dropped = tally(client)
        assert hosts | staffs <= ids, "a host or staff comment was dropped"
        assert shown + dropped == sent  # everything shown or accounted for
        assert dropped > sent // 2  # the flood really was sampled
    my_ids, _, _ = tally(me)
    assert mine <= my_ids, "one of my own comments was dropped for me"
    normal_shown = 0
    for batch in bystander.received("comment:batch"):  # the cap: ~1 normal comment a tick,
        normal = [i for i in batch["items"] if i["user"]["role"] == "viewer"]
        assert len(normal) <= 2, batch  # two when a tick ran late
        normal_shown += len(normal)
    # and over the whole flood no more than viewer_rate (10/s) plus one tick's start
    assert normal_shown <= 10 * elapsed + 1, (normal_shown, elapsed)


async def test_broadcasts_between_comments_keep_seq_order_for_viewers(
    app_server: AppServer, api_factory: Callable[[str], Api], client_factory: Any
) -> None:
    """A pin published between two comments of one tick waits behind the first and must
    leave before the second: a client keeping seq order would otherwise drop the pin."""

    room = await live_room(app_server, api_factory(app_server.url))
    pid = (
        await room.api.ok(
            "POST",
            f"/api/rooms/{room.room_id}/products",
            room.host,
            {"title": "Pin", "price_cents": 100, "stock": 1},
        )
    )["id"]
    host = await client_factory(app_server.url, room.host)
    viewer = await client_factory(app_server.url)
    await viewer.ok("room:join", {"room_id": room.room_id})
    for i in range(20):
        await host.ok("comment:send", {"room_id": room.room_id, "text": f"before {i}"})
        await host.ok("product:pin", {"room_id": room.room_id, "product_id": pid})
        await host.ok("comment:send", {"room_id": room.room_id, "text": f"after {i}"})
    await viewer.wait_for(
        "comment:batch", lambda d: any(c["text"] == "after 19" for c in d["items"]), timeout=5
    )
    seqs = [d["seq"] for e, d in viewer.events if isinstance(d, dict) and "seq" in d]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    assert len(viewer.received("product:pinned")) == 20
    texts = [c["text"] for d in viewer.received("comment:batch") for c in d["items"]]
    assert texts == [t for i in range(20) for t in (f"before {i}", f"after {i}")]


def test_budget_a_rate_under_one_per_tick_still_shows_comments_at_that_rate() -> None:
    clock = Clock()
    batcher = Batcher(viewer_rate=2, tick_s=0.1, rng=random.Random(1), clock=clock)
    shown = 0
    for tick in range(50):  # five simulated seconds of a flood
        batcher.add("r", tick, [_item(tick * 10 + i, f"u{i}") for i in range(10)])
        taken = batcher.take("r")
        assert taken is not None and len(taken.items) <= 1
        shown += len(taken.items)
        clock.now += 0.1
    assert 9 <= shown <= 11  # 2 per simulated second
