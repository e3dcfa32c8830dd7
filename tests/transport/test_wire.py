"""The lean WebSocket path (transport/websocket.py, transport/wire.py): the RFC 6455
reader against frames built independently here, then the Engine.IO / Socket.IO behaviour
of a real node over raw sockets — what python-socketio's clients never exercise (split
heads, bad frames, unanswered pings, other namespaces) — and which path each client takes.
The rest of the suite's Socket.IO clients connect with ``transports=["websocket"]``, so
every feature test runs over this path too."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import pytest
import socketio

from livecommerce import jsonutil
from livecommerce.app import GATEWAY
from livecommerce.transport import websocket as ws
from tests.conftest import AppServer, make_user
from tests.support.client import Api, Client
from tests.support.rawws import client_frame

ClientFactory = Callable[..., Awaitable[Client]]
NodeFactory = Callable[..., Awaitable[AppServer]]


class Collect:
    def __init__(self, max_size: int = 1 << 20) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.controls: list[tuple[int, bytes]] = []
        self.reader = ws.FrameReader(
            max_size,
            lambda o, p: self.messages.append((o, p)),
            lambda o, p: self.controls.append((o, p)),
        )


# -- RFC 6455 ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_frames_of_every_length_arrive_whole_however_the_bytes_are_split(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [0, 1, 2, 3, 4, 5, 125, 126, 127, 1000, 65535, 65536, 70_001]
    payloads = [bytes(rng.getrandbits(8) for _ in range(n)) for n in sizes]
    stream = b"".join(
        client_frame(p, ws.BINARY if i % 2 else ws.TEXT) for i, p in enumerate(payloads)
    )
    got = Collect()
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 7, 64, 1500, 70_000])
        got.reader.feed(stream[pos : pos + step])
        pos += step
    assert [p for _, p in got.messages] == payloads
    assert [o for o, _ in got.messages] == [
        ws.BINARY if i % 2 else ws.TEXT for i in range(len(sizes))
    ]


def test_fragments_are_joined_and_control_frames_pass_between_them() -> None:
    got = Collect()
    got.reader.feed(
        client_frame(b'42["a",', fin=False)
        + client_frame(b"hi", ws.PING)
        + client_frame(b"{}", ws.CONTINUATION, fin=False)
        + client_frame(b"]", ws.CONTINUATION)
    )
    assert got.messages == [(ws.TEXT, b'42["a",{}]')]
    assert got.controls == [(ws.PING, b"hi")]


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (client_frame(b"40", mask=False), ws.PROTOCOL_ERROR),
        (bytes([0xC1]) + client_frame(b"40")[1:], ws.PROTOCOL_ERROR),  # RSV1: no extension
        (client_frame(b"x" * 126, ws.PING), ws.PROTOCOL_ERROR),
        (client_frame(b"x", ws.PING, fin=False), ws.PROTOCOL_ERROR),
        (client_frame(b"x", ws.CONTINUATION), ws.PROTOCOL_ERROR),
        (client_frame(b"x", fin=False) + client_frame(b"y"), ws.PROTOCOL_ERROR),
        (client_frame(b"x", 0x3), ws.PROTOCOL_ERROR),
        (client_frame(b"x" * 2000), ws.TOO_BIG),
        (client_frame(b"x" * 600, fin=False) + client_frame(b"y" * 600, 0), ws.TOO_BIG),
        # the declared length alone is enough: the payload is never waited for
        (struct.pack("!BBQ", 0x81, 0xFF, 1 << 40), ws.TOO_BIG),
    ],
    ids=["unmasked", "rsv", "long-ping", "fragmented-ping", "stray-continuation",
         "interleaved", "unknown-opcode", "too-big", "too-big-in-fragments", "declared-huge"],
)  # fmt: skip
def test_what_a_client_may_not_send_is_refused_with_its_close_code(
    stream: bytes, code: int
) -> None:
    got = Collect(max_size=1024)
    with pytest.raises(ws.ProtocolError) as raised:
        got.reader.feed(stream)
    assert raised.value.code == code


def test_upgrade_heads_are_recognised_and_the_accept_key_is_rfc_6455s() -> None:
    # RFC 6455 §1.3's own example
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in ws.accept_response(
        "dGhlIHNhbXBsZSBub25jZQ=="
    )
    good = (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 10.0.0.1"
    )
    up = ws.parse_upgrade(good.encode())
    assert up is not None and up.path == "/socket.io/"
    assert up.query == {"EIO": "4", "transport": "websocket"}
    assert up.headers["x-forwarded-for"] == "10.0.0.1"
    for bad in (
        good.replace("GET", "POST"),
        good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),  # not 16 bytes
        good.replace("Upgrade: WebSocket\r\n", ""),
        good.replace("HTTP/1.1", "HTTP/1.0"),
        good + "\r\nno colon here",
    ):
        assert ws.parse_upgrade(bad.encode()) is None, bad


# -- a node, over raw sockets ---------------------------------------------------------------


class Raw:
    """A bare TCP connection speaking WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, path: str = "/socket.io/?EIO=4&transport=websocket") -> Raw:
        parsed = urlparse(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        raw = cls(reader, writer)
        raw.writer.write(raw.head(path))
        return raw

    @staticmethod
    def head(path: str) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    async def handshake(self) -> dict[str, Any]:
        status = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        assert status.startswith(b"HTTP/1.1 101 "), status
        opcode, opened = await self.frame()
        assert opcode == ws.TEXT and opened[:1] == b"0", opened
        return dict(jsonutil.loads(opened[1:]))

    async def frame(self, timeout: float = 5) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            assert not b1 & 0x80, "a server's frames are not masked"
            return b0 & 0x0F, await self.reader.readexactly(size)

    async def text(self, timeout: float = 5, *, pong: bool = True) -> bytes:
        """The next text frame that is not an Engine.IO ping (answered unless told not)."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode == ws.TEXT and payload == b"2":
                if pong:
                    self.send(b"3")
                continue
            if opcode == ws.TEXT:
                return payload

    def send(self, payload: bytes, opcode: int = ws.TEXT) -> None:
        self.writer.write(client_frame(payload, opcode))

    async def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection within ``timeout`` (frames skipped)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


async def settled(server: AppServer, count: int) -> None:
    gateway = server.server.app[GATEWAY]
    for _ in range(100):
        if len(gateway.conns) == count and len(gateway.wire.conns) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(gateway.conns)} connections, {len(gateway.wire.conns)} sockets")


async def test_the_handshake_survives_a_head_sent_byte_by_byte(app_server: AppServer) -> None:
    parsed = urlparse(app_server.url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    raw = Raw(reader, writer)
    for byte in Raw.head("/socket.io/?EIO=4&transport=websocket"):
        writer.write(bytes([byte]))
        await writer.drain()
    opened = await raw.handshake()
    assert opened["upgrades"] == [] and opened["pingInterval"] == 20_000
    assert opened["pingTimeout"] == 20_000 and opened["maxPayload"] == 64 * 1024
    raw.send(b"40")
    assert (await raw.text()).startswith(b'40{"sid":"')
    raw.send(b'421["room:join",{"room_id":"nope"}]')
    [ack] = jsonutil.loads((await raw.text())[3:])
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    raw.close()
    await settled(app_server, 0)


async def test_engine_io_and_socket_io_edges(app_server: AppServer) -> None:
    raw = await Raw.open(app_server.url)
    await raw.handshake()
    raw.send(b'427["room:join",{"room_id":"r"}]')  # an event before the Socket.IO connect
    [ack] = jsonutil.loads((await raw.text())[3:])
    assert ack["error"]["code"] == "unauthorized"
    raw.send(b"40/admin,{}")
    assert await raw.text() == b'44/admin,{"message":"Invalid namespace"}'
    raw.send(b"40")
    assert (await raw.text()).startswith(b"40{")
    raw.send(b"2probe")  # a client's Engine.IO ping is answered
    assert await raw.text() == b"3probe"
    raw.send(b"hello", ws.PING)  # and a WebSocket ping
    assert await raw.frame() == (ws.PONG, b"hello")
    raw.send(b'451-12["room:join",{"_placeholder":true,"num":0}]')  # binary: not ours
    raw.send(b"\x00\x01", ws.BINARY)
    assert (await raw.text()).startswith(b"4312[")
    raw.send(b'423["room:join",{"room_id":"nope"}]')  # and the connection still works
    assert (await raw.text()).startswith(b"433[")
    raw.send(struct.pack("!H", 1000), ws.CLOSE)
    assert await raw.frame() == (ws.CLOSE, struct.pack("!H", 1000))
    assert await raw.closed()
    await settled(app_server, 0)


async def test_a_frame_that_breaks_the_protocol_closes_with_its_code(app_server: AppServer) -> None:
    raw = await Raw.open(app_server.url)
    await raw.handshake()
    raw.send(b"40")
    await raw.text()
    raw.writer.write(client_frame(b"42[]", mask=False))
    opcode, payload = await raw.frame()
    assert opcode == ws.CLOSE and struct.unpack("!H", payload[:2])[0] == ws.PROTOCOL_ERROR
    assert await raw.closed()
    raw2 = await Raw.open(app_server.url)
    await raw2.handshake()
    raw2.send(b"x" * (64 * 1024 + 1))
    opcode, payload = await raw2.frame()
    assert opcode == ws.CLOSE and struct.unpack("!H", payload[:2])[0] == ws.TOO_BIG
    await settled(app_server, 0)


async def test_an_unanswered_ping_ends_the_connection_an_answered_one_does_not(
    app_server: AppServer,
) -> None:
    wire = app_server.server.app[GATEWAY].wire
    wire.ping_interval, wire.ping_timeout = 0.2, 0.2
    answering, silent = await Raw.open(app_server.url), await Raw.open(app_server.url)
    for raw in (answering, silent):
        await raw.handshake()
        raw.send(b"40")
        await raw.text(pong=False)

    async def keep_answering() -> None:
        with pytest.raises((asyncio.IncompleteReadError, TimeoutError)):
            await answering.text(timeout=3)

    keeper = asyncio.create_task(keep_answering())
    assert await silent.closed(timeout=2), "no pong, yet still open"
    metrics = app_server.node.metrics.registry
    assert (
        metrics.get_sample_value("livecommerce_disconnects_total", {"reason": "ping_timeout"}) == 1
    )
    await asyncio.sleep(1.0)  # five more ping rounds
    assert len(app_server.server.app[GATEWAY].conns) == 1, "the answering client was dropped"
    answering.close()
    keeper.cancel()
    await settled(app_server, 0)


async def test_a_connection_that_never_finishes_its_head_is_let_go(app_server: AppServer) -> None:
    app_server.server.app[GATEWAY].wire.head_timeout_s = 0.3
    parsed = urlparse(app_server.url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    writer.write(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n")
    assert await Raw(reader, writer).closed(timeout=3)


async def test_http_and_long_polling_pass_through_to_aiohttp(
    app_server: AppServer, api_factory: Callable[[str], Api]
) -> None:
    """Requests that are not a direct WebSocket (plain HTTP on a kept-alive connection, an
    upgrade with a bad key, long-polling and its upgrade) reach aiohttp and python-socketio
    with every byte; both kinds of client share a room."""
    api = api_factory(app_server.url)
    for _ in range(3):  # one kept-alive connection, several requests
        status, _ = await api.request("GET", "/healthz")
        assert status == 200
    host = await make_user(app_server.node, "wire_host", "host")
    room = (await api.ok("POST", "/api/rooms", host, {"title": "Both"}))["id"]
    await api.ok("POST", f"/api/rooms/{room}/start", host)
    lean = Client(app_server.url, host)
    await lean.connect()
    polling = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    polling.on("product:pinned", got.append)
    await polling.connect(app_server.url, transports=["polling"], wait_timeout=10)
    try:
        gateway = app_server.server.app[GATEWAY]
        kinds = sorted("wire" if c.wire is not None else "engineio" for c in gateway.conns.values())
        assert kinds == ["engineio", "wire"]
        assert (await polling.call("room:join", {"room_id": room}, timeout=10))["ok"] is True
        await lean.ok("room:join", {"room_id": room})
        product = await api.ok(
            "POST",
            f"/api/rooms/{room}/products",
            host,
            {"title": "P", "price_cents": 100, "stock": 1},
        )
        await lean.ok("product:pin", {"room_id": room, "product_id": product["id"]})
        await lean.wait_for("product:pinned")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.05)
        assert got and got[0]["product"]["id"] == product["id"]
    finally:
        await polling.disconnect()
        await lean.sio.disconnect()
    parsed = urlparse(app_server.url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    writer.write(Raw.head("/socket.io/?EIO=4&transport=websocket").replace(b"Key: ", b"Key: x"))
    status = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert status.startswith(b"HTTP/1.1 ") and b" 101 " not in status, status  # aiohttp's answer
    writer.close()
    await settled(app_server, 0)


async def test_with_the_lean_path_off_websockets_are_python_socketios(
    node_factory: NodeFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(transport={"lean_websocket": False})
    client = await client_factory(server.url)
    conns = list(server.server.app[GATEWAY].conns.values())
    assert [(c.wire is None, c.eio is not None) for c in conns] == [(True, True)]
    ack = await client.call("room:join", {"room_id": "nope"})
    assert ack["error"]["code"] == "not_found"
