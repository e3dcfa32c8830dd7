"""The Socket.IO side of a node: connections, room membership and delivery.

python-socketio runs with its default in-process manager. Cross-node fan-out is the
engine's job (per-room channels, subscribed only while this node has members), so this
module only maps engine deliveries onto local Socket.IO rooms: ``r:<room_id>`` for room
members and ``u:<user_id>`` for a user's own connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import socketio
import structlog

from livecommerce import errors, jsonutil
from livecommerce.engine import Broadcast
from livecommerce.transport.dispatch import Connection, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node

log = structlog.get_logger(__name__)


def room_target(room_id: str) -> str:
    return f"r:{room_id}"


def user_target(user_id: str) -> str:
    return f"u:{user_id}"


def create_server() -> socketio.AsyncServer:
    return socketio.AsyncServer(
        async_mode="aiohttp",
        json=jsonutil,
        cors_allowed_origins="*",
        max_http_buffer_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
    )


class SocketGateway:
    def __init__(self, sio: socketio.AsyncServer, node: Node, dispatcher: Dispatcher) -> None:
        self.sio = sio
        self.node = node
        self.dispatcher = dispatcher
        self.conns: dict[str, Connection] = {}
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("*", self._on_event)

    # -- engine sinks -------------------------------------------------------------------

    async def deliver_room(self, message: Broadcast) -> None:
        await self.sio.emit(message.event, message.payload, room=room_target(message.room_id))

    async def deliver_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        await self.sio.emit(event, payload, room=user_target(user_id))

    async def emit_to(self, conn: Connection, event: str, payload: dict[str, Any]) -> None:
        await self.sio.emit(event, payload, to=conn.sid)

    # -- membership ---------------------------------------------------------------------

    async def join(self, conn: Connection, room_id: str) -> None:
        """Subscribe this node (if it is the first local member) and add the connection.
        Returns once every later broadcast of the room will reach it."""
        if room_id in conn.rooms:
            return
        conn.rooms.add(room_id)
        try:
            await self.node.engine.room_local_join(room_id)
        except BaseException:
            conn.rooms.discard(room_id)
            raise
        await self.sio.enter_room(conn.sid, room_target(room_id))

    async def leave(self, conn: Connection, room_id: str) -> None:
        if room_id not in conn.rooms:
            return
        conn.rooms.discard(room_id)
        await self.sio.leave_room(conn.sid, room_target(room_id))
        await self.node.engine.room_local_leave(room_id)

    # -- socket.io callbacks ------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        principal = None
        if token:
            try:
                principal = self.node.auth.verify(str(token))
            except errors.DomainError as exc:
                # The client's connect_error gets {"message", "data": {"code", "message"}}.
                raise socketio.exceptions.ConnectionRefusedError(
                    exc.message, exc.to_dict()
                ) from None
        ip = str(environ.get("REMOTE_ADDR", ""))
        conn = Connection(sid=sid, principal=principal, ip=ip)
        self.conns[sid] = conn
        self.node.metrics.connections.inc()
        if principal is not None:
            await self.node.engine.user_local_join(principal.id)
            await self.sio.enter_room(sid, user_target(principal.id))

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        self.node.metrics.connections.dec()
        for room_id in list(conn.rooms):
            try:
                await self.leave(conn, room_id)
            except Exception as exc:
                log.warning("leave_on_disconnect_failed", room_id=room_id, error=str(exc))
        if conn.principal is not None:
            await self.node.engine.user_local_leave(conn.principal.id)

    async def _on_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        conn = self.conns.get(sid)
        if conn is None:  # an event racing its own disconnect
            return {"ok": False, "error": errors.Unauthorized("not connected").to_dict()}
        data = args[0] if args else None
        if len(args) > 1:
            return {"ok": False, "error": errors.Invalid("send one payload object").to_dict()}
        return await self.dispatcher.dispatch(conn, event, data)
