"""A Socket.IO load generator that is cheap enough not to be what it measures.

Each simulated client is one aiohttp WebSocket speaking raw Engine.IO v4 / Socket.IO v5
frames (no python-socketio client: its per-packet machinery costs more than the server's
work we want to measure). Clients are spread over worker processes; the parent connects
everyone first, then names one instant (CLOCK_MONOTONIC is shared by all processes on
Linux) at which every worker sends one event per client, and collects the time each ack
came back and what it said.

Frames used (default namespace, text only):

    server -> 0{"sid":...,"pingInterval":...}      Engine.IO open
    client -> 40{"token":"..."}                    Socket.IO connect with auth
    server -> 40{"sid":"..."}  or  44{"message"}   connected / refused
    client -> 42<id>["event",{...}]                event with an ack id
    server -> 43<id>[{...}]                        the ack
    server -> 2   client -> 3                      Engine.IO ping / pong

As a library (see scripts/bench_flashsale.py)::

    gen = LoadGen(urls, tokens, workers=4)
    await gen.start()                     # spawn workers, connect everyone
    result = await gen.fire("flashsale:buy", {"sale_id": s, "qty": 1}, unique="request_id")
    await gen.close()

As a command line tool (tokens are minted with the servers' shared secret)::

    python scripts/loadgen.py --url http://127.0.0.1:8080 --secret S --clients 2000 \\
        --event bench:noop --payload '{}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

#: Seconds between "everyone is connected" and the fire instant: enough for every worker
#: to receive the instant and build its frames, so that all of them send at once.
DEFAULT_LEAD_S = 0.5


# -- what a worker is given and gives back --------------------------------------------


@dataclass(frozen=True, slots=True)
class Client:
    index: int  # global client number (unique request ids, result order)
    node: int  # which url it talks to
    token: str | None


@dataclass(frozen=True, slots=True)
class WorkerJob:
    worker: int
    urls: tuple[str, ...]
    clients: tuple[Client, ...]
    connect_concurrency: int
    connect_timeout_s: float
    max_lifetime_s: float


@dataclass(frozen=True, slots=True)
class Reply:
    """One client's outcome in one round. Times are CLOCK_MONOTONIC seconds."""

    client: int
    node: int
    sent_at: float
    acked_at: float | None  # None: no ack before the deadline (or the socket died)
    code: str  # "ok", an error code from the ack, or "no_ack" / "send_failed" / "down"


@dataclass(slots=True)
class ConnectStats:
    connected: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class RoundResult:
    event: str
    fire_at: float
    replies: list[Reply]
    #: per worker: seconds from the fire instant until its last frame was written
    send_spread_s: list[float]
    #: one example error message per error code
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def acked(self) -> list[Reply]:
        return [r for r in self.replies if r.acked_at is not None]

    def codes(self) -> Counter[str]:
        return Counter(r.code for r in self.replies)

    def last_ack_s(self, node: int | None = None) -> float:
        """Seconds from the fire instant until the last ack (of one node, or of all)."""
        times = [
            r.acked_at for r in self.acked if node is None or r.node == node
        ]  # acked_at is set for these
        return max((t for t in times if t is not None), default=self.fire_at) - self.fire_at

    def latencies_ms(self, since_fire: bool = False) -> list[float]:
        """Per acked client: ack time minus its own send time (or minus the fire instant)."""
        out = []
        for r in self.acked:
            assert r.acked_at is not None
            start = self.fire_at if since_fire else r.sent_at
            out.append((r.acked_at - start) * 1000)
        return sorted(out)

    def acks_per_s(self, node: int | None = None) -> float:
        """Acks / (last ack - fire instant), for one node or all of them."""
        n = sum(1 for r in self.acked if node is None or r.node == node)
        span = self.last_ack_s(node)
        return n / span if span > 0 else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


# -- one client connection (inside a worker) ------------------------------------------


