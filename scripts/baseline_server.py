"""The baseline of the comments benchmark: what "plain python-socketio" does.

One ``AsyncServer(async_mode="aiohttp")`` on aiohttp + uvloop with python-socketio's
default in-process manager (or its ``AsyncRedisManager`` with ``--redis``, for two nodes),
no batching, no sampling, no rate limits, no slow-consumer cut-off:

* ``connect`` accepts anyone (the token, if any, is not even read);
* ``room:join {"room_id"}`` -> ``enter_room``, ack ``{"ok": true, "state": {}}``;
* ``comment:send {"room_id", "text"}`` -> one ``emit("comment:batch", ..., room=room_id)``
  per comment, the item shaped like livecommerce's, then ack ``{"ok": true, "id"}``;
* ``like:send {"room_id", "count"}`` -> a counter; ``like:total`` goes to the room at most
  four times a second from a background task, like livecommerce's.

JSON goes through orjson (livecommerce's ``jsonutil`` adapter), as in livecommerce, so the
two servers differ in how they deliver, not in how they encode. GC settings are Python's
defaults (livecommerce freezes its start-up heap and raises the thresholds).

Usage: python scripts/baseline_server.py --port 8100 [--host 127.0.0.1] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import socketio  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402

from livecommerce import jsonutil  # noqa: E402

LIKE_TOTAL_EVERY_S = 0.25
MAX_TEXT = 100
Ack = dict[str, Any]


def invalid(message: str) -> Ack:
    return {"ok": False, "error": {"code": "invalid", "message": message}}


class Baseline:
    """The handlers; per-room ``seq`` and like totals live in plain dicts."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.seq: dict[str, int] = {}
        self.comments = 0
        self.likes: dict[str, int] = {}
        self.likes_shown: dict[str, int] = {}
        self.users: dict[str, dict[str, str]] = {}
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("room:join", self.join)
        sio.on("comment:send", self.comment)
        sio.on("like:send", self.like)

    def next_seq(self, room_id: str) -> int:
        self.seq[room_id] = seq = self.seq.get(room_id, 0) + 1
        return seq

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.users[sid] = {"id": sid, "name": f"viewer {sid[:6]}", "role": "viewer"}

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        self.users.pop(sid, None)

    async def join(self, sid: str, data: Any) -> Ack:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if not isinstance(room_id, str) or not room_id:
            return invalid("room_id required")
        await self.sio.enter_room(sid, room_id)
        return {"ok": True, "state": {}}

    async def comment(self, sid: str, data: Any) -> Ack:
        if not isinstance(data, dict):
            return invalid("payload must be an object")
        room_id, text = data.get("room_id"), data.get("text")
        if not isinstance(room_id, str) or not isinstance(text, str):
            return invalid("room_id and text required")
        text = text.strip()
        if not 1 <= len(text) <= MAX_TEXT:
            return invalid("text must be 1..100 characters")
        self.comments += 1
        item = {
            "id": f"c{self.comments}",
            "user": self.users.get(sid, {"id": sid, "name": "viewer", "role": "viewer"}),
            "text": text,
            "at": int(time.time() * 1000),
        }
        batch = {"room_id": room_id, "seq": self.next_seq(room_id), "items": [item]}
        await self.sio.emit("comment:batch", batch, room=room_id)
        return {"ok": True, "id": item["id"]}

    async def like(self, sid: str, data: Any) -> Ack:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(room_id, str) or not isinstance(count, int) or not 1 <= count <= 100:
            return invalid("room_id and count 1..100 required")
        self.likes[room_id] = self.likes.get(room_id, 0) + count
        return {"ok": True}

    async def like_totals(self) -> None:
        """like:total to each room whose total moved, at most every 250 ms."""
        while True:
            await asyncio.sleep(LIKE_TOTAL_EVERY_S)
            for room_id, total in list(self.likes.items()):
                if self.likes_shown.get(room_id) == total:
                    continue
                self.likes_shown[room_id] = total
                payload = {"room_id": room_id, "seq": self.next_seq(room_id), "total": total}
                await self.sio.emit("like:total", payload, room=room_id)


def create_app(redis_url: str | None) -> tuple[web.Application, Baseline]:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    # The same transport settings as livecommerce's create_server(), apart from the manager.
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        json=jsonutil,
        cors_allowed_origins="*",
        max_http_buffer_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
    )
    app = web.Application()
    sio.attach(app)
    baseline = Baseline(sio)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    return app, baseline


async def serve(host: str, port: int, redis_url: str | None) -> None:
    app, baseline = create_app(redis_url)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"baseline listening on http://{host}:{port}", flush=True)
    # SIGTERM ends the process at once: the benchmark has no use for a graceful close of
    # thousands of sockets.
    await baseline.like_totals()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="redis://... : python-socketio's AsyncRedisManager")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args.host, args.port, args.redis))


if __name__ == "__main__":
    main()
