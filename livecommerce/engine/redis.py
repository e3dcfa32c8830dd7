"""Redis engine: shared state in Redis, fan-out over per-room pub/sub channels.

Every multi-step write is one Lua script from ``lua/`` (each says which race it closes).
Wire format of a room envelope (channel and history): ``<seq>\\n<event>\\n<json>``; of a
user envelope: ``<event>\\n<json>``. The json never holds ``room_id``/``seq``.

One pub/sub connection per node, subscribed to a room's channel only while the node has
local members. A listener task reads it and hands deliveries, in order, to a worker task,
so a slow sink never stops the listener from confirming subscriptions. When the connection
drops, the listener reconnects with backoff, re-subscribes and back-fills each room from
history, so sinks still see every durable broadcast once and in seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from livecommerce import jsonutil
from livecommerce.engine import keys
from livecommerce.engine.base import Broadcast, DueTimer, Engine, LogEntry, Reservation
from livecommerce.engine.redis_logs import RedisLogs
from livecommerce.errors import Unavailable

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Errors meaning "Redis cannot be reached / cannot serve" (BusyLoadingError is a
#: ConnectionError; OSError covers refused sockets and the builtin TimeoutError).
_DOWN = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
_LUA_DIR = Path(__file__).parent / "lua"
_INCLUDE = "--#include "
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 2.0
_TIMER_KEYS = [keys.TIMERS_DUE, keys.TIMERS_PAYLOAD, keys.TIMERS_TOKEN]

Job = Callable[[], Awaitable[None]]
Arg = str | int | float  # a Lua script argument


def _guard(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn "Redis is down" into :class:`Unavailable` (the scripts being atomic, a failed
    call changed nothing — except a timeout, where Redis may have run it)."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            result = await method(*args, **kwargs)
        except _DOWN as exc:
            # Idle pooled connections may be dead too (Redis restarted): drop them all now,
            # so one failure, not one per stale connection, tells us Redis went away.
            engine = args[0] if args else None
            if isinstance(engine, RedisEngine):
                await engine.drop_idle_connections()
            raise Unavailable(f"redis: {exc}") from exc
        # On Python 3.11 redis-py's asyncio.wait_for() can return a result and drop a
        # cancel that raced with it; re-raise it, or Engine.close() waits forever.
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        return result

    return guarded


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until done: one cancel can be dropped (see _guard)."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("engine_task_failed", task=task.get_name(), error=str(task.exception()))


def load_script(path: Path) -> str:
    """A script's text with its ``--#include <file>`` lines replaced by that file: Redis
    scripts cannot call each other, and helpers such as the token bucket live once."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith(_INCLUDE):
            lines.append((path.parent / line[len(_INCLUDE) :].strip()).read_text())
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _wire(payload: dict[str, Any]) -> str:
    if "room_id" in payload or "seq" in payload:
        payload = {k: v for k, v in payload.items() if k not in ("room_id", "seq")}
    return jsonutil.dumps(payload)


def _parse_room(room_id: str, envelope: str) -> Broadcast:
    seq, event, body = envelope.split("\n", 2)
    payload = jsonutil.loads(body)
    payload["room_id"] = room_id
    payload["seq"] = int(seq)
    return Broadcast(room_id, int(seq), event, payload)


def _room_keys(room_id: str) -> list[str]:
    return [keys.room_seq(room_id), keys.room_history(room_id), keys.room_history_floor(room_id)]


def _presence_keys(room_id: str) -> list[str]:
    return [keys.room_presence_counts(room_id), keys.room_presence_expiry(room_id)]


