"""The node's metrics wiring: engine hooks, and the gauges read when Prometheus scrapes.

Nothing here runs on a hot path: the engine calls two hooks per timer run or log batch,
and the gauges are computed from the node's own structures once per scrape (a pass over
this node's connections costs ~1 ms per 10k).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from livecommerce.engine import Engine
from livecommerce.observability import Metrics

if TYPE_CHECKING:
    from livecommerce.app import Node
    from livecommerce.transport.socket import SocketGateway


def watch_node(node: Node, gateway: SocketGateway) -> None:
    m, engine = node.metrics, node.engine
    m.node_info.info({"engine": engine.kind})
    engine.timer_observer = m.timer_ran
    engine.log_observer = m.log_written
    node.comments.batch_hooks.append(_published(m))
    m.watch(
        "livecommerce_connections",
        "Open Socket.IO connections on this node",
        lambda: len(gateway.conns),
    )
    m.watch(
        "livecommerce_connections_by_transport",
        "Open Socket.IO connections on this node by transport (websocket, polling)",
        lambda: _transports(gateway),
        label="transport",
    )
    m.watch(
        "livecommerce_room_members_local",
        "Room memberships of this node's connections, summed over its rooms",
        lambda: sum(engine.local_rooms().values()),
    )
    m.watch(
        "livecommerce_queue_depth",
        "Work waiting on this node: engine_inbox (room broadcasts received from Redis, not "
        "yet delivered), comments_publish (accepted, not yet published), comments_tick "
        "(received, waiting for the room's tick), like_taps (held only here: not yet in "
        "the engine or SQL), outbound_frames (Engine.IO packets queued for connections)",
        lambda: _queues(node, gateway),
        label="queue",
    )


def _published(metrics: Metrics) -> Callable[[str, int], Awaitable[None]]:
    async def published(_room_id: str, count: int) -> None:
        metrics.comment_publish_items.observe(count)

    return published


def _transports(gateway: SocketGateway) -> dict[str, float]:
    counts = {"websocket": 0.0, "polling": 0.0}
    for conn in gateway.conns.values():
        # Engine.IO marks a socket upgraded once it talks WebSocket (from the start, for
        # clients that skip polling); the lean path (transport/wire.py) is WebSocket only.
        upgraded = conn.wire is not None or getattr(conn.eio, "upgraded", False)
        counts["websocket" if upgraded else "polling"] += 1
    return counts


def _queues(node: Node, gateway: SocketGateway) -> dict[str, float]:
    outbound = sum(c.eio.queue.qsize() for c in gateway.conns.values() if c.eio is not None)
    queues = {
        "comments_publish": float(node.comments.queued()),
        "comments_tick": float(gateway.batcher.queued()),
        "like_taps": float(node.likes.queued()),
        "outbound_frames": float(outbound),
    }
    inbox = _engine_inbox(node.engine)
    if inbox is not None:
        queues["engine_inbox"] = float(inbox)
    return queues


def _engine_inbox(engine: Engine) -> int | None:
    # The Redis engine hands pub/sub messages to delivery through a bounded asyncio.Queue
    # (its listener stalls when it is full); the in-process engine has no such queue.
    inbox = getattr(engine, "_inbox", None)
    return None if inbox is None else int(inbox.qsize())
