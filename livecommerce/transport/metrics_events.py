"""Socket events and HTTP routes of staff metrics.

``MetricsHub`` keeps, per room, the local connections subscribed to its ticks. One task
per node ticks every ``tick_ms`` while anything is subscribed and stops when nothing is:
each watched room's numbers are computed once and written to each of its subscribers.
A connection's subscriptions end with it (a disconnect hook of the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from livecommerce import errors
from livecommerce.features.access import Access
from livecommerce.features.metrics.events import MetricsEvent
from livecommerce.features.metrics.schemas import MetricsRoom
from livecommerce.transport.dispatch import Call, Connection, Dispatcher
from livecommerce.transport.http import Routes, json_response

if TYPE_CHECKING:
    from livecommerce.app import Node
    from livecommerce.transport.socket import SocketGateway

log = structlog.get_logger(__name__)

HISTORY_DEFAULT_MIN = 120
HISTORY_MAX_MIN = 1440


class MetricsHub:
    def __init__(self, node: Node, gateway: SocketGateway) -> None:
        self.node = node
        self.gateway = gateway
        self.subs: dict[str, dict[str, Connection]] = {}  # room -> sid -> connection
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, conn: Connection, room_id: str) -> None:
        self.subs.setdefault(room_id, {})[conn.sid] = conn
        self.node.room_metrics.watch(room_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="metrics-ticks")

    def unsubscribe(self, conn: Connection, room_id: str) -> None:
        conns = self.subs.get(room_id)
        if conns is None or conns.pop(conn.sid, None) is None:
            return
        if not conns:
            del self.subs[room_id]
            self.node.room_metrics.forget(room_id)

    def drop(self, conn: Connection) -> None:
        for room_id in [r for r, conns in self.subs.items() if conn.sid in conns]:
            self.unsubscribe(conn, room_id)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.node.settings.metrics.tick_ms / 1000
        next_at = loop.time()
        while self.subs:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > interval:  # fell behind: don't try to catch up
                next_at = loop.time()
            await asyncio.gather(*(self._tick(room_id) for room_id in list(self.subs)))

    async def _tick(self, room_id: str) -> None:
        try:
            payload = await self.node.room_metrics.tick(room_id)
        except Exception as exc:  # the dashboard notices a missing tick
            log.warning("metrics_tick_failed", room_id=room_id, error=str(exc))
            return
        for conn in list(self.subs.get(room_id, {}).values()):
            await self.gateway.emit_to(conn, MetricsEvent.TICK, payload)

    async def stop(self) -> None:
        self.subs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def register(on: Dispatcher, gateway: SocketGateway, node: Node) -> MetricsHub:
    hub = MetricsHub(node, gateway)
    gateway.disconnect_hooks.append(hub.drop)

    @on.on("metrics:subscribe", MetricsRoom, Access.CONTROL)
    async def subscribe(call: Call[MetricsRoom]) -> dict[str, Any]:
        hub.subscribe(call.conn, call.payload.room_id)
        return {}

    @on.on("metrics:unsubscribe", MetricsRoom, Access.CONTROL)
    async def unsubscribe(call: Call[MetricsRoom]) -> dict[str, Any]:
        hub.unsubscribe(call.conn, call.payload.room_id)
        return {}

    return hub


def add_routes(app: web.Application, node: Node) -> None:
    routes = Routes(node)

    async def history(request: web.Request) -> web.Response:
        await routes.authorize(request, Access.CONTROL)
        raw = request.query.get("minutes", str(HISTORY_DEFAULT_MIN))
        if not raw.isdigit() or not 1 <= int(raw) <= HISTORY_MAX_MIN:
            raise errors.Invalid(
                f"minutes must be 1..{HISTORY_MAX_MIN}", fields={"minutes": "out of range"}
            )
        room_id = request.match_info["room_id"]
        return json_response(await node.room_metrics.recent_history(room_id, int(raw)))

    async def cluster(request: web.Request) -> web.Response:
        await routes.authorize(request, Access.STAFF)
        return json_response({"nodes": await node.cluster.nodes()})

    app.router.add_get("/api/rooms/{room_id}/metrics/history", history)
    app.router.add_get("/api/cluster", cluster)
