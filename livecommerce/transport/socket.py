"""The Socket.IO side of a node: connections, room membership and delivery.

The protocol (handshake, pings, events, acks) is ``transport/wire.py``'s for WebSocket
clients and python-socketio's for long-polling ones; both call :meth:`SocketGateway.open`,
``event`` and ``closed``, so who may connect and what an event does is decided here once.
Delivery does not go through python-socketio's rooms: cross-node fan-out is the engine's
job (per-room channels, subscribed only while this node has members), and the last hop —
from a delivery to this node's connections — is :class:`Outbox`'s (encode once, write to
each). Comments are held per room until the room's next tick and leave as one
``comment:batch`` per viewer (``features/comments/batching.py`` decides what each viewer
sees); any other broadcast of the room first flushes the comments waiting before it, so
viewers get seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import socketio
import structlog

from livecommerce import errors, jsonutil
from livecommerce.engine import Broadcast
from livecommerce.features.comments.batching import Batcher
from livecommerce.features.comments.events import CommentEvent
from livecommerce.settings import Settings
from livecommerce.transport.dispatch import RESERVED_EVENTS, Connection, Dispatcher
from livecommerce.transport.limits import Limits
from livecommerce.transport.outbox import Frame, Outbox, websocket_class
from livecommerce.transport.wire import WireServer

if TYPE_CHECKING:
    from livecommerce.app import Node

log = structlog.get_logger(__name__)


#: Events in flight from which the node counts as answering a burst (a flash sale's
#: stampede puts thousands in flight at once; normal traffic keeps a handful).
BUSY_EVENTS = 256
_ACK_ID = re.compile(r"^[23](?:/[^,]*,)?(\d+)")


class Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, with every client packet answered by one ack.

    Out of the box an event whose name is not a string, a reserved name, or a packet that
    does not decode is dropped (or reaches the connect handler) with a traceback in the
    log. Here each of those gets the ``invalid`` ack PROTOCOL.md promises when the client
    asked for one, and is ignored otherwise."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            found = _ACK_ID.match(data) if isinstance(data, str) else None
            log.info("bad_packet", error=type(exc).__name__, answered=found is not None)
            if found is not None:
                await self._refuse(eio_sid, None, int(found.group(1)), "malformed packet")

    async def _handle_event(self, eio_sid: str, namespace: Any, id: Any, data: Any) -> None:
        name = data[0] if isinstance(data, list) and data else None
        if not isinstance(name, str) or name in RESERVED_EVENTS:
            if id is not None:
                await self._refuse(eio_sid, namespace, id, "event names are strings, not reserved")
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _refuse(self, eio_sid: str, namespace: Any, ack_id: int, why: str) -> None:
        error = errors.Invalid(why).to_dict()
        pkt = self.packet_class(
            socketio.packet.ACK,
            namespace=namespace or "/",
            data=[{"ok": False, "error": error}],
            id=ack_id,
        )
        await self._send_packet(eio_sid, pkt)


def create_server(settings: Settings) -> socketio.AsyncServer:
    sio = Server(
        async_mode="aiohttp",
        json=jsonutil,
        cors_allowed_origins="*",
        max_http_buffer_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
    )
    t = settings.transport
    # A copy: engineio keeps the driver table at module level, shared by every server.
    sio.eio._async = {
        **sio.eio._async,
        "websocket": websocket_class(compress=t.ws_compression, sndbuf=t.ws_sndbuf),
    }
    return sio


class SocketGateway:
    def __init__(self, sio: socketio.AsyncServer, node: Node, dispatcher: Dispatcher) -> None:
        self.sio = sio
        self.node = node
        self.dispatcher = dispatcher
        self.conns: dict[str, Connection] = {}
        t, c = node.settings.transport, node.settings.comments
        self.outbox = Outbox(
            node.metrics,
            max_queue=t.out_queue_max,
            max_buffer=t.out_buffer_max,
            offload_min=t.fanout_thread_min if t.lean_websocket else 0,
        )
        self.batcher = Batcher(c.viewer_rate, c.tick_ms / 1000)
        self._ticker: asyncio.Task[None] | None = None
        #: room -> broadcasts waiting behind the room's pending comments
        self._behind: dict[str, Frame] = {}
        #: room -> what arrived after a comment batch that had to wait for the next tick
        self._after: dict[str, list[Broadcast]] = {}
        #: Called with each connection that went away (e.g. staff metrics subscriptions).
        self.disconnect_hooks: list[Callable[[Connection], None]] = []
        self.limits: Limits = node.limits
        #: Set by drain(): new connections and events are turned away.
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: WebSocket clients' own path (transport/wire.py); python-socketio serves the rest.
        self.wire = WireServer(self)
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("*", self._on_event)

    # -- engine sinks -------------------------------------------------------------------

    async def deliver_room(self, message: Broadcast) -> None:
        self._place(message)

    def _place(self, message: Broadcast) -> None:
        room_id = message.room_id
        later = self._after.get(room_id)
        if later is not None:
            later.append(message)  # behind a later batch: keeps its place in seq order
            return
        if message.event == CommentEvent.BATCH:
            if room_id in self._behind:
                # A broadcast waits behind earlier comments: this later batch may not join
                # their tick (it would leave, with its higher seq, before the broadcast, and
                # a client keeping seq order would drop the broadcast). It opens the next.
                self._after[room_id] = [message]
                return
            self.batcher.add(room_id, message.seq, message.payload["items"])
            return
        behind = self._behind.get(room_id)
        if behind is not None or self.batcher.has_pending(room_id):
            # Comments published before it are waiting for the tick: it waits with them
            # (<= one tick) and leaves right after them, in the same write.
            frame = Frame.encode(message.event, message.payload)
            self._behind[room_id] = frame if behind is None else behind + frame
            return
        self.outbox.to_room(room_id, message.event, message.payload)

    async def deliver_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        self.outbox.to_user(user_id, event, payload)

    async def emit_to(self, conn: Connection, event: str, payload: dict[str, Any]) -> None:
        self.outbox.send(conn, Frame.encode(event, payload))

    # -- comment ticks ------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="comment-ticks")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.outbox.close()  # the send thread finishes the fan-outs it has taken
        for wire in list(self.wire.conns):  # aiohttp's shutdown does not know them
            wire.transport.abort()
        if self.wire.tasks:
            await asyncio.wait(list(self.wire.tasks), timeout=5)
        with contextlib.suppress(TimeoutError):  # events still answering
            await asyncio.wait_for(self._idle.wait(), 5)

    async def _tick_loop(self) -> None:
        interval = self.batcher.tick_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > interval:  # fell behind: don't try to catch up
                next_at = loop.time()
            for room_id in self.batcher.pending_rooms():
                try:
                    self.flush_comments(room_id)
                except Exception:
                    log.exception("comment_tick_failed", room_id=room_id)

    def flush_comments(self, room_id: str) -> None:
        """The room's tick: one write per viewer with its comment:batch and whatever
        broadcasts arrived after those comments; then what arrived after those broadcasts
        takes their place: complete segments (comments, then a broadcast) leave now, the
        last one waits for the next tick."""
        while True:
            self._send_tick(room_id)
            later = self._after.pop(room_id, None)
            if not later:
                return
            for message in later:
                self._place(message)
            if room_id not in self._after:
                return  # one open segment is left: its comments wait for the next tick
            # another complete segment (comments, then a broadcast): it leaves in this tick
            # too, on what is left of the budget, so a busy room never falls behind

    def _send_tick(self, room_id: str) -> None:
        tick = self.batcher.take(room_id)
        behind = self._behind.pop(room_id, None)
        if tick is None:
            if behind is not None:
                self.outbox.send_many(self.outbox.members(room_id).values(), behind)
            return
        metrics = self.node.metrics
        metrics.comment_batch_items.observe(tick.received)
        if tick.dropped:
            metrics.sampled_out.inc(tick.dropped)
        members = self.outbox.members(room_id)
        if not members:
            return
        personal: dict[str, Frame] = {}  # sid -> its own frame (senders among viewers)
        for user_id, own in tick.own.items():
            sids = [sid for sid in self.outbox.user_conns(user_id) if sid in members]
            if sids:
                payload = tick.payload_for(room_id, own)
                frame = Frame.encode(CommentEvent.BATCH, payload, len(payload["items"]))
                personal.update(dict.fromkeys(sids, frame if behind is None else frame + behind))
        shared = behind
        if tick.items or tick.dropped:
            batch = Frame.encode(CommentEvent.BATCH, tick.payload_for(room_id), len(tick.items))
            shared = batch if behind is None else batch + behind
        frames = self.outbox.fan_out(list(members.values()), shared, personal or None)
        if shared is behind:  # comment:batch frames only: the personal ones
            frames = len(personal)
        metrics.comment_frames.inc(frames)

    # -- membership ---------------------------------------------------------------------

    def signed_in_members(self, room_id: str) -> set[str]:
        """User ids of this node's signed-in connections in the room."""
        members = self.outbox.members(room_id).values()
        return {c.principal.id for c in members if c.principal is not None}

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
        if conn.sid in self.conns:  # not disconnected meanwhile
            # Comments waiting for this tick may also be in the joiner's snapshot or replay:
            # it drops those by id (docs/protocol.md). Flushing them early instead would
            # spend the room's sampling budget on every join of a busy room.
            self.outbox.join(conn, room_id)

    async def leave(self, conn: Connection, room_id: str) -> None:
        if room_id not in conn.rooms:
            return
        conn.rooms.discard(room_id)
        self.outbox.leave(conn, room_id)
        if not self.outbox.members(room_id):
            self.batcher.forget(room_id)
            self._behind.pop(room_id, None)
            self._after.pop(room_id, None)
        await self.node.engine.room_local_leave(room_id)

    # -- socket.io callbacks ------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        request = environ.get("aiohttp.request")
        # engineio's aiohttp driver says REMOTE_ADDR 127.0.0.1 for everyone: ask aiohttp.
        ip = self.limits.client_ip(
            getattr(request, "remote", None), getattr(request, "headers", {})
        )
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        try:
            await self.open(sid, auth, ip, eio=self.sio.eio.sockets.get(eio_sid))
        except errors.DomainError as exc:
            # The client's connect_error gets {"message", "data": {"code", "message"}}.
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_dict()) from None
        # python-socketio keeps each connection's WSGI-style environ (headers, the first
        # aiohttp request) for its lifetime; nothing reads it after this point.
        if eio_sid in self.sio.environ:
            self.sio.environ[eio_sid] = {"REMOTE_ADDR": ip}

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        await self.closed(sid, reason)

    async def _on_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        return await self.event(sid, event, list(args))

    # -- connections, whichever path they came by (python-socketio or transport/wire.py) --

    async def open(
        self, sid: str, auth: Any, ip: str, *, eio: Any = None, wire: Any = None
    ) -> Connection:
        """A Socket.IO connect: who it is (the token), whether it may (draining, limits),
        then its user channel, so messages to the user reach it from the first ack on.
        Refusals raise DomainError."""
        token = auth.get("token") if isinstance(auth, dict) else None
        if self.draining:
            raise errors.Unavailable("this node is shutting down; connect to another")
        principal = self.node.auth.verify(str(token)) if token else None
        held = len(self.outbox.user_conns(principal.id)) if principal is not None else 0
        self.limits.check_connect(ip, principal.id if principal else None, held)
        conn = Connection(
            sid=sid,
            principal=principal,
            ip=ip,
            eio=eio,
            wire=wire,
            events=self.limits.conn_bucket(),
        )
        self.conns[sid] = conn
        if principal is not None:
            self.outbox.add_user(conn, principal.id)
            await self.node.engine.user_local_join(principal.id)
        return conn

    async def closed(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        self.node.metrics.disconnected(reason)
        for hook in self.disconnect_hooks:
            try:
                hook(conn)
            except Exception:
                log.exception("disconnect_hook_failed", sid=sid)
        for room_id in list(conn.rooms):
            try:
                await self.leave(conn, room_id)
            except Exception as exc:
                log.warning("leave_on_disconnect_failed", room_id=room_id, error=str(exc))
        if conn.principal is not None:
            self.outbox.remove_user(conn, conn.principal.id)
            await self.node.engine.user_local_leave(conn.principal.id)

    async def event(self, sid: str, event: str, args: list[Any]) -> dict[str, Any]:
        """One client event, answered by exactly one ack."""
        conn = self.conns.get(sid)
        if conn is None:  # an event racing its own disconnect
            return {"ok": False, "error": errors.Unauthorized("not connected").to_dict()}
        try:
            if self.draining:
                raise errors.Unavailable(
                    "this node is shutting down; reconnect and send again", retry_after_ms=1000
                )
            user_id = conn.principal.id if conn.principal is not None else None
            self.limits.check_event(conn.events, conn.ip, user_id)
        except errors.DomainError as exc:
            label = event if event in self.dispatcher.specs else "_unknown"
            self.node.metrics.event_done(label, exc.code, 0.0)
            return {"ok": False, "error": exc.to_dict()}
        if len(args) > 1:
            return {"ok": False, "error": errors.Invalid("send one payload object").to_dict()}
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self.dispatcher.dispatch(conn, event, args[0] if args else None)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def busy(self) -> bool:
        """Answering a burst (engine.busy: background writers wait meanwhile)."""
        return self._in_flight >= BUSY_EVENTS

    # -- graceful shutdown --------------------------------------------------------------

    async def drain(self, grace_s: float, spread_s: float) -> None:
        """SIGTERM, transport side. New connections and events are turned away
        (``unavailable``: the client retries elsewhere, request ids make that safe); the
        events already running finish and get their acks; then every client is told
        (``server:draining``) and its Engine.IO socket closed — a transport close, which
        Socket.IO clients answer by reconnecting (through the balancer, to a live node) —
        in waves over ``spread_s`` so the other nodes are not hit all in one instant."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.warning("drain_in_flight_abandoned", events=self._in_flight)
        conns = list(self.conns.values())
        log.info("drain_disconnecting", connections=len(conns), spread_s=spread_s)
        notice = Frame.encode("server:draining", {"node_id": self.node.node_id, "reconnect": True})
        waves = max(1, min(10, len(conns)))
        for i in range(waves):
            wave = conns[i::waves]
            self.outbox.send_many(wave, notice)
            await asyncio.gather(*(self._close(conn) for conn in wave), return_exceptions=True)
            if i + 1 < waves:
                await asyncio.sleep(spread_s / waves)

    async def _close(self, conn: Connection) -> None:
        if conn.wire is not None:
            await conn.wire.shut(1.0)
            return
        eio_sid = self.sio.manager.eio_sid_from_sid(conn.sid, "/")
        if eio_sid is not None:
            # Engine.IO waits for its queue to drain, which for a long-polling client that
            # stopped polling is never: bounded, then the process lets go of it anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sio.eio.disconnect(eio_sid), 1.0)
        # A client normally closes its end on the Engine.IO close at once; one that does
        # not would hold the shutdown for aiohttp's whole shutdown timeout.
        transport = getattr(conn.eio, "lc_transport", None)
        if transport is None:
            return
        for _ in range(20):
            if transport.is_closing():
                return
            await asyncio.sleep(0.05)
        transport.close()
