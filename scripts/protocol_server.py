"""livecommerce's Socket.IO server, configured the way the Socket.IO protocol test suite
expects its server (socket.io-protocol, "Test suite"): a ping every 300 ms, 200 ms to
answer it, payloads up to 1,000,000 bytes, CORS from anywhere, an ``auth`` event (the
handshake's auth payload) to every connection of ``/`` and ``/custom``, and echoes.

It is livecommerce's own transport, not a stand-in: ``create_server()`` builds the
``Server`` subclass of livecommerce/transport/socket.py (bad packets that carry an ack id
answered ``invalid``, orjson, livecommerce's WebSocket driver). Only the timings and the
payload limit the suite needs are changed, and echo handlers take the place of the app.

The suite's server echoes the event ``message``; livecommerce reserves that name (a client
event called ``message`` is refused), so the echoes here are named ``echo``:

* ``echo`` -> the server emits ``echo-back`` with the same arguments (binary ones too);
* ``echo-with-ack`` -> the server acknowledges with the same arguments.

    python scripts/protocol_server.py [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import socketio
from aiohttp import web

from livecommerce.settings import load_settings
from livecommerce.transport.socket import create_server

#: The suite asks for 300 ms, but python-engineio announces pingInterval as whole seconds
#: (``int(ping_interval + grace) * 1000``: 0.3 s would be announced as 0 ms), so the
#: shortest interval it can state truthfully is 1 s. scripts/protocol-check tells the
#: checks what the server uses.
PING_INTERVAL_S = 1
PING_TIMEOUT_S = 0.2
MAX_PAYLOAD = 1_000_000
NAMESPACES = ("/", "/custom")


def build_server() -> socketio.AsyncServer:
    sio = create_server(load_settings(env={}))
    sio.eio.ping_interval = PING_INTERVAL_S
    sio.eio.ping_timeout = PING_TIMEOUT_S
    sio.eio.max_http_buffer_size = MAX_PAYLOAD
    for namespace in NAMESPACES:
        _greet_on_connect(sio, namespace)
    _echo(sio)
    return sio


def _greet_on_connect(sio: socketio.AsyncServer, namespace: str) -> None:
    async def greet(sid: str, auth: Any) -> None:
        # The connect handler runs before the CONNECT packet goes out: emit once the
        # namespace is connected, as the reference server's "connection" listener does.
        for _ in range(1000):
            if sio.manager.is_connected(sid, namespace):
                break
            await asyncio.sleep(0.001)
        await sio.emit("auth", auth if auth is not None else {}, to=sid, namespace=namespace)

    async def connect(sid: str, _environ: dict[str, Any], auth: Any = None) -> None:
        sio.start_background_task(greet, sid, auth)

    sio.on("connect", connect, namespace=namespace)


def _echo(sio: socketio.AsyncServer) -> None:
    async def echo(sid: str, *args: Any) -> None:
        await sio.emit("echo-back", args, to=sid)

    async def echo_with_ack(_sid: str, *args: Any) -> tuple[Any, ...]:
        return args

    sio.on("echo", echo)
    sio.on("echo-with-ack", echo_with_ack)


async def serve(host: str, port: int) -> None:
    app = web.Application()
    build_server().attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, shutdown_timeout=1).start()
    print(f"protocol server listening on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