class RawClient:
    """One WebSocket; a reader task answers pings and resolves the awaited ack."""

    __slots__ = ("acked_at", "body", "client", "expect", "reader", "waiter", "ws")

    def __init__(self, client: Client, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.client = client
        self.ws = ws
        self.expect = -1
        self.waiter: asyncio.Future[None] | None = None
        self.acked_at: float | None = None
        self.body: Any = None
        self.reader: asyncio.Task[None] | None = None

    def arm(self, ack_id: int) -> None:
        self.expect = ack_id
        self.acked_at = None
        self.body = None
        self.waiter = asyncio.get_running_loop().create_future()
        if self.reader is not None and self.reader.done():  # the socket is gone
            self.waiter.set_result(None)

    async def read(self) -> None:
        ws = self.ws
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                if data.startswith("43"):
                    self._on_ack(data)
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith("41") or data == "1":  # kicked / engine close
                    break
        finally:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)  # acked_at stays None: "down"

    def _on_ack(self, data: str) -> None:
        now = time.monotonic()
        bracket = data.find("[", 2)
        if bracket < 0 or int(data[2:bracket]) != self.expect or self.waiter is None:
            return
        self.acked_at = now
        args = orjson.loads(data[bracket:])
        self.body = args[0] if args else None
        if not self.waiter.done():
            self.waiter.set_result(None)


def ws_url(http_url: str) -> str:
    base = http_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return base + "/socket.io/?EIO=4&transport=websocket"


async def open_client(
    session: aiohttp.ClientSession, url: str, client: Client, timeout_s: float
) -> RawClient:
    """Engine.IO handshake, then a Socket.IO connect with ``{"token"}`` auth."""
    ws = await session.ws_connect(
        ws_url(url), autoping=True, compress=0, max_msg_size=0, timeout=_ws_timeout()
    )
    try:
        async with asyncio.timeout(timeout_s):
            opened = await ws.receive()
            if opened.type is not aiohttp.WSMsgType.TEXT or not str(opened.data).startswith("0"):
                raise ConnectionError(f"no engine.io open packet: {opened.data!r}"[:200])
            auth = {"token": client.token} if client.token else {}
            await ws.send_str("40" + orjson.dumps(auth).decode())
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket closed during connect ({msg.type.name})")
                data = str(msg.data)
                if data.startswith("40"):
                    return RawClient(client, ws)
                if data.startswith("44"):
                    raise ConnectionError("refused: " + data[2:200])
                if data == "2":
                    await ws.send_str("3")
    except BaseException:
        await ws.close()
        raise


def _ws_timeout() -> aiohttp.ClientWSTimeout:
    return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)


def frame(ack_id: int, event: str, payload: Any) -> str:
    return f"42{ack_id}" + orjson.dumps([event, payload]).decode()


def classify(body: Any) -> str:
    if not isinstance(body, dict):
        return "bad_ack"
    if body.get("ok") is True:
        return "ok"
    error = body.get("error")
    return str(error.get("code", "bad_ack")) if isinstance(error, dict) else "bad_ack"


# -- the worker process ------------------------------------------------------------


