"""Writing to connections: encode a frame once, hand the same bytes to every recipient.

python-socketio's ``emit(room=...)`` makes one asyncio task per recipient per message,
which caps a node at ~18k deliveries/s. Here a broadcast is encoded once into a complete
WebSocket text frame (server frames are unmasked, so the bytes are the same for every
viewer) and written straight to each connection's transport — a few microseconds each.

A direct write is only safe when nothing else of that connection is in flight, or it
could overtake an ack or an earlier broadcast. So it is used only when Engine.IO's writer
task is idle on its empty queue; otherwise (long-polling, permessage-deflate, a writer
busy with a backlog) the frame goes through that queue as one shared, pre-encoded
Engine.IO packet, behind whatever is already there. Order per connection is kept either
way.

A connection that stops reading is cut off before it costs memory or anyone's time: its
socket buffer (bytes) or its queue (frames) over the limit aborts its transport.

A fan-out to many lean WebSockets (``offload_min`` or more ready to take the frame) is
written by a thread of its own outside the GIL (transport/offload.py): the loop goes on
serving events while the kernel sends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EioWebSocket

from livecommerce import jsonutil
from livecommerce.observability import Metrics
from livecommerce.transport import offload
from livecommerce.transport.websocket import frame as ws_frame

if TYPE_CHECKING:
    from livecommerce.transport.dispatch import Connection

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """Socket.IO events encoded once: the WebSocket frames back to back (one write) and
    the same events as Engine.IO packets (for the queue). ``comments``: how many bullet
    comments it carries (counted as dropped if a slow connection never gets it)."""

    ws: bytes
    packets: tuple[eio_packet.Packet, ...]
    comments: int = 0

    @classmethod
    def encode(cls, event: str, payload: dict[str, Any], comments: int = 0) -> Frame:
        body = b"42" + jsonutil.dumpb([event, payload])  # Engine.IO message, SIO event
        packet = eio_packet.Packet(eio_packet.MESSAGE, body[1:].decode())
        return cls(ws_frame(body), (packet,), comments)

    def __add__(self, other: Frame) -> Frame:
        return Frame(
            self.ws + other.ws, self.packets + other.packets, self.comments + other.comments
        )


def websocket_class(*, compress: bool, sndbuf: int) -> type[EioWebSocket]:
    """Engine.IO's aiohttp WebSocket, plus: the response is remembered on the Engine.IO
    socket (``lc_ws``) for direct writes, compression is a setting, and SO_SNDBUF can be
    capped so a stalled reader is noticed after kilobytes rather than megabytes."""

    class WireWebSocket(EioWebSocket):  # type: ignore[misc]
        async def __call__(self, environ: dict[str, Any]) -> Any:
            from aiohttp.web import WebSocketResponse

            request = environ["aiohttp.request"]
            self._sock = WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=compress
            )
            await self._sock.prepare(request)
            raw = request.transport.get_extra_info("socket") if request.transport else None
            if sndbuf and raw is not None:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            owner = getattr(self.handler, "__self__", None)  # the Engine.IO socket
            if owner is not None:
                owner.lc_ws = self._sock
                owner.lc_transport = request.transport  # graceful shutdown lets go of it
            self.environ = environ
            try:
                await self.handler(self)
            except Exception as exc:
                # A frame that is not Engine.IO breaks engineio's read loop. Close this
                # connection properly (the disconnect handlers run now, not at the ping
                # timeout) instead of letting aiohttp answer an upgraded socket with a 503.
                log.info("bad_websocket_frame", error=type(exc).__name__)
                if owner is not None and not owner.closed:
                    await owner.close(wait=False, abort=True)
                await self._sock.close()
            return self._sock

    return WireWebSocket


class Outbox:
    def __init__(
        self, metrics: Metrics, *, max_queue: int, max_buffer: int, offload_min: int = 0
    ) -> None:
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_buffer = max_buffer
        #: fan-outs to at least this many ready lean WebSockets take the send thread
        #: (0: never; nor without the C extension)
        self.offload_min = offload_min if offload.available else 0
        self._sender: offload.SendThread | None = None
        self.rooms: dict[str, dict[str, Connection]] = {}
        self.users: dict[str, dict[str, Connection]] = {}
        self._direct = metrics.frames.labels("direct")
        self._queued = metrics.frames.labels("queued")
        self._thread = metrics.frames.labels("thread")
        self._comments_lost = metrics.cut_comments

    # -- membership ---------------------------------------------------------------------

    def add_user(self, conn: Connection, user_id: str) -> None:
        self.users.setdefault(user_id, {})[conn.sid] = conn

    def remove_user(self, conn: Connection, user_id: str) -> None:
        _discard(self.users, user_id, conn.sid)

    def join(self, conn: Connection, room_id: str) -> None:
        self.rooms.setdefault(room_id, {})[conn.sid] = conn

    def leave(self, conn: Connection, room_id: str) -> None:
        _discard(self.rooms, room_id, conn.sid)

    def members(self, room_id: str) -> dict[str, Connection]:
        return self.rooms.get(room_id, {})

    def user_conns(self, user_id: str) -> dict[str, Connection]:
        return self.users.get(user_id, {})

    # -- writing ------------------------------------------------------------------------

    def to_room(self, room_id: str, event: str, payload: dict[str, Any]) -> None:
        members = self.rooms.get(room_id)
        if members:
            self.send_many(members.values(), Frame.encode(event, payload))

    def to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        conns = self.users.get(user_id)
        if conns:
            self.send_many(conns.values(), Frame.encode(event, payload))

    def send_many(self, conns: Iterable[Connection], frame: Frame) -> None:
        self.fan_out(list(conns), frame, None)

    def fan_out(
        self,
        conns: Iterable[Connection],
        shared: Frame | None,
        personal: dict[str, Frame] | None,
    ) -> int:
        """Each connection gets ``personal[sid]`` if it has one, else ``shared`` (None:
        nothing). The hot loop of a room's tick: many lean WebSockets taking ``shared`` go
        to the send thread; a lean WebSocket with room in its socket buffer is written
        inline; anything else takes ``_write``. Returns the writes."""
        direct = queued = flown = 0
        if self.offload_min and shared is not None:
            conns, flown = self._offload(conns, shared, personal)
            if flown:
                self._thread.inc(flown)
        limit = self.max_buffer
        for conn in conns:
            frame = shared if personal is None else personal.get(conn.sid, shared)
            if frame is None:
                continue
            wire = conn.wire
            if wire is not None and not conn.cut and wire.held is None:
                transport = wire.transport
                if transport.get_write_buffer_size() <= limit and not transport.is_closing():
                    transport.write(frame.ws)
                    direct += 1
                    continue
            how = self._write(conn, frame)
            direct += how == _DIRECT
            queued += how == _QUEUED
        self._count(direct, queued)
        return direct + queued + flown

    def _offload(
        self, conns: Iterable[Connection], shared: Frame, personal: dict[str, Frame] | None
    ) -> tuple[list[Connection], int]:
        """Hand the lean WebSockets that take ``shared`` with nothing else in their way to
        the send thread; return the rest (written here) and how many took off."""
        conns = list(conns)
        if len(conns) < self.offload_min:
            return conns, 0
        flying: list[Any] = []
        rest: list[Connection] = []
        for conn in conns:
            wire = conn.wire
            if (
                wire is None
                or conn.cut
                or wire.held is not None
                or (personal is not None and conn.sid in personal)
                or wire.transport.get_write_buffer_size()
                or wire.transport.is_closing()
            ):
                rest.append(conn)
            else:
                flying.append(wire)
        if len(flying) < self.offload_min:
            return conns, 0
        offload.Flight(self.sender(), flying, shared.ws).launch()
        return rest, len(flying)

    def sender(self) -> offload.SendThread:
        """The node's send thread (started on first use)."""
        if self._sender is None:
            self._sender = offload.SendThread(asyncio.get_running_loop())
        return self._sender

    def count_thread(self, frames: int) -> None:
        self._thread.inc(frames)

    def close(self) -> None:
        """Stop the send thread (after the fan-outs it has taken); from now on every
        write is inline."""
        self.offload_min = 0
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def send(self, conn: Connection, frame: Frame) -> None:
        how = self._write(conn, frame)
        self._count(how == _DIRECT, how == _QUEUED)

    def _count(self, direct: int, queued: int) -> None:
        # Once per fan-out, not per connection: a metric's lock costs as much as a write.
        if direct:
            self._direct.inc(direct)
        if queued:
            self._queued.inc(queued)

    def _write(self, conn: Connection, frame: Frame) -> int:
        if conn.cut:
            self._lost(frame)
            return _SKIPPED
        if conn.wire is not None:
            return self._write_wire(conn, frame)
        eio = conn.eio
        if eio is None or eio.closed or eio.closing:
            return _SKIPPED
        queue: asyncio.Queue[Any] = eio.queue
        ws = getattr(eio, "lc_ws", None)
        writer: Any = None if ws is None else ws._writer
        transport: Any = None if writer is None else writer.transport
        if transport is not None and transport.get_write_buffer_size() > self.max_buffer:
            self._cut(conn, "socket buffer full")
            self._lost(frame)
            return _SKIPPED
        # The writer task idles in queue.get() (a waiting getter) only when it holds
        # nothing: then writing past it cannot overtake anything.
        if not queue.qsize() and getattr(queue, "_getters", None):
            if transport is not None and not writer.compress and not eio.upgrading:
                if transport.is_closing():
                    return _SKIPPED
                transport.write(frame.ws)
                return _DIRECT
        if queue.qsize() >= self.max_queue:
            self._cut(conn, "queue full")
            self._lost(frame)
            return _SKIPPED
        for packet in frame.packets:
            queue.put_nowait(packet)
        return _QUEUED

    def _write_wire(self, conn: Connection, frame: Frame) -> int:
        # transport/wire.py: one writer (this loop), so every write goes straight out, in
        # order; the socket's unsent bytes are the only queue (and, while a fan-out frame
        # is in flight on the send thread, the connection's held writes)
        wire = conn.wire
        transport = wire.transport
        if transport.is_closing():
            return _SKIPPED
        if wire.held is not None:
            wire.write(frame.ws)
            return _DIRECT
        if transport.get_write_buffer_size() > self.max_buffer:
            self._cut(conn, "socket buffer full")
            self._lost(frame)
            return _SKIPPED
        transport.write(frame.ws)
        return _DIRECT

    def _lost(self, frame: Frame) -> None:
        if frame.comments:
            self._comments_lost.inc(frame.comments)

    def _cut(self, conn: Connection, why: str) -> None:
        conn.cut = True
        self.metrics.slow_cut.inc()
        log.warning("slow_consumer_cut", sid=conn.sid, why=why)
        if conn.wire is not None:
            conn.wire.closing_reason = "slow consumer"
            conn.wire.transport.abort()  # connection_lost follows: the disconnect handlers
            return
        ws = getattr(conn.eio, "lc_ws", None)
        writer = None if ws is None else ws._writer
        if writer is not None and writer.transport is not None:
            writer.transport.abort()  # the reader sees the close; disconnect follows
        elif conn.eio is not None:
            conn.eio.queue.put_nowait(None)  # long-polling: ends the pending poll
            task = asyncio.get_running_loop().create_task(conn.eio.close(wait=False, abort=True))
            _background.add(task)
            task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()
_SKIPPED, _DIRECT, _QUEUED = 0, 1, 2


def _discard(index: dict[str, dict[str, Connection]], key: str, sid: str) -> None:
    found = index.get(key)
    if found is not None:
        found.pop(sid, None)
        if not found:
            del index[key]
