"""RFC 6455 by hand, the little a server needs: the upgrade handshake, frames out, and an
incremental reader for the masked frames clients send.

Why not aiohttp's WebSocketResponse: with it every connection keeps an HTTP request, a
handler task, a reader queue and a writer alive (python-engineio adds a task, a queue and a
``wait_for`` per message on top) — 30+ KB and two task switches per event. A live room
holds tens of thousands of mostly idle viewers, so ``transport/wire.py`` speaks WebSocket
straight from an ``asyncio.Protocol``: no task per connection, the bytes handled in the
callback that received them. No extensions are negotiated (permessage-deflate would
forbid writing one encoded frame to every viewer).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
#: Close codes (RFC 6455 §7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, TOO_BIG = 1000, 1001, 1002, 1009


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket upgrade request: what the server needs of it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; the last of repeated ones
    key: str


def parse_upgrade(head: bytes) -> Upgrade | None:
    """The request head (up to, not including, the blank line) if it is a well-formed
    WebSocket upgrade; None for anything else (the HTTP server answers those)."""
    try:
        text = head.decode("latin-1")
        request_line, *lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        return None
    if method != "GET" or version != "HTTP/1.1":
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers[name.strip().lower()] = value.strip()
    key = headers.get("sec-websocket-key", "")
    if (
        "websocket" not in headers.get("upgrade", "").lower()
        or "upgrade" not in headers.get("connection", "").lower()
        or headers.get("sec-websocket-version") != "13"
        or not _valid_key(key)
    ):
        return None
    path, _, raw_query = target.partition("?")
    query = {name: values[-1] for name, values in parse_qs(raw_query).items()}
    return Upgrade(path, query, headers, key)


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def accept_response(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final, unmasked frame (a server's frames are never masked, so the same bytes
    can go to every connection)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], CLOSE)


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation (C speed, no per-byte loop)."""
    size = len(payload)
    if not size:
        return payload
    key = (mask * ((size + 3) // 4))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class FrameReader:
    """Feeds bytes in, calls ``on_message(opcode, payload)`` per complete message (TEXT or
    BINARY, fragments joined) and ``on_control(opcode, payload)`` per control frame.
    Raises :class:`ProtocolError` on anything RFC 6455 forbids a client to send."""

    __slots__ = ("_buf", "_parts", "_parts_op", "_size", "max_size", "on_control", "on_message")

    def __init__(
        self,
        max_size: int,
        on_message: Callable[[int, bytes], None],
        on_control: Callable[[int, bytes], None],
    ) -> None:
        self.max_size = max_size
        self.on_message = on_message
        self.on_control = on_control
        self._buf = b""
        self._parts: list[bytes] | None = None
        self._parts_op = 0
        self._size = 0

    def feed(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        while end - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            size, head = b1 & 0x7F, pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            if not b1 & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
            if b0 & 0x70:
                raise ProtocolError(PROTOCOL_ERROR, "no extension was negotiated")
            if size > self.max_size:
                raise ProtocolError(TOO_BIG, "message too big")
            stop = head + 4 + size
            if stop > end:
                break
            payload = unmask(data[head + 4 : stop], data[head : head + 4])
            pos = stop
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        if pos < end:
            if end - pos > self.max_size + 14:
                raise ProtocolError(TOO_BIG, "message too big")
            self._buf = data[pos:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125 or opcode not in (CLOSE, PING, PONG):
                raise ProtocolError(PROTOCOL_ERROR, "bad control frame")
            self.on_control(opcode, payload)
            return
        if opcode == CONTINUATION:
            if self._parts is None:
                raise ProtocolError(PROTOCOL_ERROR, "continuation without a start")
            self._size += len(payload)
            if self._size > self.max_size:
                raise ProtocolError(TOO_BIG, "message too big")
            self._parts.append(payload)
            if fin:
                parts, opcode = self._parts, self._parts_op
                self._parts, self._size = None, 0
                self.on_message(opcode, b"".join(parts))
            return
        if opcode not in (TEXT, BINARY):
            raise ProtocolError(PROTOCOL_ERROR, "unknown opcode")
        if self._parts is not None:
            raise ProtocolError(PROTOCOL_ERROR, "new message inside a fragmented one")
        if fin:
            self.on_message(opcode, payload)
        else:
            self._parts, self._parts_op, self._size = [payload], opcode, len(payload)
