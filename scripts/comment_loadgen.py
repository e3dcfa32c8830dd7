"""Viewers and senders for the comments benchmark, cheap enough not to be what it measures.

10,000 viewers at ~14 frames/s each are 140k frames/s: more than Python can parse beside
the server on a 2-core box. So every connection is a bare ``asyncio.Protocol`` speaking
WebSocket + Engine.IO v4 + Socket.IO v5 by hand (no aiohttp client, no python-socketio),
and what it does with a frame depends on its role:

* **viewers** (most of them) parse frames only until their ``room:join`` ack; then they
  just scan each chunk with ``bytes.count`` (C speed) for ``"text":`` (one per comment
  item), ``["comment:batch"`` and the Engine.IO ping ``2`` (answered with ``3``), and set
  ``SO_RCVLOWAT`` so the kernel wakes them once per few kilobytes, not once per frame;
* **probes** (a sample spread over workers and nodes) parse every frame and record each
  comment's end-to-end latency = receive time - the wall-clock ms the sender put at the
  start of its text (``b<ms>.<sender> ...``; one clock on 127.0.0.1), plus ``dropped``;
* **senders** (also viewers of the room) send ``comment:send`` / ``like:send`` at a
  steady rate, each at its own phase of the second, so that the room's load is spread
  evenly instead of arriving in lockstep bursts. They scan like plain viewers and count
  their acks by their bytes (``[{"ok":true,"id"`` ...); a sender that is also a probe
  parses its acks and times them.

Client frames are masked with a zero key (valid, and no XOR to compute). Workers are
spawned processes driven over pipes; every one stops by itself (``lifetime_s``, and when
its pipe closes). Only the given URLs are contacted: the benchmark passes 127.0.0.1.

    load = CommentLoad(urls, room_id, workers=4)
    await load.start()
    await load.connect(viewers)              # Viewer(index, node, token, probe, sender)
    await load.run(Plan(senders=1000, comments_per_s=1.0))
    window = await load.measure(10.0)       # a Tally of everything in those 10 s
    await load.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import re
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from loadgen import ConnectStats, WorkerPool

PING = b"\x81\x012"  # server text frame "2": Engine.IO ping
KICK = b"\x81\x0241"  # server text frame "41": Socket.IO disconnect
WS_CLOSE = re.compile(rb"\x88[\x02-\x7d]\x03[\xe8-\xf3]")  # close frame, code 1000-1011
TEXT_KEY = b'"text":'
BATCH_KEY = b'["comment:batch"'
EVENT_KEY = b'42["'
COMMENT_OK = b'[{"ok":true,"id"'  # the ack of comment:send {"ok": true, "id"}
LIKE_OK = b'[{"ok":true}]'  # the ack of like:send
ACK_FAILED = b'[{"ok":false'
ERROR_CODE = re.compile(rb'\[\{"ok":false,"error":\{"code":"([a-z_]+)"')
TAIL = len(COMMENT_OK) - 1  # bytes kept from a chunk: a key may straddle two chunks
JOIN_ACK = 1
FLUSH_S = 0.05  # before a mark, plain viewers read everything for this long
FILLER = "this one looks great, does it ship abroad?"


# -- the wire --------------------------------------------------------------------------


def client_frame(payload: bytes) -> bytes:
    """A masked WebSocket text frame; the zero mask leaves the payload as it is."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x81, 0xFE, size)
    else:
        head = struct.pack("!BBQ", 0x81, 0xFF, size)
    return head + b"\0\0\0\0" + payload


PONG = client_frame(b"3")


