"""A bare-socket Engine.IO client that can stop reading: the slow consumer of the tests.

Everything else in the suite uses real Socket.IO clients; this one exists because they
always read. It speaks just enough: the WebSocket upgrade, masked text frames, the
Socket.IO connect and one event, then never reads again (with a tiny receive buffer, so
the server's writes back up after a few kilobytes instead of megabytes).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from urllib.parse import urlparse

from livecommerce import jsonutil


def client_frame(
    payload: bytes, opcode: int = 0x1, *, fin: bool = True, mask: bool = True
) -> bytes:
    """A client's WebSocket frame (text by default), masked byte by byte: built apart from
    the server's own codec (transport/websocket.py), so tests check it against RFC 6455."""
    size = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if size < 126:
        header = struct.pack("!BB", b0, bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", b0, bit | 126, size)
    else:
        header = struct.pack("!BBQ", b0, bit | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class StalledClient:
    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        self._seen = b""  # read but not yet matched (the 101 and a frame may share a read)

    async def connect_and_join(self, room_id: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (self.host, self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(self.sock, request.encode())
        await self._read_until(b"\r\n\r\n")  # the 101
        await self._read_until(b"0{")  # Engine.IO open
        await loop.sock_sendall(self.sock, client_frame(b"40"))
        await self._read_until(b"40{")  # Socket.IO connected
        join = b'420["room:join",' + jsonutil.dumpb({"room_id": room_id}) + b"]"
        await loop.sock_sendall(self.sock, client_frame(join))
        await self._read_until(b"430[")  # the join ack; from here on nothing is read

    async def _read_until(self, marker: bytes, timeout: float = 5) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while marker not in self._seen:
                chunk = await loop.sock_recv(self.sock, 65536)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                self._seen += chunk
        self._seen = self._seen.split(marker, 1)[1]

    def close(self) -> None:
        self.sock.close()
