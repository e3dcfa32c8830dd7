"""Redis Cluster only: sharded pub/sub per master, dropped shard connections, a room's slot
moving to another master under a subscriber, a master going away and coming back, and the
cluster refusing cross-slot steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.exceptions import RedisClusterException

from livecommerce.engine import keys
from livecommerce.engine.redis_cluster import RedisClusterEngine
from livecommerce.errors import Unavailable
from livecommerce.features.flashsale.service import sale_keys
from tests.engine.conftest import FAST, MakeNode
from tests.engine.helpers import Node, eventually, eventually_equal
from tests.support.redis_cluster import RedisCluster

ON_CLUSTER = pytest.mark.parametrize("make_node", ["redis-cluster"], indirect=True)


def rooms_per_master(cluster: RedisCluster, per_master: int = 1) -> dict[int, list[str]]:
    """Master port -> room ids whose channel (so whose every key) that master serves."""
    found: dict[int, list[str]] = {port: [] for port in cluster.ports}
    n = 0
    while any(len(rooms) < per_master for rooms in found.values()):
        room = f"room{n}"
        rooms = found[cluster.owner(keys.room_channel(room))]
        if len(rooms) < per_master:
            rooms.append(room)
        n += 1
    return found


def shard_subscribers(cluster: RedisCluster, port: int, channel: str) -> int:
    with cluster.client(port) as client:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


def lanes(node: Node) -> dict[str, set[str]]:
    assert isinstance(node.engine, RedisClusterEngine)
    return {name: channels for name, channels in node.engine._bus.lanes().items() if channels}


def move_slot(cluster: RedisCluster, key: str, to_port: int) -> None:
    """Reshard the slot of ``key`` to the master on ``to_port``, keys and all."""
    slot = redis.RedisCluster.keyslot(cluster.cluster_client(), key)
    source, target = cluster.client(cluster.owner(key)), cluster.client(to_port)
    source_id, target_id = (
        source.execute_command("CLUSTER MYID"),
        target.execute_command("CLUSTER MYID"),
    )
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    while found := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *found)
    for port in cluster.ports:
        with cluster.client(port) as client:
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    source.close()
    target.close()


@ON_CLUSTER
async def test_each_room_is_carried_by_its_own_master(
    make_node: MakeNode, engine_redis_cluster: RedisCluster
) -> None:
    cluster = engine_redis_cluster
    by_master = rooms_per_master(cluster, per_master=2)
    rooms = [room for found in by_master.values() for room in found]
    a, b = await make_node("a"), await make_node("b")
    for room in rooms:
        await b.engine.room_local_join(room)
    for n in range(5):
        for room in rooms:
            await a.engine.publish(room, "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) == 5 * len(rooms))
    for room in rooms:
        assert b.seqs(room) == [1, 2, 3, 4, 5]
    # One lane (connection) per master, carrying exactly that master's rooms, subscribed
    # with SSUBSCRIBE on that master: nothing on the classic (cluster-wide) pub/sub.
    carried = lanes(b)
    assert len(carried) == 3
    for port, found in by_master.items():
        channels = {keys.room_channel(room) for room in found}
        assert carried[f"127.0.0.1:{port}"] == channels
        for channel in channels:
            assert shard_subscribers(cluster, port, channel) == 1
            with cluster.client(port) as client:
                assert client.pubsub_numsub(channel) == [(channel, 0)]


@ON_CLUSTER
async def test_users_on_every_master_get_their_messages(
    make_node: MakeNode, engine_redis_cluster: RedisCluster
) -> None:
    users: dict[int, str] = {}
    n = 0
    while len(users) < 3:
        users.setdefault(engine_redis_cluster.owner(keys.user_channel(f"u{n}")), f"u{n}")
        n += 1
    a, b = await make_node("a"), await make_node("b")
    for user in users.values():
        await b.engine.user_local_join(user)
        await a.engine.send_to_user(user, "order:update", {"to": user})
    await eventually(lambda: len(b.private) == 3)
    assert sorted(user for user, _, payload in b.private if payload["to"] == user) == sorted(
        users.values()
    )


@ON_CLUSTER
async def test_dropped_shard_connections_are_backfilled_in_order(
    make_node: MakeNode, engine_redis_cluster: RedisCluster
) -> None:
    cluster = engine_redis_cluster
    rooms = [found[0] for found in rooms_per_master(cluster).values()]
    a, b = await make_node("a"), await make_node("b")
    for room in rooms:
        await b.engine.room_local_join(room)
        await a.engine.publish(room, "comment", {"n": 0})
    await eventually(lambda: len(b.broadcasts) == 3)
    for port in cluster.ports:  # every lane loses its connection
        with cluster.client(port) as admin:
            assert admin.client_kill_filter(_type="pubsub") >= 1
    for n in range(1, 21):  # lanes wait >= 0.1 s before reconnecting: these land in the gap
        for room in rooms:
            await a.engine.publish(room, "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) >= 3 * 21)
    for n in range(21, 31):
        for room in rooms:
            await a.engine.publish(room, "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) >= 3 * 31)
    await asyncio.sleep(0.1)
    for room in rooms:
        assert b.seqs(room) == list(range(1, 32))
        assert [m.payload["n"] for m in b.broadcasts if m.room_id == room] == list(range(31))


@ON_CLUSTER
async def test_subscription_follows_a_slot_moved_to_another_master(
    make_node: MakeNode, engine_redis_cluster: RedisCluster
) -> None:
    cluster = engine_redis_cluster
    room = rooms_per_master(cluster)[cluster.ports[0]][0]
    channel = keys.room_channel(room)
    a, b = await make_node("a"), await make_node("b")
    await b.engine.room_local_join(room)
    for n in range(10):
        await a.engine.publish(room, "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) == 10)
    try:
        # The old master drops b's SSUBSCRIBE (sunsubscribe) when the slot leaves it; b
        # finds the new master, subscribes there and back-fills what it missed; a's
        # publish scripts follow the MOVED replies to the new master.
        move_slot(cluster, channel, cluster.ports[1])
        for n in range(10, 30):
            await a.engine.publish(room, "comment", {"n": n})
        await eventually(lambda: len(b.broadcasts) >= 30, timeout=5)
        await asyncio.sleep(0.1)
        assert b.seqs(room) == list(range(1, 31))
        assert lanes(b) == {f"127.0.0.1:{cluster.ports[1]}": {channel}}
        assert shard_subscribers(cluster, cluster.ports[1], channel) == 1
    finally:
        move_slot(cluster, channel, cluster.ports[0])  # the session cluster as it was
    for n in range(30, 35):  # and back again
        await a.engine.publish(room, "comment", {"n": n})
    await eventually(lambda: len(b.broadcasts) >= 35, timeout=5)
    await asyncio.sleep(0.1)
    assert b.seqs(room) == list(range(1, 36))


@ON_CLUSTER
async def test_a_step_spanning_two_slots_is_refused(
    make_node: MakeNode, engine_redis_cluster: RedisCluster
) -> None:
    """Why the suite on a cluster proves the key layout: a script given keys of two slots
    never runs (here two rooms on different masters)."""
    by_master = rooms_per_master(engine_redis_cluster)
    room_a, room_b = (
        by_master[engine_redis_cluster.ports[0]][0],
        by_master[engine_redis_cluster.ports[1]][0],
    )
    engine = (await make_node("a")).engine
    mixed = [*sale_keys(room_a, "s")[:3], sale_keys(room_b, "s")[3]]
    with pytest.raises(RedisClusterException, match="same key slot"):
        await engine.atomic("sale_orders", mixed, [])
    assert await engine.atomic("sale_orders", sale_keys(room_a, "s"), []) == []


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster of this test's own: one of its masters gets stopped and restarted."""
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
async def own_nodes(own_cluster: RedisCluster) -> AsyncIterator[list[Node]]:
    nodes = [Node(RedisClusterEngine(own_cluster.url, name, **FAST)) for name in ("a", "b")]
    for node in nodes:
        node.engine.set_sinks(node.on_room, node.on_user)
        await node.engine.start()
    yield nodes
    for node in nodes:
        await node.engine.close()