def upgrade_request(host: str) -> bytes:
    return (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        f"Host: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def event_frame(ack_id: int, event: str, body: str) -> bytes:
    return client_frame(f'42{ack_id}["{event}",{body}]'.encode())


def straddling(tail: bytes, data: bytes, key: bytes) -> int:
    """Occurrences of ``key`` that begin in ``tail`` and end in ``data``."""
    k = len(key) - 1
    return (tail[-k:] + data[:k]).count(key)


def sent_at_ms(text: str) -> int | None:
    """The send time a sender wrote at the start of its text (``b<ms>.<sender> ...``)."""
    dot = text.find(".")
    if not text.startswith("b") or dot < 2:
        return None
    try:
        return int(text[1:dot])
    except ValueError:
        return None


# -- what a worker counts --------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Everything counted since the last mark, in one worker (or merged over all)."""

    bytes: int = 0
    events: int = 0  # Socket.IO events received, of any kind
    batches: int = 0  # comment:batch frames received
    items: int = 0  # comment items received (every viewer; "text" keys counted)
    probe_items: int = 0  # items received by probes (count-merged items weigh count)
    probe_dropped: int = 0  # the "dropped" the server reported to probes
    latency: Counter[int] = field(default_factory=Counter)  # ms -> probe items
    comments_sent: int = 0
    comments_ok: int = 0
    likes_sent: int = 0
    likes_ok: int = 0
    ack_latency: Counter[int] = field(default_factory=Counter)  # comment:send, ms
    send_lag: Counter[int] = field(default_factory=Counter)  # ms a send was late
    errors: Counter[str] = field(default_factory=Counter)  # ack error codes
    disconnects: int = 0
    down: Counter[str] = field(default_factory=Counter)  # why connections went away
    connected: int = 0  # open connections at the mark (a level, not a count)

    def add(self, other: Tally) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)