class Worker:
    def __init__(self, job: WorkerJob, pipe: Connection) -> None:
        self.job = job
        self.pipe = pipe
        self.clients: list[RawClient] = []
        self.next_ack = 0

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                stats = await self.connect_all(session)
                self.pipe.send(("ready", stats))
                while True:
                    command = await asyncio.to_thread(self.pipe.recv)
                    if command[0] == "fire":
                        _, event, payload, unique, fire_at, deadline_s = command
                        result = await self.fire(event, payload, unique, fire_at, deadline_s)
                        self.pipe.send(("result", result))
                    else:
                        break
            finally:
                await self.close_all()

    async def connect_all(self, session: aiohttp.ClientSession) -> ConnectStats:
        stats = ConnectStats()
        started = time.monotonic()
        gate = asyncio.Semaphore(self.job.connect_concurrency)

        async def one(client: Client) -> None:
            async with gate:
                try:
                    raw = await open_client(
                        session, self.job.urls[client.node], client, self.job.connect_timeout_s
                    )
                except (OSError, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                    stats.failed += 1
                    stats.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    return
                raw.reader = asyncio.create_task(raw.read())
                self.clients.append(raw)
                stats.connected += 1

        await asyncio.gather(*(one(c) for c in self.job.clients))
        stats.seconds = time.monotonic() - started
        return stats

    async def fire(
        self,
        event: str,
        payload: dict[str, Any],
        unique: str | None,
        fire_at: float,
        deadline_s: float,
    ) -> tuple[list[Reply], float, dict[str, str]]:
        self.next_ack += 1
        ack_id = self.next_ack
        frames = []
        for raw in self.clients:
            body = dict(payload)
            if unique:
                body[unique] = f"{unique}-{os.getpid()}-{ack_id}-{raw.client.index}"
            frames.append(frame(ack_id, event, body))
            raw.arm(ack_id)
        await asyncio.sleep(max(0.0, fire_at - time.monotonic()))
        sent_at: list[float] = []
        failed: set[int] = set()
        for i, (raw, text) in enumerate(zip(self.clients, frames, strict=True)):
            try:
                await raw.ws.send_str(text)
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                failed.add(i)
            sent_at.append(time.monotonic())
        spread = time.monotonic() - fire_at
        waiters = [raw.waiter for raw in self.clients if raw.waiter is not None]
        if waiters:
            await asyncio.wait(waiters, timeout=max(0.1, fire_at + deadline_s - time.monotonic()))
        replies = []
        examples: dict[str, str] = {}
        for i, raw in enumerate(self.clients):
            c = raw.client
            if i in failed:
                code = "send_failed"
            elif raw.acked_at is None:
                code = "down" if raw.waiter is not None and raw.waiter.done() else "no_ack"
            else:
                code = classify(raw.body)
                if code != "ok" and code not in examples:
                    examples[code] = orjson.dumps(raw.body).decode()[:300]
            replies.append(Reply(c.index, c.node, sent_at[i], raw.acked_at, code))
        return replies, spread, examples

    async def close_all(self) -> None:
        for raw in self.clients:
            if raw.reader is not None:
                raw.reader.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await asyncio.gather(
                    *(raw.ws.close() for raw in self.clients), return_exceptions=True
                )


def worker_main(job: WorkerJob, pipe: Connection) -> None:
    """Process entry point (spawned). Exits when the parent says stop, closes the pipe
    or the job's lifetime runs out, whichever comes first."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        loop_factory = None

    async def bounded() -> None:
        async with asyncio.timeout(job.max_lifetime_s):
            await Worker(job, pipe).run()

    with contextlib.suppress(EOFError, BrokenPipeError, TimeoutError, KeyboardInterrupt):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(bounded())


# -- the parent side ---------------------------------------------------------------


def split(clients: Sequence[Client], workers: int) -> list[tuple[Client, ...]]:
    """Contiguous blocks, so each worker has clients of every node (nodes alternate)."""
    n = len(clients)
    return [tuple(clients[w * n // workers : (w + 1) * n // workers]) for w in range(workers)]


class WorkerPool:
    """Spawned worker processes with a pipe each (LoadGen here, CommentLoad in
    scripts/comment_loadgen.py)."""

    def __init__(self) -> None:
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[Connection] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def spawn(self, target: Callable[..., None], *args: Any) -> None:
        """One more worker running ``target(*args, pipe)`` in a fresh interpreter."""
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=target, args=(*args, theirs), daemon=True)
        proc.start()
        theirs.close()
        self.procs.append(proc)
        self.pipes.append(mine)

    async def gather(self, timeout_s: float) -> list[Any]:
        """One message from each worker, in order; TimeoutError past ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        return [await asyncio.to_thread(_recv, pipe, deadline) for pipe in self.pipes]

    async def close(self) -> None:
        """Ask every worker to stop, give them 10 s in all, then kill what is left."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("stop",))
        deadline = time.monotonic() + 10
        for proc in self.procs:
            await asyncio.to_thread(proc.join, max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        for pipe in self.pipes:
            pipe.close()
        self.procs, self.pipes = [], []


def _recv(pipe: Connection, deadline: float) -> Any:
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("a load generator worker did not answer in time")
    return pipe.recv()


class LoadGen(WorkerPool):
    def __init__(
        self,
        urls: Sequence[str],
        tokens: Sequence[str | None],
        *,
        workers: int = 4,
        connect_concurrency: int = 64,
        connect_timeout_s: float = 20.0,
        max_lifetime_s: float = 300.0,
    ) -> None:
        self.urls = tuple(urls)
        clients = [Client(i, i % len(urls), t) for i, t in enumerate(tokens)]
        self.jobs = [
            WorkerJob(w, self.urls, block, connect_concurrency, connect_timeout_s, max_lifetime_s)
            for w, block in enumerate(split(clients, max(1, min(workers, len(clients)))))
        ]
        self.connect_timeout_s = connect_timeout_s
        super().__init__()

    async def start(self) -> ConnectStats:
        """Spawn the workers and connect every client; returns the merged connect stats."""
        started = time.monotonic()
        for job in self.jobs:
            self.spawn(worker_main, job)
        total = ConnectStats()
        budget = self.connect_timeout_s + 30 + len(self.jobs[0].clients) / 100
        for tag, stats in await self.gather(budget):
            assert tag == "ready", tag
            total.connected += stats.connected
            total.failed += stats.failed
            total.errors.update(stats.errors)
        total.seconds = time.monotonic() - started
        return total

    async def fire(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        unique: str | None = None,
        lead_s: float = DEFAULT_LEAD_S,
        deadline_s: float = 30.0,
    ) -> RoundResult:
        """Every connected client sends ``event`` at the same instant (``unique`` names a
        payload field given a distinct value per client and round); waits for the acks."""
        fire_at = time.monotonic() + lead_s
        for pipe in self.pipes:
            pipe.send(("fire", event, payload, unique, fire_at, deadline_s))
        replies: list[Reply] = []
        spreads: list[float] = []
        examples: dict[str, str] = {}
        for tag, (worker_replies, spread, seen) in await self.gather(lead_s + deadline_s + 30):
            assert tag == "result", tag
            replies.extend(worker_replies)
            spreads.append(spread)
            examples = seen | examples
        replies.sort(key=lambda r: r.client)
        return RoundResult(event, fire_at, replies, spreads, examples)


# -- tokens ------------------------------------------------------------------------


def mint_tokens(secret: str, count: int, prefix: str = "bench", ttl_s: int = 3600) -> list[str]:
    """Viewer tokens for ``count`` distinct users. Tokens are verified statelessly (JWT
    signed with the nodes' shared secret), so the users need no database rows."""
    from typing import cast

    from livecommerce.auth import Auth, Principal, Role
    from livecommerce.persistence.repositories import Users

    auth = Auth(cast(Users, None), secret, ttl_s)  # issue() never touches the repository
    return [auth.issue(Principal(f"{prefix}-{i}", f"buyer {i}", Role.VIEWER)) for i in range(count)]


# -- command line ------------------------------------------------------------------


def summary(result: RoundResult) -> dict[str, Any]:
    lat = result.latencies_ms()
    nodes = sorted({r.node for r in result.replies})
    return {
        "event": result.event,
        "clients": len(result.replies),
        "acked": len(result.acked),
        "codes": dict(result.codes()),
        "last_ack_s": round(result.last_ack_s(), 4),
        "acks_per_s": round(result.acks_per_s(), 1),
        "acks_per_s_by_node": [round(result.acks_per_s(n), 1) for n in nodes],
        "latency_ms": {
            "p50": round(percentile(lat, 50), 2),
            "p99": round(percentile(lat, 99), 2),
            "max": round(max(lat, default=0.0), 2),
            "mean": round(statistics.fmean(lat), 2) if lat else 0.0,
        },
        "send_spread_ms": [round(s * 1000, 1) for s in result.send_spread_s],
        "examples": result.examples,
    }


async def _cli(args: argparse.Namespace) -> int:
    tokens: list[str | None]
    if args.secret:
        tokens = list(mint_tokens(args.secret, args.clients, args.user_prefix))
    else:
        tokens = [None] * args.clients
    gen = LoadGen(args.url, tokens, workers=args.workers, connect_concurrency=args.concurrency)
    try:
        stats = await gen.start()
        print(f"connected {stats.connected}, failed {stats.failed} in {stats.seconds:.2f}s")
        for error, n in stats.errors.most_common(5):
            print(f"  {n} x {error}")
        payload = orjson.loads(args.payload)
        for _ in range(args.rounds):
            result = await gen.fire(
                args.event, payload, unique=args.unique or None, deadline_s=args.deadline
            )
            print(orjson.dumps(summary(result), option=orjson.OPT_INDENT_2).decode())
    finally:
        await gen.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True, help="node base url (repeat)")
    parser.add_argument("--secret", default="", help="JWT secret (omit: anonymous clients)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="connects in flight/worker")
    parser.add_argument("--event", default="bench:noop")
    parser.add_argument("--payload", default="{}", help="JSON object sent by every client")
    parser.add_argument("--unique", default="", help="payload field made unique per client")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds to wait for acks")
    parser.add_argument("--user-prefix", default="loadgen")
    args = parser.parse_args(argv)
    return asyncio.run(_cli(args))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
