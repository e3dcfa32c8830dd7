"""Engine.IO v4 + Socket.IO v5 over WebSocket, straight from an ``asyncio.Protocol``.

The hot path of a node is a WebSocket client (the app and ``lc.js`` connect with
``transports: ["websocket"]``): one frame in, one event, one ack out. python-socketio
spends a task per Engine.IO message, another per Socket.IO event, a queue, a writer task
and a ``wait_for`` per read on it, and ~30 KB per idle connection. Here each connection
is one protocol object: frames are parsed in the callback that received them, acks and
broadcasts are written straight to the transport (one writer, so order is the write
order), pings run on a timer handle, and only an event's handler gets a task.

Scope: a direct WebSocket connection (``?EIO=4&transport=websocket``, no ``sid``) to the
``/`` namespace, JSON payloads — everything livecommerce's protocol uses. Anything else
(long-polling, the upgrade from it, other namespaces, binary attachments, compression)
is python-socketio's: :class:`Front` reads each new TCP connection's request head and
either keeps it or hands the connection, bytes included, to aiohttp.

Both paths meet in :class:`~livecommerce.transport.socket.SocketGateway` (``open``,
``event``, ``closed``): authorization, limits and dispatch are the same code.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket as _socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from livecommerce import errors, jsonutil
from livecommerce.transport import offload
from livecommerce.transport import websocket as ws
from livecommerce.transport.dispatch import RESERVED_EVENTS

if TYPE_CHECKING:
    from livecommerce.transport.dispatch import Connection
    from livecommerce.transport.socket import SocketGateway

log = structlog.get_logger(__name__)

#: Engine.IO reasons, as python-engineio names them (the disconnect metric's labels).
CLIENT_DISCONNECT, SERVER_DISCONNECT = "client disconnect", "server disconnect"
PING_TIMEOUT, TRANSPORT_CLOSE, TRANSPORT_ERROR = (
    "ping timeout",
    "transport close",
    "transport error",
)
#: Engine.IO packets as WebSocket frames, encoded once.
PING = ws.frame(b"2")
CLOSE_PACKET = ws.frame(b"1")
HEAD_TIMEOUT_S = 10.0
_ACK_ID = re.compile(rb"\d+")
HEAD_MAX = 16 * 1024


def ack_frame(ack_id: int, ack: Any) -> bytes:
    return ws.frame(b"43%d" % ack_id + jsonutil.dumpb([ack]))


def _refusal(ack_id: int, why: str) -> bytes:
    return ack_frame(ack_id, {"ok": False, "error": errors.Invalid(why).to_dict()})


class WireServer:
    """The node's lean WebSocket endpoint: settings, the open connections, and the
    handler tasks of their events."""

    def __init__(self, gateway: SocketGateway, *, path: str = "/socket.io/") -> None:
        self.gateway = gateway
        self.path = path
        eio = gateway.sio.eio  # one set of Engine.IO settings for both paths
        self.ping_interval = float(eio.ping_interval)
        self.ping_timeout = float(eio.ping_timeout)
        self.max_payload = int(eio.max_http_buffer_size)
        t = gateway.node.settings.transport
        self.enabled = t.lean_websocket and not t.ws_compression
        self.sndbuf = t.ws_sndbuf
        #: A client that opens TCP but never finishes its request head is let go.
        self.head_timeout_s = HEAD_TIMEOUT_S
        self.conns: set[WireConn] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # connects and disconnects
        #: Acks of a burst, sent together by the send thread (``answer``).
        self._acks: list[WireConn] = []
        self.open_packet_fields = {
            "upgrades": [],
            "pingInterval": int(self.ping_interval * 1000),
            "pingTimeout": int(self.ping_timeout * 1000),
            "maxPayload": self.max_payload,
        }

    def accepts(self, upgrade: ws.Upgrade) -> bool:
        q = upgrade.query
        return (
            self.enabled
            and upgrade.path == self.path
            and q.get("EIO") == "4"
            and q.get("transport") == "websocket"
            and "sid" not in q
        )

    def answer(self, conn: WireConn, data: bytes) -> None:
        """Write an ack. While the node answers a burst (the gateway is busy, e.g. a
        flash sale's stampede) the acks of one loop iteration are collected and sent by
        the send thread in one call (transport/offload.py ``Scatter``): the loop is spared
        a syscall per buyer. The connection holds what else it is written meanwhile."""
        transport = conn.transport
        if (
            not self.gateway.outbox.offload_min
            or conn.held is not None
            or transport.get_write_buffer_size()  # older bytes wait there: they go first
            or not self.gateway.busy()
        ):
            conn.write(data)
            return
        if conn.ending or transport.is_closing():
            return
        conn.held = [data]
        self._acks.append(conn)
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, []
        if len(acks) < offload.FOLLOW_MIN or not self.gateway.outbox.offload_min:
            for conn in acks:
                conn.landed(b"")
            return
        outbox = self.gateway.outbox
        outbox.count_thread(offload.Scatter(outbox.sender(), acks).launch())

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Front(asyncio.Protocol):
    """Every new TCP connection starts here: reads the request head, then keeps a lean
    WebSocket or hands the connection (with what it read) to aiohttp's request handler."""

    __slots__ = ("head", "make_http", "timer", "transport", "wire")

    def __init__(self, wire: WireServer, make_http: Callable[[], asyncio.Protocol]) -> None:
        self.wire = wire
        self.make_http = make_http
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.head = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.wire.head_timeout_s, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0 and len(self.head) < HEAD_MAX:
            return
        if self.timer is not None:
            self.timer.cancel()
        upgrade = ws.parse_upgrade(self.head[:end]) if end > 0 else None
        assert self.transport is not None
        if upgrade is not None and self.wire.accepts(upgrade):
            WireConn(self.wire, self.transport, upgrade).start(upgrade.key, self.head[end + 4 :])
        else:
            http = self.make_http()
            self.transport.set_protocol(http)
            http.connection_made(self.transport)
            http.data_received(self.head)
        self.head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class WireConn(asyncio.Protocol):
    """One client: WebSocket frames <-> Engine.IO packets <-> Socket.IO packets."""

    __slots__ = (
        "closing_reason",
        "conn",
        "connecting",
        "ending",
        "fd",
        "forwarded",
        "gone",
        "held",
        "ip_peer",
        "ponged",
        "reader",
        "timer",
        "transport",
        "wire",
    )

    def __init__(self, wire: WireServer, transport: asyncio.Transport, up: ws.Upgrade) -> None:
        self.wire = wire
        self.transport = transport
        self.reader = ws.FrameReader(wire.max_payload, self._message, self._control)
        peer = transport.get_extra_info("peername")
        self.ip_peer: str | None = peer[0] if isinstance(peer, tuple) else None
        # only what the client-IP rule reads (limits.client_ip)
        self.forwarded = {
            name: up.headers[key]
            for name, key in (("X-Forwarded-For", "x-forwarded-for"), ("X-Real-IP", "x-real-ip"))
            if key in up.headers
        }
        self.conn: Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.closing_reason: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ponged = True
        self.gone: asyncio.Future[None] | None = None  # made when someone waits for the end
        #: While a frame is in flight on the fan-out thread (transport/offload.py): what is
        #: written meanwhile, in order, and whether a close waits behind it.
        self.held: list[bytes] | None = None
        self.ending = False
        self.fd = -1

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, key: str, rest: bytes) -> None:
        transport, wire = self.transport, self.wire
        transport.set_protocol(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            if wire.sndbuf:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, wire.sndbuf)
        opened = {"sid": secrets.token_urlsafe(15), **wire.open_packet_fields}
        transport.write(ws.accept_response(key) + ws.frame(b"0" + jsonutil.dumpb(opened)))
        wire.conns.add(self)
        self.timer = asyncio.get_running_loop().call_later(wire.ping_interval, self._ping)
        if rest:
            self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        wire = self.wire
        wire.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        reason = self.closing_reason or (TRANSPORT_ERROR if exc is not None else TRANSPORT_CLOSE)
        if self.conn is not None or self.connecting is not None:
            wire.spawn(self._closed(reason))
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)

    async def _closed(self, reason: str) -> None:
        if self.connecting is not None:  # let the connect finish, then undo it
            await asyncio.wait([self.connecting])
        if self.conn is not None:
            await self.wire.gateway.closed(self.conn.sid, reason)

    def close(self, reason: str, code: int = ws.NORMAL, why: str = "") -> None:
        """End the connection from this side: a WebSocket close frame, then the socket."""
        if self.transport.is_closing() or self.ending:
            return
        self.closing_reason = self.closing_reason or reason
        self._end(ws.close_frame(code, why))

    async def shut(self, grace_s: float) -> None:
        """Graceful shutdown: an Engine.IO close (a Socket.IO client reconnects on it,
        through the balancer, to another node), then wait for the client to let go."""
        if self.transport.is_closing() or self.ending:
            return
        self.closing_reason = SERVER_DISCONNECT
        self.write(CLOSE_PACKET + ws.close_frame(ws.GOING_AWAY))
        self.gone = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self.gone), grace_s)
        except TimeoutError:
            self.transport.abort()

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            if not self.ending:
                held.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def _end(self, last: bytes) -> None:
        """Write ``last``, then close: once a frame in flight has landed."""
        if self.held is not None:
            if not self.ending:
                self.held.append(last)
                self.ending = True
            return
        self.transport.write(last)
        self.transport.close()

    def landed(self, rest: bytes) -> None:
        """The frame in flight on the fan-out thread is out but for ``rest``: write that,
        then what was held meanwhile (and close, if a close waited)."""
        held, self.held = self.held, None
        transport = self.transport
        if transport.is_closing():
            return
        out = rest + b"".join(held) if held else rest
        if out:
            transport.write(out)
        if self.ending:
            transport.close()

    # -- Engine.IO ------------------------------------------------------------------------

    def _ping(self) -> None:
        if not self.ponged:  # the previous ping went unanswered for ping_timeout
            self.timer = None
            self.closing_reason = PING_TIMEOUT
            self.transport.abort()
            return
        self.ponged = False
        self.write(PING)
        wire = self.wire
        self.timer = asyncio.get_running_loop().call_later(wire.ping_timeout, self._ping_due)

    def _ping_due(self) -> None:
        if not self.ponged:
            self._ping()  # closes
            return
        wait = max(0.0, self.wire.ping_interval - self.wire.ping_timeout)
        self.timer = asyncio.get_running_loop().call_later(wait, self._ping)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except ws.ProtocolError as exc:
            log.info("bad_websocket_frame", error=exc.reason)
            self.close(TRANSPORT_ERROR, exc.code, exc.reason)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == ws.PING:
            self.write(ws.frame(payload, ws.PONG))
        elif opcode == ws.CLOSE:
            self.closing_reason = self.closing_reason or TRANSPORT_CLOSE
            if not self.transport.is_closing() and not self.ending:
                # the client's close: answered; ours (shut): done
                self._end(ws.frame(payload[:2], ws.CLOSE) if self.gone is None else b"")

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode != ws.TEXT or self.transport.is_closing():
            return  # binary: attachments, which livecommerce's protocol never sends
        kind = payload[:1]
        if kind == b"4":
            self._socketio(payload)
        elif kind == b"3":
            self.ponged = True
        elif kind == b"2":  # a client ping (Engine.IO v3 habit): answer it
            self.write(ws.frame(b"3" + payload[1:]))
        elif kind == b"1":
            self.close(CLIENT_DISCONNECT)
        elif kind != b"6":  # 6: noop
            log.info("bad_websocket_frame", error="unknown Engine.IO packet")
            self.close(TRANSPORT_ERROR, ws.PROTOCOL_ERROR, "unknown Engine.IO packet")

    # -- Socket.IO ------------------------------------------------------------------------

    def _socketio(self, payload: bytes) -> None:
        kind, body = payload[1:2], payload[2:]
        if kind in (b"5", b"6"):  # binary event / ack: "<attachments>-" comes first
            _, _, body = body.partition(b"-")
        namespace = "/"
        if body[:1] == b"/":
            name, _, body = body.partition(b",")
            namespace = name.decode("utf-8", "replace")
        found = _ACK_ID.match(body)
        ack_id = None
        if found is not None:
            digits = found.end()
            ack_id = int(body[:digits]) if digits <= 1000 else None  # int() stops at 4,300
            body = body[digits:]
        if kind == b"2":
            if namespace == "/":
                self._event(ack_id, body)
        elif kind == b"0":
            self._connect(namespace, body)
        elif kind == b"1":
            if namespace == "/":
                self.close(CLIENT_DISCONNECT)
        elif kind in (b"5", b"6"):
            if ack_id is not None:
                self.write(_refusal(ack_id, "binary payloads are not supported"))
        elif kind != b"3":  # 3: an ack of ours (we never ask for one)
            if ack_id is not None:
                self.write(_refusal(ack_id, "malformed packet"))

    def _event(self, ack_id: int | None, body: bytes) -> None:
        try:
            data = jsonutil.loads(body)
        except (ValueError, TypeError):
            data = None
        if not isinstance(data, list) or not data:
            log.info("bad_packet", error="not an event", answered=ack_id is not None)
            if ack_id is not None:
                self.write(_refusal(ack_id, "malformed packet"))
            return
        name = data[0]
        if not isinstance(name, str) or name in RESERVED_EVENTS:
            if ack_id is not None:
                self.write(_refusal(ack_id, "event names are strings, not reserved"))
            return
        if self.conn is None:
            if ack_id is not None:
                error = errors.Unauthorized("not connected").to_dict()
                self.write(ack_frame(ack_id, {"ok": False, "error": error}))
            return
        # A bare task, no done-callback bookkeeping (one more loop callback per event):
        # while pending it is referenced by what it awaits, and the gateway counts events
        # in flight (drain and stop wait for them).
        asyncio.get_running_loop().create_task(self._run(self.conn, name, data[1:], ack_id))

    async def _run(self, conn: Connection, name: str, args: list[Any], ack_id: int | None) -> None:
        ack = await self.wire.gateway.event(conn.sid, name, args)
        if ack_id is not None:
            self.wire.answer(self, ack_frame(ack_id, ack))

    def _connect(self, namespace: str, body: bytes) -> None:
        if namespace != "/":
            refused = {"message": "Invalid namespace"}
            self.write(ws.frame(f"44{namespace},".encode() + jsonutil.dumpb(refused)))
            return
        if self.conn is not None or self.connecting is not None:
            return  # connected already (or on its way)
        try:
            auth = jsonutil.loads(body) if body else None
        except (ValueError, TypeError):
            auth = None
        self.connecting = asyncio.get_running_loop().create_task(self._open(auth))

    async def _open(self, auth: Any) -> None:
        gateway = self.wire.gateway
        ip = gateway.limits.client_ip(self.ip_peer, self.forwarded)
        sid = secrets.token_urlsafe(15)
        try:
            self.conn = await gateway.open(sid, auth, ip, wire=self)
        except errors.DomainError as exc:
            # as python-socketio's ConnectionRefusedError(message, data) is encoded
            refused = {"message": exc.message, "data": exc.to_dict()}
            self.write(ws.frame(b"44" + jsonutil.dumpb(refused)))
        except Exception:
            log.exception("connect_failed")
            refused = {"message": "internal error"}
            self.write(ws.frame(b"44" + jsonutil.dumpb(refused)))
        else:
            self.write(ws.frame(b"40" + jsonutil.dumpb({"sid": sid})))
        finally:
            self.connecting = None


def node_runner(app: web.Application, wire: WireServer | None, **kwargs: Any) -> web.AppRunner:
    """aiohttp's AppRunner, its connections first through :class:`Front` (when the lean
    WebSocket path is on)."""
    return _NodeRunner(app, wire, **kwargs)


class _NodeRunner(web.AppRunner):
    __slots__ = ("_wire",)

    def __init__(self, app: web.Application, wire: WireServer | None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._wire = wire

    async def _make_server(self) -> Any:
        server = await super()._make_server()
        if self._wire is None or not self._wire.enabled:
            return server
        return _FrontServer(server, self._wire)


class _FrontServer:
    """Stands in for aiohttp's ``web.Server`` (the protocol factory the sites call):
    makes :class:`Front` protocols, and passes everything else through."""

    def __init__(self, server: Any, wire: WireServer) -> None:
        self._server = server
        self._wire = wire

    def __call__(self) -> Front:
        return Front(self._wire, self._server)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
