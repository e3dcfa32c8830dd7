"""Failure drills on a whole cluster (redis-server, real nodes, nginx; loopback only).

* Redis restarted under load: nodes reconnect and resubscribe their rooms; viewers who
  stayed connected get every broadcast, viewers who dropped meanwhile recover the rest by
  since_seq; no acknowledged comment is lost; new broadcasts flow.
* A node killed (-9) under load behind nginx: its clients reconnect through nginx to the
  other nodes and recover by since_seq; buys during the drill never oversell and every
  acknowledged order reaches SQL once.
* The database locked for longer than the nodes' busy timeout: comments and buys keep
  answering quickly (neither waits for SQL); afterwards the writers catch up exactly.

Seeing "everything" is checked against the room's own replayable history (a fresh client
joining with since_seq 0), applying broadcasts by the client rule of docs/protocol.md.
What these add to tests/test_multinode.py and tests/features/*/test_cluster.py: load
while it happens, nginx in the path, and completeness for every client, not one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.conftest import ack_error
from tests.production.conftest import StartCluster
from tests.production.helpers import (
    HostLoad,
    Viewer,
    assert_saw_everything,
    comment_ids,
    eventually,
    live_room,
    room_history,
)
from tests.support.client import Api, Client
from tests.support.nginx import NodeProcess, node_connections
from tests.support.redis_server import RedisServer
from tests.support.servers import add_user, mint_token

ApiFactory = Callable[[str], Api]


async def _ready(nodes: list[NodeProcess], timeout: float = 15) -> None:
    async with aiohttp.ClientSession() as session:

        async def all_ready() -> bool:
            for node in nodes:
                async with session.get(node.url + "/readyz") as res:
                    if res.status != 200:
                        return False
            return True

        await eventually(all_ready, timeout=timeout, every=0.1)


async def _new_broadcasts_flow(
    host: Client, room_id: str, product_id: str, viewers: list[Viewer]
) -> None:
    """One more pin after the drill reaches every viewer."""
    for viewer in viewers:
        viewer.settle()
    highs = {viewer.name: viewer.high for viewer in viewers}
    await host.ok("product:pin", {"room_id": room_id, "product_id": product_id})
    for viewer in viewers:
        high = highs[viewer.name]

        def newer(data: dict[str, Any], high: int = high) -> bool:
            return bool(data["seq"] > high)

        await viewer.client.wait_for("product:pinned", newer, timeout=10)


def _sql(db_url: str, query: str, *args: Any) -> list[Any]:
    with contextlib.closing(sqlite3.connect(db_url.split("///", 1)[1], timeout=30)) as conn:
        return conn.execute(query, args).fetchall()


async def test_redis_restart_under_load(
    start_cluster: StartCluster, durable_redis: RedisServer, db_url: str, api_factory: ApiFactory
) -> None:
    cluster = await start_cluster(durable_redis.url)
    nodes = cluster.nodes
    host = await add_user(db_url, "anchor", "host")
    rid, pids = await live_room(api_factory(nodes[0].url), host, nodes=[n.url for n in nodes])
    viewers = [Viewer(f"v{i}", mint_token(f"u_redis_{i}", f"viewer {i}"), rid) for i in range(6)]
    host_client = Client(nodes[0].url, host)
    load = HostLoad(host_client, rid, pids)
    try:
        for i, viewer in enumerate(viewers):  # two viewers on each node
            await viewer.join(nodes[i % 3].url)
        await host_client.connect()
        await host_client.ok("room:join", {"room_id": rid})
        load.start()
        await asyncio.sleep(1.0)

        # Redis goes away under load; one viewer per node drops meanwhile.
        await asyncio.to_thread(durable_redis.stop)
        droppers = viewers[:3]
        for viewer in droppers:
            await viewer.client.close()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(durable_redis.start)  # same port, same append-only file
        await _ready(nodes)
        for i, viewer in enumerate(droppers):  # back on another node, asking for the gap
            await viewer.join(nodes[(i + 1) % 3].url, timeout=15)
        await asyncio.sleep(1.0)  # load goes on after the restart
        await load.stop()

        # Every call got an answer: ok, or `unavailable` while Redis was away.
        assert set(load.outcomes) == {"ok", "unavailable"}, load.outcomes
        for viewer in droppers:
            assert viewer.recovered == [True]
        await _new_broadcasts_flow(host_client, rid, pids[0], viewers)

        top, history = await room_history(nodes[1].url, rid)
        # Acknowledged comments survived the restart (append-only file) ...
        assert set(load.comment_ids) <= set(comment_ids(history))
        # ... and each viewer, dropped or not, saw every durable broadcast once, in order:
        # the stayed-on ones through their node's resubscription and back-fill.
        for viewer in viewers:
            assert_saw_everything(viewer, top, history)
    finally:
        await load.stop()
        await asyncio.gather(*(v.close() for v in viewers), host_client.close())


async def test_node_killed_under_load_behind_nginx(
    start_cluster: StartCluster, redis_url: str, db_url: str, api_factory: ApiFactory
) -> None:
    cluster = await start_cluster(redis_url)
    first = cluster.nodes[0]
    host, staff = await add_user(db_url, "anchor", "host"), await add_user(db_url, "ops", "staff")
    api = api_factory(cluster.url)
    rid, pids = await live_room(api, host, nodes=[n.url for n in cluster.nodes])
    host_client = Client(first.url, host)  # the host is on a node that survives
    shoppers = [Viewer(f"s{i}", mint_token(f"u_kill_{i}", f"shopper {i}"), rid) for i in range(18)]
    load = HostLoad(host_client, rid, pids)
    quantity = 12
    acks: dict[str, dict[str, Any]] = {}

    async def buy(shopper: Viewer) -> None:
        try:
            ack = await shopper.client.call(
                "flashsale:buy", {"sale_id": sale["id"], "request_id": "buy-1"}, timeout=3
            )
        except Exception:  # its node died under the call: no answer, no promise
            return
        acks[shopper.name] = ack

    try:
        await host_client.connect()
        await host_client.ok("room:join", {"room_id": rid})
        terms = {"room_id": rid, "product_id": pids[0], "price_cents": 500}
        terms |= {"quantity": quantity, "per_user_limit": 1, "duration_s": 600}
        sale = (await host_client.ok("flashsale:create", terms))["sale"]
        for shopper in shoppers:  # one after the other: nginx spreads them evenly
            await shopper.join(cluster.url)
        counts = await node_connections(api, staff, expect_total=len(shoppers) + 1)
        victim = max(cluster.nodes[1:], key=lambda n: counts[n.node_id])
        on_victim = counts[victim.node_id]
        assert on_victim >= 5, counts
        load.start()
        await asyncio.sleep(0.5)

        await asyncio.gather(*(buy(s) for s in shoppers[:6]))

        async def kill() -> None:
            await asyncio.sleep(0.01)
            await asyncio.to_thread(victim.kill)

        # kill -9 lands in the middle of the second wave of buys
        await asyncio.gather(kill(), *(buy(s) for s in shoppers[6:12]))
        await eventually(lambda: sum(not s.connected for s in shoppers) == on_victim, timeout=5)
        dropped = [s for s in shoppers if not s.connected]
        started = time.monotonic()
        for shopper in dropped:  # the same address: nginx skips the dead node
            await shopper.join(cluster.url)
        reconnect_s = time.monotonic() - started
        # Unanswered buys are retried with the same request_id; then the third wave.
        await asyncio.gather(*(buy(s) for s in shoppers if s.name not in acks))
        await asyncio.sleep(0.5)
        await load.stop()

        assert reconnect_s < 10
        assert all(s.recovered == [True] for s in dropped)
        assert set(load.outcomes) == {"ok"}, load.outcomes  # the host's node never blinked
        survivors = await node_connections(api, staff, expect_total=len(shoppers) + 1)
        assert victim.node_id not in survivors, survivors

        # Every shopper has an answer; demand was 18 for 12 units: sold out exactly.
        assert len(acks) == len(shoppers)
        orders = {a["order"]["id"]: a["order"] for a in acks.values() if a.get("ok")}
        assert {ack_error(a) for a in acks.values() if not a.get("ok")} == {"sold_out"}
        assert sum(o["qty"] for o in orders.values()) == quantity
        assert len({o["user_id"] for o in orders.values()}) == len(orders)  # limit 1 each

        # Every acknowledged order reaches SQL once (the dead node's unwritten log entries
        # are claimed by the others).
        query = "SELECT id, qty, status FROM orders WHERE ref_id = ?"

        async def written() -> bool:
            return {r[0] for r in _sql(db_url, query, sale["id"])} == set(orders)

        await eventually(written, timeout=20, every=0.3)
        rows = _sql(db_url, query, sale["id"])
        assert sum(r[1] for r in rows if r[2] in ("reserved", "paid")) <= quantity

        # And every shopper, moved or not, saw every durable broadcast once, in order.
        await _new_broadcasts_flow(host_client, rid, pids[1], shoppers)
        top, history = await room_history(cluster.url, rid)
        for shopper in shoppers:
            assert_saw_everything(shopper, top, history)
    finally:
        await load.stop()
        await asyncio.gather(*(s.close() for s in shoppers), host_client.close())


#: Holds SQLite's write lock (BEGIN EXCLUSIVE; in WAL mode readers go on) for argv[2] s.
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""
#: Longer than the nodes' sqlite busy timeout (5 s): writers see "database is locked".
LOCK_S = 6.5
ACK_BOUND_S = 1.0


async def _timed(call: Awaitable[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    ack = await call
    return time.monotonic() - started, ack


async def test_database_locked_hot_paths_answer_and_writers_catch_up(
    start_cluster: StartCluster, redis_url: str, db_url: str, api_factory: ApiFactory
) -> None:
    cluster = await start_cluster(redis_url, nodes=2)
    nodes = cluster.nodes
    host = await add_user(db_url, "anchor", "host")
    rid, pids = await live_room(api_factory(nodes[0].url), host, nodes=[n.url for n in nodes])
    host_client = Client(nodes[0].url, host)
    shoppers = [Client(nodes[i % 2].url, mint_token(f"u_lock_{i}", f"s{i}")) for i in range(16)]
    locker: subprocess.Popen[bytes] | None = None
    try:
        await host_client.connect()
        terms = {"room_id": rid, "product_id": pids[0], "price_cents": 500}
        terms |= {"quantity": 10_000, "per_user_limit": 100, "duration_s": 600}
        sale = (await host_client.ok("flashsale:create", terms))["sale"]
        for shopper in shoppers:
            await shopper.connect()
            await shopper.ok("room:join", {"room_id": rid})

        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, db_url.split("///", 1)[1], str(LOCK_S)],
            stdout=subprocess.PIPE,
        )
        assert locker.stdout is not None
        assert (await asyncio.to_thread(locker.stdout.readline)) == b"locked\n"
        locked_at = time.monotonic()
        slowest = 0.0
        comments: list[str] = []
        orders: dict[str, dict[str, Any]] = {}
        round_no = 0
        while time.monotonic() - locked_at < LOCK_S - 1.5:  # all rounds inside the lock
            round_no += 1
            calls = [
                _timed(s.call("comment:send", {"room_id": rid, "text": f"s{i} round {round_no}"}))
                for i, s in enumerate(shoppers)
            ] + [
                _timed(
                    s.call("flashsale:buy", {"sale_id": sale["id"], "request_id": f"r{round_no}"})
                )
                for s in shoppers
            ]
            for took, ack in await asyncio.gather(*calls):
                assert ack.get("ok") is True, ack
                slowest = max(slowest, took)
                if "order" in ack:
                    orders[ack["order"]["id"]] = ack["order"]
                else:
                    comments.append(ack["id"])
            await asyncio.sleep(0.2)
        assert locker.poll() is None, "the lock ended before the rounds did"
        assert round_no >= 5
        # Neither path waited for SQL: answers came well within the busy timeout.
        assert slowest < ACK_BOUND_S, f"slowest ack {slowest:.2f}s while the database was locked"
        assert await asyncio.to_thread(locker.wait, 15) == 0

        # The writers catch up: every acknowledged order once, every comment.
        async def caught_up() -> bool:
            got_orders = _sql(db_url, "SELECT id FROM orders WHERE ref_id = ?", sale["id"])
            got_comments = _sql(db_url, "SELECT id FROM comments WHERE room_id = ?", rid)
            return {r[0] for r in got_orders} == set(orders) and set(comments) <= {
                r[0] for r in got_comments
            }

        await eventually(caught_up, timeout=30, every=0.3)
        rows = _sql(db_url, "SELECT id, qty FROM orders WHERE ref_id = ?", sale["id"])
        assert len(rows) == len(orders) and sum(r[1] for r in rows) == len(orders)
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
            locker.wait()
        await asyncio.gather(*(c.close() for c in (*shoppers, host_client)))