async def test_a_master_going_away_raises_unavailable_and_recovers(
    own_cluster: RedisCluster, own_nodes: list[Node]
) -> None:
    a, b = own_nodes
    room = rooms_per_master(own_cluster)[own_cluster.ports[0]][0]
    await b.engine.room_local_join(room)
    await a.engine.publish(room, "comment", {"n": "before"})
    await eventually(lambda: len(b.broadcasts) == 1)

    own_cluster.servers[0].stop()  # the master serving the room
    assert await a.engine.ping() is False
    with pytest.raises(Unavailable):
        await a.engine.publish(room, "comment", {"n": "lost"})
    with pytest.raises(Unavailable):
        await a.engine.incr(keys.room_key(room, "n"))

    own_cluster.servers[0].start()  # same port and node id, data lost
    own_cluster.wait_ok()
    await eventually_equal(a.engine.ping, True, timeout=10)

    async def publish_until_received() -> bool:
        await a.engine.publish(room, "comment", {"n": "after"})
        await asyncio.sleep(0.05)
        return any(m.payload["n"] == "after" for m in b.broadcasts)

    # b's lane to that master reconnects with backoff and subscribes the room again
    await eventually_equal(publish_until_received, True, timeout=8)
    after = [m.seq for m in b.broadcasts if m.payload["n"] == "after"]
    assert after == sorted(after) and len(after) == len(set(after))