class RedisEngine(Engine):
    kind = "redis"
    durable_logs = True
    #: How long a first join waits for Redis to confirm the SUBSCRIBE.
    subscribe_timeout_s = 3.0
    #: A sink call taking longer is abandoned, so one stuck sink cannot stall the node.
    sink_timeout_s = 5.0
    #: Connections per node (one is the pub/sub connection); more callers wait up to 5 s.
    #: Sized for a flash-sale burst, which otherwise queues past the wait and fails.
    max_connections = 512

    def __init__(self, url: str, node_id: str, **engine_options: Any) -> None:
        super().__init__(node_id, **engine_options)
        self.url = url
        # No client-side retries: re-sending a script whose reply was lost could run it
        # twice. The pool still replaces connections Redis closed before using them.
        # A blocking pool queues bursts (a flash sale) instead of failing them.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=self.max_connections,
            timeout=5.0,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis.from_pool(pool)
        self._scripts = {
            path.stem: self._redis.register_script(load_script(path))
            for path in sorted(_LUA_DIR.glob("*.lua"))
            if not path.stem.startswith("_")  # helpers, inlined by load_script
        }
        self._logs = RedisLogs(self._redis, node_id)
        self._pubsub: PubSub | None = None
        self._wanted: set[str] = set()  # channels this node should be subscribed to
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._channel_rooms: dict[str, str] = {}
        self._channel_users: dict[str, str] = {}
        self._room_seen: dict[str, int] = {}  # room -> last seq handed to delivery
        # room -> last seq a back-fill delivered; the live copies of those are dropped.
        # Only then: outside a back-fill a seq is never judged a duplicate, because after
        # Redis lost its data seqs restart and old numbers are new broadcasts.
        self._replayed_upto: dict[str, int] = {}
        self._backfill_due: set[str] = set()  # channels re-subscribed after a reconnect
        self._inbox: asyncio.Queue[Job] = asyncio.Queue(maxsize=10_000)
        self._bus_tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self) -> None:
        # Redis being down at start is not fatal: the listener keeps retrying and
        # primitives raise Unavailable meanwhile; ping() reports readiness.
        self._bus_tasks = [
            asyncio.create_task(self._listen(), name=f"engine-pubsub-{self.node_id}"),
            asyncio.create_task(self._deliver_inbox(), name=f"engine-deliver-{self.node_id}"),
        ]

    async def _disconnect(self) -> None:
        await _cancel_and_wait(self._bus_tasks)
        self._bus_tasks = []
        await self._close_pubsub()
        await self._redis.aclose()

    async def drop_idle_connections(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    @_guard
    async def _ping(self) -> None:
        await self._redis.ping()

    # ------------------------------------------------------------------ fan-out

    @_guard
    async def _publish(
        self, room_id: str, event: str, payload: dict[str, Any], history: bool
    ) -> int:
        durable = "1" if history else "0"
        channel = keys.room_channel(room_id)
        args: list[Arg] = [event, _wire(payload), durable, self.history_size, channel]
        return int(await self._scripts["publish"](keys=_room_keys(room_id), args=args))

    @_guard
    async def _publish_if_changed(
        self, room_id: str, event: str, dedupe: str, value: int, payload: dict[str, Any]
    ) -> int | None:
        script_keys = [keys.room_seq(room_id), keys.room_last_values(room_id)]
        args = [dedupe, str(value), _wire(payload), keys.room_channel(room_id), event]
        seq = await self._scripts["publish_if_changed"](keys=script_keys, args=args)
        return None if seq is None else int(seq)

    @_guard
    async def _replay(self, room_id: str, since_seq: int) -> list[Broadcast] | None:
        found = await self._scripts["replay"](keys=_room_keys(room_id), args=[since_seq])
        if found is None:
            return None
        return [_parse_room(room_id, envelope) for envelope in found]

    @_guard
    async def _last_seq(self, room_id: str) -> int:
        return int(await self._redis.get(keys.room_seq(room_id)) or 0)

    @_guard
    async def _send_to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        envelope = f"{event}\n{jsonutil.dumps(payload)}"  # kept whole: not a room broadcast
        await self._redis.publish(keys.user_channel(user_id), envelope)

    @_guard
    async def _subscribe_room(self, room_id: str) -> None:
        channel = keys.room_channel(room_id)
        # Where a back-fill after a reconnect would start if nothing arrives before it.
        self._room_seen[room_id] = await self._last_seq(room_id)
        self._channel_rooms[channel] = room_id
        try:
            await self._bus_subscribe(channel)
        except BaseException:
            self._forget_room(room_id)
            raise

    async def _unsubscribe_room(self, room_id: str) -> None:
        self._forget_room(room_id)
        await self._bus_unsubscribe(keys.room_channel(room_id))

    def _forget_room(self, room_id: str) -> None:
        self._channel_rooms.pop(keys.room_channel(room_id), None)
        self._room_seen.pop(room_id, None)
        self._replayed_upto.pop(room_id, None)

    async def _subscribe_user(self, user_id: str) -> None:
        channel = keys.user_channel(user_id)
        self._channel_users[channel] = user_id
        try:
            await self._bus_subscribe(channel)
        except BaseException:
            self._channel_users.pop(channel, None)
            raise

    async def _unsubscribe_user(self, user_id: str) -> None:
        channel = keys.user_channel(user_id)
        self._channel_users.pop(channel, None)
        await self._bus_unsubscribe(channel)

    # ------------------------------------------------------------------ pub/sub connection

    async def _bus_subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirmed it (the listener resolves the future)."""
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        self._wanted.add(channel)
        try:
            if self._pubsub is not None:
                # on failure the listener reconnects and subscribes everything in _wanted
                with contextlib.suppress(*_DOWN):
                    await self._pubsub.subscribe(channel)
            async with asyncio.timeout(self.subscribe_timeout_s):
                await confirmed
        except TimeoutError as exc:
            await self._bus_unsubscribe(channel)
            raise Unavailable("redis did not confirm the subscription") from exc
        except BaseException:
            await self._bus_unsubscribe(channel)
            raise

    async def _bus_unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._confirmations.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(*_DOWN):
                await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                pubsub = await self._open_pubsub()
                backoff = _BACKOFF_MIN_S
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._on_bus_message(message)
            except (*_DOWN, Unavailable) as exc:
                log.warning("pubsub_lost", node=self.node_id, error=str(exc), retry_s=backoff)
            except Exception:  # a bug must not silence the node for good
                log.exception("pubsub_listener_failed", node=self.node_id, retry_s=backoff)
            await self._close_pubsub()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _open_pubsub(self) -> PubSub:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        # From here on _bus_subscribe sends its own SUBSCRIBE; everything wanted before
        # is in this snapshot. No await in between, so no channel falls in the gap.
        self._pubsub = pubsub
        channels = sorted(self._wanted)
        self._backfill_due = {c for c in channels if c in self._channel_rooms}
        if channels:
            await pubsub.subscribe(*channels)
            log.info("pubsub_resubscribed", node=self.node_id, channels=len(channels))
        return pubsub

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_bus_message(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            await self._on_envelope(channel, message["data"])
        elif kind == "subscribe":
            if channel in self._backfill_due:
                self._backfill_due.discard(channel)
                await self._backfill(channel)
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _on_envelope(self, channel: str, data: str) -> None:
        try:
            room_id = self._channel_rooms.get(channel)
            if room_id is not None:
                await self._enqueue_room(_parse_room(room_id, data))
            elif (user_id := self._channel_users.get(channel)) is not None:
                event, body = data.split("\n", 1)
                job = functools.partial(self._deliver_user, user_id, event, jsonutil.loads(body))
                await self._inbox.put(job)
        except (ValueError, jsonutil.JSONDecodeError):
            log.error("bad_envelope", channel=channel, data=data[:200])

    async def _enqueue_room(self, message: Broadcast, *, replayed: bool = False) -> None:
        room_id = message.room_id
        if room_id not in self._room_seen:
            return  # left the room meanwhile
        overlap = self._replayed_upto.get(room_id)
        if not replayed and overlap is not None:
            if message.seq <= overlap:
                return  # published between re-subscribing and the back-fill: sent already
            del self._replayed_upto[room_id]
        if replayed:
            self._replayed_upto[room_id] = message.seq
        self._room_seen[room_id] = message.seq
        await self._inbox.put(functools.partial(self._deliver_room, message))

    async def _backfill(self, channel: str) -> None:
        """After a reconnect: deliver what was published while we were not subscribed."""
        room_id = self._channel_rooms.get(channel)
        seen = self._room_seen.get(room_id) if room_id is not None else None
        if room_id is None or seen is None:
            return
        missed = await self._replay(room_id, seen)
        if missed is None:
            # trimmed, or Redis lost its data (seq restarted): clients re-sync from a
            # snapshot when they see the gap; carry on with what comes next.
            log.warning("pubsub_gap_unfillable", node=self.node_id, room_id=room_id, seq=seen)
            return
        for message in missed:
            await self._enqueue_room(message, replayed=True)

    async def _deliver_inbox(self) -> None:
        while True:
            job = await self._inbox.get()
            try:
                async with asyncio.timeout(self.sink_timeout_s):
                    await job()
            except TimeoutError:
                log.error("sink_timeout", node=self.node_id, timeout_s=self.sink_timeout_s)

    # ------------------------------------------------------------------ presence

    @_guard
    async def _presence_report(self, counts: dict[str, int]) -> None:
        ttl_ms = max(1, int(self.presence_ttl_s * 1000))
        report = self._scripts["presence_report"]
        async with self._redis.pipeline(transaction=False) as pipe:
            for room_id, count in counts.items():
                args: list[Arg] = [self.node_id, count, ttl_ms]
                await report(keys=_presence_keys(room_id), args=args, client=pipe)
            await pipe.execute()

    @_guard
    async def _presence_total(self, room_id: str) -> int:
        return int(await self._scripts["presence_total"](keys=_presence_keys(room_id)))

    # ------------------------------------------------------------------ timers

    @_guard
    async def _timer_add(self, name: str, at_ms: int, payload: dict[str, Any]) -> None:
        args: list[Arg] = [name, at_ms, jsonutil.dumps(payload)]
        await self._scripts["timer_add"](keys=_TIMER_KEYS, args=args)

    @_guard
    async def _timer_remove(self, name: str) -> bool:
        return bool(await self._scripts["timer_remove"](keys=_TIMER_KEYS, args=[name]))

    @_guard
    async def _timer_claim(self, now: int, lease_ms: int, limit: int) -> list[DueTimer]:
        prefix = f"{self.node_id}:{uuid.uuid4().hex[:12]}:"
        flat = await self._scripts["timer_claim"](
            keys=_TIMER_KEYS, args=[now, lease_ms, limit, prefix]
        )
        return [
            DueTimer(flat[i], jsonutil.loads(flat[i + 1]), flat[i + 2])
            for i in range(0, len(flat), 3)
        ]

    @_guard
    async def _timer_extend(self, name: str, token: str, until_ms: int) -> bool:
        args: list[str | int] = [name, token, until_ms]
        return bool(await self._scripts["timer_extend"](keys=_TIMER_KEYS, args=args))

    @_guard
    async def _timer_done(self, name: str, token: str) -> None:
        await self._scripts["timer_done"](keys=_TIMER_KEYS, args=[name, token])

    # ------------------------------------------------------------------ primitives

    @_guard
    async def incr(self, key: str, by: int = 1) -> int:
        return int(await self._redis.incrby(key, by))

    @_guard
    async def get_int(self, key: str) -> int:
        return int(await self._redis.get(key) or 0)

    @_guard
    async def kv_get(self, key: str) -> str | None:
        value = await self._redis.get(key)
        return None if value is None else str(value)

    @_guard
    async def kv_set(self, key: str, value: str, ttl_ms: int | None = None) -> None:
        await self._redis.set(key, value, px=ttl_ms)

    @_guard
    async def kv_set_nx(self, key: str, value: str, ttl_ms: int | None = None) -> bool:
        return bool(await self._redis.set(key, value, px=ttl_ms, nx=True))

    @_guard
    async def kv_delete(self, key: str) -> bool:
        return bool(await self._redis.delete(key))

    @_guard
    async def set_add(self, key: str, member: str) -> bool:
        return bool(await self._redis.sadd(key, member))

    @_guard
    async def set_remove(self, key: str, member: str) -> bool:
        return bool(await self._redis.srem(key, member))

    @_guard
    async def set_has(self, key: str, member: str) -> bool:
        return bool(await self._redis.sismember(key, member))

    @_guard
    async def set_card(self, key: str) -> int:
        return int(await self._redis.scard(key))

    @_guard
    async def set_members(self, key: str) -> set[str]:
        return {str(member) for member in await self._redis.smembers(key)}

    @_guard
    async def zincr(self, key: str, member: str, by: float) -> float:
        score = await self._redis.zincrby(key, by, member)
        return float(score or 0.0)  # never None: ZINCRBY always answers the score

    @_guard
    async def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        flat = await self._scripts["ztop"](keys=[key], args=[n])
        pairs = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
        return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))

    @_guard
    async def remember(self, key: str, value: str, ttl_ms: int) -> str | None:
        first = await self._scripts["remember"](keys=[key], args=[value, ttl_ms])
        return None if first is None else str(first)

    @_guard
    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> int:
        args: list[Arg] = [rate_per_s, burst]
        return int(await self._scripts["rate_limit"](keys=[key], args=args))

    @_guard
    async def reserve(
        self, pool_key: str, holds_key: str, holder: str, qty: int, limit: int
    ) -> Reservation:
        if qty < 1:
            raise ValueError("qty must be positive")
        ok, reason, left, held = await self._scripts["reserve"](
            keys=[pool_key, holds_key], args=[holder, qty, limit]
        )
        return Reservation(bool(ok), reason or None, int(left), int(held))

    @_guard
    async def release(self, pool_key: str, holds_key: str, holder: str, qty: int) -> int:
        released = await self._scripts["release"](keys=[pool_key, holds_key], args=[holder, qty])
        return int(released)

    # ------------------------------------------------------------------ feature steps

    @_guard
    async def _atomic(self, op: str, keys: list[str], args: list[str]) -> Any:
        result = await self._scripts[op](keys=keys, args=args)
        return None if result is None else jsonutil.loads(result)

    @_guard
    async def _log_register(self, log: str, stream: str) -> None:
        await self._logs.register(log, stream)

    @_guard
    async def _log_read(self, log: str, count: int) -> list[LogEntry]:
        return await self._logs.read(log, count)

    @_guard
    async def _log_ack(self, log: str, entries: list[LogEntry]) -> None:
        await self._logs.ack(entries)

    async def _log_release(self, log: str, entries: list[LogEntry]) -> None:
        # Still pending in the group; this node offers them again on its next read.
        self._logs.release(entries)
