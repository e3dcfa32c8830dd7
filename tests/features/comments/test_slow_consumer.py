"""A viewer that stops reading is cut off, and nobody else waits for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import AppServer
from tests.features.comments.conftest import live_room
from tests.features.comments.test_service import items_of, joined
from tests.support.client import Api, Client
from tests.support.rawws import StalledClient

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]


def metric(server: AppServer, name: str, **labels: str) -> float:
    return server.node.metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest.mark.parametrize(
    ("lean", "thread_min"),
    [(True, 0), (True, 1), (False, 0)],
    ids=["lean-websocket", "lean-websocket-send-thread", "python-socketio"],
)
async def test_a_stalled_reader_is_cut_off_without_delaying_the_room(
    lean: bool,
    thread_min: int,
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
) -> None:
    """On both WebSocket paths (transport/wire.py, and python-socketio's), and with the
    room's ticks sent by the send thread (transport/offload.py)."""
    server = await node_factory(
        transport={
            # the stalled reader passes it after ~75 KB of the ~150 KB below; the
            # watcher and the host, read by this very process beside the node, get
            # headroom for a loaded box (32 KB once cut the host too, on CI)
            "out_buffer_max": 65_536,
            "ws_sndbuf": 8192,
            "lean_websocket": lean,
            "fanout_thread_min": thread_min,
        }
    )
    room = await live_room(server, api_factory(server.url))
    watcher = await joined(client_factory, room, None)
    host = await joined(client_factory, room, room.host)
    stalled = StalledClient(server.url)
    await stalled.connect_and_join(room.room_id)
    sent: list[str] = []
    cut_at = None
    started = time.monotonic()
    for start in range(0, 800, 50):  # ~150 KB of host comments, never dropped: all go out
        acks = await asyncio.gather(*(
            host.ok("comment:send", {"room_id": room.room_id, "text": f"{i:04d} " + "x" * 90})
            for i in range(start, start + 50)
        ))  # fmt: skip
        sent += [ack["id"] for ack in acks]
        if cut_at is None and metric(server, "livecommerce_slow_consumers_cut_total") >= 1:
            cut_at = start
    last_sent = time.monotonic()
    for _ in range(100):
        if {i["id"] for i in items_of(watcher)} >= set(sent):
            break
        await asyncio.sleep(0.05)
    caught_up = time.monotonic()
    assert {i["id"] for i in items_of(watcher)} >= set(sent), "the watcher missed comments"
    assert caught_up - last_sent < 2.0, "the watcher was held up"
    assert cut_at is not None, "the stalled reader was never cut off"
    for _ in range(100):
        if metric(server, "livecommerce_connections") == 2:
            break
        await asyncio.sleep(0.05)
    assert metric(server, "livecommerce_connections") == 2  # the watcher and the host
    stalled.close()
    assert caught_up - started < 30
    if thread_min:
        assert metric(server, "livecommerce_frames_total", path="thread") > 0
