"""Fan-out, history and presence: base.py's contract, on both backends."""

from __future__ import annotations

import asyncio

from livecommerce.engine import Engine
from tests.engine.conftest import MakeNode
from tests.engine.helpers import Node, eventually, eventually_equal

# ---------------------------------------------------------------------- seq and history


async def test_seq_strictly_increasing_per_room(engine: Engine) -> None:
    first = [await engine.publish("r1", "comment", {"n": i}) for i in range(5)]
    other = [await engine.publish("r2", "comment", {"n": i}) for i in range(3)]
    assert first == [1, 2, 3, 4, 5]
    assert other == [1, 2, 3]
    assert await engine.last_seq("r1") == 5
    assert await engine.last_seq("never-used") == 0


async def test_replay_returns_durable_broadcasts_with_room_id_and_seq(engine: Engine) -> None:
    payload = {"text": "hi", "nested": {"a": [1, 2]}}
    await engine.publish("r", "comment", payload)
    await engine.publish("r", "comment", {"text": "second"})
    assert payload == {"text": "hi", "nested": {"a": [1, 2]}}  # caller's dict untouched
    replayed = await engine.replay("r", 0)
    assert replayed is not None
    assert [(b.seq, b.event) for b in replayed] == [(1, "comment"), (2, "comment")]
    assert replayed[0].payload == {"text": "hi", "nested": {"a": [1, 2]}, "room_id": "r", "seq": 1}
    assert replayed[0].room_id == "r"
    tail = await engine.replay("r", 1)
    assert tail is not None and [b.seq for b in tail] == [2]


async def test_ephemeral_consumes_seq_but_is_not_replayed(engine: Engine) -> None:
    assert await engine.publish("r", "comment", {"n": 1}) == 1
    assert await engine.publish("r", "like:total", {"likes": 9}, history=False) == 2
    assert await engine.publish("r", "comment", {"n": 2}) == 3
    replayed = await engine.replay("r", 0)
    assert replayed is not None and [b.seq for b in replayed] == [1, 3]
    assert await engine.last_seq("r") == 3


async def test_replay_after_trimming_returns_none(make_node: MakeNode) -> None:
    engine = (await make_node(history_size=5)).engine
    for i in range(8):
        await engine.publish("r", "comment", {"n": i})
    # seqs 1..3 were trimmed; 4..8 remain
    assert await engine.replay("r", 0) is None
    assert await engine.replay("r", 2) is None  # would need seq 3
    kept = await engine.replay("r", 3)
    assert kept is not None and [b.seq for b in kept] == [4, 5, 6, 7, 8]


async def test_trimming_counts_only_durable_broadcasts(make_node: MakeNode) -> None:
    engine = (await make_node(history_size=2)).engine
    await engine.publish("r", "comment", {})  # 1
    await engine.publish("r", "online:count", {"online": 1}, history=False)  # 2
    await engine.publish("r", "comment", {})  # 3
    replayed = await engine.replay("r", 0)
    assert replayed is not None and [b.seq for b in replayed] == [1, 3]
    await engine.publish("r", "comment", {})  # 4, trims 1
    assert await engine.replay("r", 0) is None
    assert [b.seq for b in await engine.replay("r", 1) or []] == [3, 4]


async def test_replay_since_last_is_empty_and_future_is_none(engine: Engine) -> None:
    assert await engine.replay("r", 0) == []
    await engine.publish("r", "comment", {})
    await engine.publish("r", "comment", {})
    assert await engine.replay("r", 2) == []
    assert await engine.replay("r", 3) is None


# ---------------------------------------------------------------------- delivery


async def test_delivery_only_to_nodes_with_local_members(make_node: MakeNode) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    await b.engine.room_local_join("r")
    await b.engine.room_local_join("r")  # two local members: still one delivery per node
    seq = await a.engine.publish("r", "comment", {"text": "x"})
    await eventually(lambda: len(b.broadcasts) == 1)
    await asyncio.sleep(0.1)  # give stray deliveries time to show up
    assert [m.seq for m in b.broadcasts] == [seq]
    assert b.broadcasts[0].payload == {"text": "x", "room_id": "r", "seq": seq}
    assert a.broadcasts == [] and c.broadcasts == []