def quantile(hist: Counter[int], q: float) -> float:
    """Nearest-rank quantile (0..100) of a histogram of integer values; 0 if empty."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = max(1, round(q / 100 * total + 0.5))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


# -- roles and plans -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Viewer:
    index: int
    node: int  # which url
    token: str | None
    probe: bool = False
    sender: int = -1  # >= 0: this viewer sends, at phase sender / Plan.senders of a second


@dataclass(frozen=True, slots=True)
class Plan:
    """What the senders do, per sender: comments and like events per second."""

    senders: int  # how many senders there are in all (phases are spread over them)
    comments_per_s: float = 0.0
    likes_per_s: float = 0.0
    like_count: int = 1
    until_s: float = 600.0  # a hard stop, seconds from now


# -- one connection --------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One client. Frames are parsed until the join ack, and for ever on probes and senders;
    plain viewers then only scan (see the module docstring)."""

    def __init__(self, viewer: Viewer, room: bytes, host: str, tally: Tally, lowat: int) -> None:
        self.viewer = viewer
        self.room = room.decode()  # JSON-encoded room id, quotes included
        self.host = host
        self.tally = tally
        self.lowat = lowat
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.cheap = False
        self.closing = False
        self.tail = b""
        self.next_ack = JOIN_ACK
        self.pending: dict[int, tuple[bool, float]] = {}  # ack id -> (comment?, sent at)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(upgrade_request(self.host))

    def data_received(self, data: bytes) -> None:
        self.tally.bytes += len(data)
        if self.cheap:
            self._scan(data)
            return
        self.buf += data
        if not self.upgraded and not self._upgrade():
            return
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self._down("connection lost" if exc is None else type(exc).__name__)

    # -- sending

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, event: str, body: str, comment: bool, now: float) -> None:
        assert self.transport is not None
        self.next_ack += 1
        if not self.cheap:  # a scanning sender counts its acks instead of matching them
            self.pending[self.next_ack] = (comment, now)
        self.transport.write(event_frame(self.next_ack, event, body))

    def send_comment(self, wall_ms: int, now: float) -> None:
        text = f"b{wall_ms}.{self.viewer.sender} {FILLER}"
        self.send("comment:send", f'{{"room_id":{self.room},"text":"{text}"}}', True, now)
        self.tally.comments_sent += 1

    def send_like(self, count: int, now: float) -> None:
        self.send("like:send", f'{{"room_id":{self.room},"count":{count}}}', False, now)
        self.tally.likes_sent += 1

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- receiving

    def _upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            self._fail(f"upgrade refused: {status[:80]!r}")
            return False
        del self.buf[: end + 4]
        self.upgraded = True
        return True

    def _frames(self) -> None:
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2 and not self.cheap:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            self._frame(buf[pos] & 0x0F, bytes(buf[pos + head : end]))
            pos = end
        rest = bytes(buf[pos:])
        buf.clear()
        if self.cheap:
            self._scan(rest)
        else:
            buf += rest

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            self._down("websocket close")
        elif opcode != 1:
            return
        elif payload == b"2":
            self._write(PONG)
        elif payload.startswith(b"42"):
            self._event(payload)
        elif payload.startswith(b"43"):
            self._ack(payload)
        elif payload.startswith(b"0{"):  # Engine.IO open: Socket.IO connect with the token
            auth = {"token": self.viewer.token} if self.viewer.token else {}
            self._write(client_frame(b"40" + orjson.dumps(auth)))
        elif payload.startswith(b"40"):
            self._write(event_frame(JOIN_ACK, "room:join", f'{{"room_id":{self.room}}}'))
        elif payload.startswith(b"44"):
            self._fail("refused: " + payload[2:120].decode(errors="replace"))
        elif payload.startswith(b"41") or payload == b"1":
            self._down("disconnected by the server")

    def _event(self, payload: bytes) -> None:
        t = self.tally
        t.events += 1
        if not payload.startswith(BATCH_KEY, 2):
            return
        t.batches += 1
        if self.viewer.probe:
            self._probe(orjson.loads(payload[2:])[1])
        else:
            t.items += payload.count(TEXT_KEY)

    def _probe(self, batch: dict[str, Any]) -> None:
        t, now_ms = self.tally, time.time() * 1000
        for item in batch.get("items", ()):
            n = int(item.get("count", 1))
            t.items += n
            t.probe_items += n
            sent = sent_at_ms(str(item.get("text", "")))
            if sent is not None:
                t.latency[max(0, int(now_ms - sent))] += n
        t.probe_dropped += int(batch.get("dropped", 0))

    def _ack(self, payload: bytes) -> None:
        bracket = payload.find(b"[")
        ack_id = int(payload[2:bracket])
        args = orjson.loads(payload[bracket:])
        body = args[0] if args and isinstance(args[0], dict) else {}
        ok = body.get("ok") is True
        if ack_id == JOIN_ACK:
            if ok:
                self._joined()
            else:
                self._fail(f"room:join: {body.get('error')}")
            return
        comment, sent = self.pending.pop(ack_id, (None, 0.0))
        if comment is None:
            return
        t = self.tally
        if comment:
            t.comments_ok += ok
            t.ack_latency[int(1000 * (time.monotonic() - sent))] += 1
        else:
            t.likes_ok += ok
        if not ok:
            error = body.get("error")
            t.errors[str(error.get("code") if isinstance(error, dict) else "bad_ack")] += 1

    def _joined(self) -> None:
        if self.ready.done():
            return
        self.ready.set_result(None)
        if self.viewer.probe:
            return
        self.cheap = True
        if self.lowat:
            self.set_lowat(self.lowat)

    def set_lowat(self, size: int) -> None:
        """The kernel wakes this reader once ``size`` bytes wait (FIN and RST at once)."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)

    def _scan(self, data: bytes) -> None:
        """A plain viewer's whole reading: counts and pings, on the raw bytes."""
        t, tail = self.tally, self.tail
        t.items += data.count(TEXT_KEY) + straddling(tail, data, TEXT_KEY)
        t.batches += data.count(BATCH_KEY) + straddling(tail, data, BATCH_KEY)
        t.events += data.count(EVENT_KEY) + straddling(tail, data, EVENT_KEY)
        if self.viewer.sender >= 0:
            self._scan_acks(data)
        window = tail[-2:] + data
        for _ in range(window.count(PING)):
            self._write(PONG)
        if KICK in window or (b"\x88" in data and WS_CLOSE.search(tail[-3:] + data)):
            self._down("disconnected by the server")
        self.tail = data[-TAIL:] if len(data) >= TAIL else (tail + data)[-TAIL:]

    def _scan_acks(self, data: bytes) -> None:
        t, tail = self.tally, self.tail
        t.comments_ok += data.count(COMMENT_OK) + straddling(tail, data, COMMENT_OK)
        t.likes_ok += data.count(LIKE_OK) + straddling(tail, data, LIKE_OK)
        failed = data.count(ACK_FAILED) + straddling(tail, data, ACK_FAILED)
        if failed:
            codes = [c.decode() for c in ERROR_CODE.findall(tail + data)] or ["?"]
            t.errors.update(codes[:failed])

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.close()

    def _down(self, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        if self.ready.done():
            self.tally.disconnects += 1
            self.tally.down[why] += 1
        else:
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()


# -- the worker process ----------------------------------------------------------------


class Worker:
    def __init__(self, urls: Sequence[str], room_id: str, pipe: Connection) -> None:
        self.addrs = [urlsplit(u) for u in urls]
        self.room = orjson.dumps(room_id)
        self.pipe = pipe
        self.tally = Tally()
        self.conns: list[Conn] = []
        self.pacer: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            while True:
                command, *args = await asyncio.to_thread(self.pipe.recv)
                if command == "stop":
                    return
                self.pipe.send(await getattr(self, command)(*args))
        finally:
            if self.pacer is not None:
                self.pacer.cancel()
            for conn in self.conns:
                conn.close()

    async def connect(
        self, viewers: Sequence[Viewer], concurrency: int, timeout_s: float, lowat: int
    ) -> ConnectStats:
        stats, started = ConnectStats(), time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def one(viewer: Viewer) -> None:
            async with gate:
                try:
                    self.conns.append(await self._open(viewer, timeout_s, lowat))
                    stats.connected += 1
                except (OSError, TimeoutError, ConnectionError) as exc:
                    stats.failed += 1
                    stats.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1

        await asyncio.gather(*(one(v) for v in viewers))
        stats.seconds = time.monotonic() - started
        return stats

    async def _open(self, viewer: Viewer, timeout_s: float, lowat: int) -> Conn:
        addr = self.addrs[viewer.node]
        assert addr.hostname is not None and addr.port is not None
        conn = Conn(viewer, self.room, addr.netloc, self.tally, lowat)
        try:
            async with asyncio.timeout(timeout_s):
                loop = asyncio.get_running_loop()
                await loop.create_connection(lambda: conn, addr.hostname, addr.port)
                await conn.ready
        except BaseException:
            conn.close()
            raise
        return conn

    async def run(self, plan: Plan | None, start_at: float) -> bool:
        """(Re)start the senders on ``plan`` from the instant ``start_at``; None stops them."""
        if self.pacer is not None:
            self.pacer.cancel()
            self.pacer = None
        if plan is not None:
            self.pacer = asyncio.create_task(self._pace(plan, start_at))
        return True

    async def _pace(self, plan: Plan, start_at: float) -> None:
        """Each sender at its own phase of the period, so the room's load is even."""
        heap: list[tuple[float, int, int]] = []
        for i, conn in enumerate(self.conns):
            if conn.viewer.sender < 0:
                continue
            phase = conn.viewer.sender / max(1, plan.senders)
            if plan.comments_per_s > 0:
                heap.append((start_at + phase / plan.comments_per_s, 0, i))
            if plan.likes_per_s > 0:
                heap.append((start_at + ((phase + 0.5) % 1) / plan.likes_per_s, 1, i))
        if not heap:
            return
        period = [1 / r if r > 0 else 0.0 for r in (plan.comments_per_s, plan.likes_per_s)]
        heapq.heapify(heap)
        stop = time.monotonic() + plan.until_s
        while heap[0][0] < stop:
            now, wall_ms = time.monotonic(), int(time.time() * 1000)
            while heap[0][0] <= now:
                due, kind, i = heap[0]
                self._send(self.conns[i], kind, plan, wall_ms, now)
                self.tally.send_lag[int(1000 * (now - due))] += 1
                heapq.heapreplace(heap, (due + period[kind], kind, i))
            await asyncio.sleep(max(0.0, heap[0][0] - time.monotonic()))

    @staticmethod
    def _send(conn: Conn, kind: int, plan: Plan, wall_ms: int, now: float) -> None:
        if not conn.alive:
            return
        if kind == 0:
            conn.send_comment(wall_ms, now)
        else:
            conn.send_like(plan.like_count, now)

    async def mark(self, at: float) -> Tally:
        """What was counted since the last mark, taken at the instant ``at``. Plain viewers
        read with SO_RCVLOWAT 1 around the instant, or up to a few kilobytes each would
        still wait in the kernel, uncounted, and blur the window's edges."""
        await asyncio.sleep(max(0.0, at - FLUSH_S - time.monotonic()))
        self._lowat(flush=True)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tally, self.tally = self.tally, Tally()
        for conn in self.conns:
            conn.tally = self.tally
        self._lowat(flush=False)
        tally.connected = sum(1 for c in self.conns if c.alive)
        return tally

    def _lowat(self, flush: bool) -> None:
        for conn in self.conns:
            if conn.cheap and conn.lowat and conn.alive:
                conn.set_lowat(1 if flush else conn.lowat)


def worker_main(urls: Sequence[str], room_id: str, lifetime_s: float, pipe: Connection) -> None:
    """Process entry point (spawned): serves the parent until it says stop, its pipe
    closes, or ``lifetime_s`` runs out."""
    import uvloop

    raise_fd_limit()

    async def bounded() -> None:
        async with asyncio.timeout(lifetime_s):
            await Worker(urls, room_id, pipe).serve()

    with contextlib.suppress(EOFError, BrokenPipeError, TimeoutError, KeyboardInterrupt):
        uvloop.run(bounded())


def raise_fd_limit() -> int:
    """Soft open-file limit up to the hard one (one fd per connection); returns it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the parent side -------------------------------------------------------------------


class CommentLoad(WorkerPool):
    """Worker processes holding the viewers; viewer i lives in worker i % workers."""

    def __init__(
        self, urls: Sequence[str], room_id: str, *, workers: int = 4, lifetime_s: float = 900
    ) -> None:
        super().__init__()
        self.urls = tuple(urls)
        self.room_id = room_id
        self.workers = workers
        self.lifetime_s = lifetime_s

    async def start(self) -> None:
        for _ in range(self.workers):
            self.spawn(worker_main, self.urls, self.room_id, self.lifetime_s)

    async def connect(
        self,
        viewers: Sequence[Viewer],
        *,
        concurrency: int = 32,
        timeout_s: float = 30.0,
        lowat: int = 4096,
    ) -> ConnectStats:
        """Connect and join every viewer; returns when all have joined or failed."""
        shares = [[v for v in viewers if v.index % self.workers == w] for w in range(self.workers)]
        for pipe, share in zip(self.pipes, shares, strict=True):
            pipe.send(("connect", share, concurrency, timeout_s, lowat))
        total = ConnectStats()
        budget = timeout_s + 30 + len(viewers) / 50
        for stats in await self.gather(budget):
            total.connected += stats.connected
            total.failed += stats.failed
            total.errors.update(stats.errors)
            total.seconds = max(total.seconds, stats.seconds)
        return total

    async def run(self, plan: Plan | None, lead_s: float = 0.2) -> None:
        """Senders follow ``plan`` (None: stop sending) from an instant shared by all."""
        at = time.monotonic() + lead_s
        for pipe in self.pipes:
            pipe.send(("run", plan, at))
        await self.gather(lead_s + 10)

    async def mark(self, lead_s: float = 0.1) -> Tally:
        """Counts since the previous mark, merged; every worker cuts at the same instant."""
        at = time.monotonic() + lead_s
        for pipe in self.pipes:
            pipe.send(("mark", at))
        merged = Tally()
        for tally in await self.gather(lead_s + 15):
            merged.add(tally)
        return merged
