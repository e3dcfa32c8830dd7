"""Auto-pipelining for the one-server Redis engine: every command issued during one
event-loop iteration goes out as one pipeline, in one write over one pooled connection.

Why: in a flash sale thousands of buyers call Redis at the same instant, and redis-py's
per-call overhead (a pool acquire/release guarded by an asyncio.Condition and timeouts, a
socket write and a read per command) is a large share of a node's CPU. Batched, that cost
is paid once per pipeline instead of once per command.

What does not change: the pipeline is not a transaction (no MULTI/EXEC), so each command
or script still runs atomically on its own, exactly once; redis-py's response callbacks
apply as before; each caller gets its own reply or its own exception (a NOSCRIPT reply
reaches only that caller, whose ``AsyncScript`` reloads the script and calls again). When
the connection fails, every caller of that batch gets the same exception class, so
``guard`` turns it into ``Unavailable``; nothing is re-sent. A caller cancelled before its
batch left is dropped from it; once sent, its reply is simply not delivered.

Only the commands below are batched: the ones the engine sends that neither block nor
change the connection's state. Anything else (BLPOP, XREADGROUP ... BLOCK, WAIT, SELECT,
MULTI/WATCH ...) takes redis-py's normal path, and so do ``pipeline()`` and ``pubsub()``,
which use their own connections from the same pool. Redis Cluster (``redis_cluster.py``)
does not auto-pipeline: a batch would have to be split per master.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

#: Commands the engine sends (primitives, scripts, logs, send_to_user, ping).
BATCHED = frozenset(
    {
        "GET", "SET", "INCRBY", "DEL", "SADD", "SREM", "SISMEMBER", "SCARD", "SMEMBERS",
        "ZINCRBY", "EVALSHA", "SCRIPT LOAD", "PUBLISH", "PING",
        "XGROUP CREATE", "XAUTOCLAIM", "XREADGROUP", "XACK",
    }
)  # fmt: skip

_Queued = tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]


class LeanPacking:
    """Mixed into the pool's connection class: packs a command in one join. redis-py
    re-joins the growing buffer once per argument (a 13-argument EVALSHA copies it 13
    times): a third of the client's CPU per script call in the flash-sale burst. Same
    bytes on the wire; memoryviews (large values redis-py avoids copying) keep its path."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        encode = self.encoder.encode  # type: ignore[attr-defined]
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            value = arg.encode() if type(arg) is str else encode(arg)
            if isinstance(value, memoryview):
                return super().pack_command(*args)  # type: ignore[misc, no-any-return]
            parts += (b"$%d\r\n" % len(value), value, b"\r\n")
        return [b"".join(parts)]

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(chunk for command in commands for chunk in self.pack_command(*command))]


def lean_packing(pool: Any) -> Any:
    """``pool``, its connections packing commands with :class:`LeanPacking`."""
    base = pool.connection_class
    pool.connection_class = type(f"Lean{base.__name__}", (LeanPacking, base), {})
    return pool


def _blocks(args: tuple[Any, ...]) -> bool:
    """XREADGROUP with a BLOCK option (before STREAMS: after it come names and ids)."""
    for arg in args[1:]:
        if arg in (b"STREAMS", "STREAMS"):
            return False
        if arg in (b"BLOCK", "BLOCK"):
            return True
    return False


def _own_copy(exc: BaseException) -> BaseException:
    """One exception object per caller: raising one object from many tasks would chain
    all their tracebacks onto it."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        return exc
    copy.__cause__ = exc
    return copy


class AutoPipelineRedis(Redis):
    #: At most this many commands per pipeline; a bigger burst sends several at once, each
    #: on its own connection (so the pool bounds how many are in flight).
    batch_limit = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[_Queued] = []
        #: the loop a flush is scheduled on (a flag would stay set if that loop closed)
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Task[None]] = set()
        #: pipelines and commands sent so far (tests and benchmarks read these)
        self.batches_sent = 0
        self.commands_sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] not in BATCHED or (args[0] == "XREADGROUP" and _blocks(args)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((args, options, future))
        if self._flush_loop is not loop:
            # call_soon runs after every callback already due this iteration: all
            # commands issued meanwhile join this batch.
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._flush_loop = None
        # done: its caller was cancelled; another loop's: that loop closed with it queued
        queued = [i for i in self._queued if not i[2].done() and i[2].get_loop() is loop]
        self._queued = []
        for start in range(0, len(queued), self.batch_limit):
            task = asyncio.create_task(self._send(queued[start : start + self.batch_limit]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        pipe = self.pipeline(transaction=False)
        for args, options, _ in batch:
            pipe.pipeline_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        self.batches_sent += 1
        self.commands_sent += len(batch)
        try:
            # raise_on_error=False: a command's error reply comes back in its slot
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # aclose(): as if the connection had been closed
            self._fail(batch, RedisConnectionError("client closed with the command in flight"))
            raise
        except Exception as exc:  # the connection failed: the whole batch shares it
            self._fail(batch, exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    @staticmethod
    def _fail(batch: list[_Queued], exc: BaseException) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(_own_copy(exc))

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self._fail(self._queued, RedisConnectionError("client closed"))
        self._queued = []
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await super().aclose(close_connection_pool)