async def test_publish_right_after_join_is_received(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    rooms = [f"r{i}" for i in range(20)]
    for room in rooms:
        await b.engine.room_local_join(room)
        await a.engine.publish(room, "comment", {})
    await eventually(lambda: sorted({m.room_id for m in b.broadcasts}) == sorted(rooms))


async def test_last_leave_stops_delivery(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await b.engine.room_local_join("r")
    await b.engine.room_local_join("r")
    await b.engine.room_local_leave("r")
    await a.engine.publish("r", "comment", {})
    await eventually(lambda: len(b.broadcasts) == 1)
    await b.engine.room_local_leave("r")
    await a.engine.publish("r", "comment", {})
    await asyncio.sleep(0.1)
    assert b.seqs("r") == [1]


async def test_concurrent_publishes_arrive_in_seq_order(make_node: MakeNode) -> None:
    publishers = [await make_node(f"p{i}") for i in range(3)]
    viewer = await make_node("viewer")
    viewer.jitter_s = 0.002  # a sink that awaits must still see seq order
    await viewer.engine.room_local_join("r")
    await viewer.engine.room_local_join("other")
    await asyncio.gather(
        *(
            p.engine.publish(room, "comment", {"i": i})
            for p in publishers
            for i in range(50)
            for room in ("r", "other")
        )
    )
    await eventually(lambda: len(viewer.broadcasts) == 300)
    assert viewer.seqs("r") == list(range(1, 151))
    assert viewer.seqs("other") == list(range(1, 151))


async def test_send_to_user_reaches_only_nodes_with_that_user(make_node: MakeNode) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    await b.engine.user_local_join("u1")
    await c.engine.user_local_join("u2")
    await a.engine.send_to_user("u1", "order:paid", {"order": 7, "room_id": "r"})
    await eventually(lambda: len(b.private) == 1)
    await asyncio.sleep(0.1)
    assert b.private == [("u1", "order:paid", {"order": 7, "room_id": "r"})]
    assert a.private == [] and c.private == []
    await b.engine.user_local_leave("u1")
    await a.engine.send_to_user("u1", "order:paid", {"order": 8})
    await asyncio.sleep(0.1)
    assert len(b.private) == 1


async def test_publish_if_changed_broadcasts_a_value_once(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await b.engine.room_local_join("r")
    results = await asyncio.gather(
        *(n.engine.publish_if_changed("r", "online:count", "online", 5) for n in (a, b) * 5)
    )
    assert len([seq for seq in results if seq is not None]) == 1
    assert await a.engine.publish_if_changed("r", "online:count", "online", 5) is None
    assert await a.engine.publish_if_changed("r", "online:count", "online", 6) == 2
    assert await a.engine.replay("r", 0) == []  # ephemeral
    await eventually(lambda: len(b.broadcasts) == 2)
    assert [m.payload["online"] for m in b.broadcasts] == [5, 6]
    assert b.broadcasts[1].payload == {"online": 6, "room_id": "r", "seq": 2}


# ---------------------------------------------------------------------- presence


async def test_presence_sums_nodes_and_forgets_a_dead_one(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.engine.room_local_join("r")
    await a.engine.room_local_join("r")
    await b.engine.room_local_join("r")
    assert a.engine.local_online("r") == 2
    await eventually_equal(lambda: a.engine.online("r"), 3)
    await eventually_equal(lambda: b.engine.online("r"), 3)
    for task in b.engine._tasks:  # b "dies": it stops reporting, nobody clears its count
        task.cancel()
    await eventually_equal(lambda: a.engine.online("r"), 2, timeout=2.0)


async def test_leaving_updates_presence(make_node: MakeNode) -> None:
    a, b = await make_node("a"), await make_node("b")
    await a.engine.room_local_join("r")
    await b.engine.room_local_join("r")
    await eventually_equal(lambda: a.engine.online("r"), 2)
    await b.engine.room_local_leave("r")
    await eventually_equal(lambda: a.engine.online("r"), 1)
    await a.engine.close()  # a clean close reports zero at once
    assert await b.engine.online("r") == 0


async def test_online_count_is_broadcast_when_it_changes(make_node: MakeNode) -> None:
    a = await make_node("a", online_interval_s=0.05)
    b = await make_node("b", online_interval_s=0.05)
    await a.engine.room_local_join("r")
    await b.engine.room_local_join("r")

    def last_count(node: Node) -> int | None:
        counts = [m.payload["online"] for m in node.broadcasts if m.event == "online:count"]
        return counts[-1] if counts else None

    await eventually(lambda: last_count(a) == 2 and last_count(b) == 2)
    seen = len(a.broadcasts)
    await asyncio.sleep(0.3)  # a steady count is not re-broadcast
    assert len(a.broadcasts) == seen
    assert a.seqs("r") == sorted(set(a.seqs("r"))) and set(b.seqs("r")) <= set(a.seqs("r"))
