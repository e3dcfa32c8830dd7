"""Redis engine: shared state in Redis, fan-out over per-room pub/sub channels.

Every multi-step write is one Lua script from ``lua/`` (each says which race it closes).
Wire format of a room envelope (channel and history): ``<seq>\\n<event>\\n<json>``; of a
user envelope: ``<event>\\n<json>``. The json never holds ``room_id``/``seq``.

A node subscribes to a room's channel only while it has local members (``redis_bus.py``
keeps the subscriptions across dropped connections). The bus hands messages, in order, to
a worker task, so a slow sink never stops the listener from confirming subscriptions.
After a reconnect each room is back-filled from history before the live messages that
follow, so sinks still see every durable broadcast once and in seq order.

This class is the one-server engine and, with the connection plumbing swapped
(``redis_cluster.py``), the Redis Cluster one: keys, scripts and fan-out are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livecommerce import jsonutil
from livecommerce.engine import keys
from livecommerce.engine.base import Broadcast, DueTimer, Engine, LogEntry
from livecommerce.engine.redis_autopipe import AutoPipelineRedis, lean_packing
from livecommerce.engine.redis_bus import Bus
from livecommerce.engine.redis_common import Arg, Client, cancel_and_wait, guard, register_scripts
from livecommerce.engine.redis_logs import RedisLogs
from livecommerce.engine.redis_primitives import RedisPrimitives

log = structlog.get_logger(__name__)

_TIMER_KEYS = [keys.TIMERS_DUE, keys.TIMERS_PAYLOAD, keys.TIMERS_TOKEN]
#: How a connection behaves: no client-side retries (re-sending a script whose reply was
#: lost could run it twice); idle connections are checked before use.
CONNECTION: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 2.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": 10,
    "retry": Retry(NoBackoff(), 0),
    # no CLIENT SETINFO: two more round trips (and a package-metadata read) per connection
    "driver_info": None,
}

Job = Callable[[], Awaitable[None]]


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


class RedisEngine(RedisPrimitives, Engine):
    kind = "redis"
    durable_logs = True
    #: How the publish scripts and send_to_user publish (a cluster shards its pub/sub).
    publish_command = "PUBLISH"
    #: How long a first join waits for Redis to confirm the SUBSCRIBE.
    subscribe_timeout_s = 3.0
    #: A sink call taking longer is abandoned, so one stuck sink cannot stall the node.
    sink_timeout_s = 5.0
    #: Connections per node for commands (pub/sub has its own); more callers wait up to
    #: 5 s. A burst queues here rather than opening more: each new connection costs a
    #: handshake, and at 512 opening them was 45 % of a node's CPU in the flash-sale
    #: benchmark (docs/benchmarks.md). Commands take well under a millisecond, so 128
    #: connections carry tens of thousands a second.
    max_connections = 128

    def __init__(self, url: str, node_id: str, **engine_options: Any) -> None:
        super().__init__(node_id, **engine_options)
        self.url = url
        self._redis: Client = self._make_client(url)
        self._scripts = register_scripts(self._redis)
        self._logs = RedisLogs(self._redis, node_id)
        # late-bound, so a test can wrap _on_bus_message on a running engine
        self._bus = self._make_bus(lambda message: self._on_bus_message(message))
        self._channel_rooms: dict[str, str] = {}
        self._channel_users: dict[str, str] = {}
        self._room_seen: dict[str, int] = {}  # room -> last seq handed to delivery
        # room -> last seq a back-fill delivered; the live copies of those are dropped.
        # Only then: outside a back-fill a seq is never judged a duplicate, because after
        # Redis lost its data seqs restart and old numbers are new broadcasts.
        self._replayed_upto: dict[str, int] = {}
        self._inbox: asyncio.Queue[Job] = asyncio.Queue(maxsize=10_000)
        self._deliverer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ plumbing
    # What a Redis Cluster does differently (redis_cluster.py overrides these).

    def _make_client(self, url: str) -> Client:
        # A blocking pool queues bursts (a flash sale) instead of failing them. It still
        # replaces connections Redis closed before using them. Commands issued in one
        # event-loop iteration share one pipeline, packed in one join (redis_autopipe.py).
        pool = BlockingConnectionPool.from_url(
            url, max_connections=self.max_connections, timeout=5.0, **CONNECTION
        )
        return AutoPipelineRedis.from_pool(lean_packing(pool))

    def _make_bus(self, handler: Callable[[dict[str, Any]], Awaitable[None]]) -> Bus:
        assert isinstance(self._redis, Redis)
        return Bus(self.node_id, handler, self._redis, self.subscribe_timeout_s)

    async def drop_idle_connections(self) -> None:
        assert isinstance(self._redis, Redis)
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    @guard
    async def _ping(self) -> None:
        await self._redis.ping()

    async def _run_each(self, op: str, calls: list[tuple[list[str], list[Arg]]]) -> None:
        """Run script ``op`` once per (keys, args), in one round trip."""
        script = self._scripts[op]
        assert isinstance(self._redis, Redis)
        async with self._redis.pipeline(transaction=False) as pipe:
            for script_keys, args in calls:
                await script(keys=script_keys, args=args, client=pipe)
            await pipe.execute()

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self) -> None:
        # Redis being down at start is not fatal: the bus keeps retrying and primitives
        # raise Unavailable meanwhile; ping() reports readiness.
        self._bus.start()
        self._deliverer = asyncio.create_task(
            self._deliver_inbox(), name=f"engine-deliver-{self.node_id}"
        )

    async def _disconnect(self) -> None:
        await self._bus.close()
        if self._deliverer is not None:
            await cancel_and_wait([self._deliverer])
            self._deliverer = None
        await self._redis.aclose()

    # ------------------------------------------------------------------ fan-out

    @guard
    async def _publish(
        self, room_id: str, event: str, payload: dict[str, Any], history: bool
    ) -> int:
        durable = "1" if history else "0"
        channel = keys.room_channel(room_id)
        args: list[Arg] = [event, _wire(payload), durable, self.history_size, channel]
        args.append(self.publish_command)
        return int(await self._scripts["publish"](keys=_room_keys(room_id), args=args))

    @guard
    async def _publish_if_changed(
        self, room_id: str, event: str, dedupe: str, value: int, payload: dict[str, Any]
    ) -> int | None:
        script_keys = [keys.room_seq(room_id), keys.room_last_values(room_id)]
        args = [dedupe, str(value), _wire(payload), keys.room_channel(room_id), event]
        args.append(self.publish_command)
        seq = await self._scripts["publish_if_changed"](keys=script_keys, args=args)
        return None if seq is None else int(seq)

    @guard
    async def _replay(self, room_id: str, since_seq: int) -> list[Broadcast] | None:
        found = await self._scripts["replay"](keys=_room_keys(room_id), args=[since_seq])
        if found is None:
            return None
        return [_parse_room(room_id, envelope) for envelope in found]

    @guard
    async def _last_seq(self, room_id: str) -> int:
        return int(await self._redis.get(keys.room_seq(room_id)) or 0)

    @guard
    async def _send_to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        envelope = f"{event}\n{jsonutil.dumps(payload)}"  # kept whole: not a room broadcast
        await self._redis.execute_command(
            self.publish_command, keys.user_channel(user_id), envelope
        )

    @guard
    async def _subscribe_room(self, room_id: str) -> None:
        channel = keys.room_channel(room_id)
        # Where a back-fill after a reconnect would start if nothing arrives before it.
        self._room_seen[room_id] = await self._last_seq(room_id)
        self._channel_rooms[channel] = room_id
        try:
            await self._bus.subscribe(channel)
        except BaseException:
            self._forget_room(room_id)
            raise

    async def _unsubscribe_room(self, room_id: str) -> None:
        self._forget_room(room_id)
        await self._bus.unsubscribe(keys.room_channel(room_id))

    def _forget_room(self, room_id: str) -> None:
        self._channel_rooms.pop(keys.room_channel(room_id), None)
        self._room_seen.pop(room_id, None)
        self._replayed_upto.pop(room_id, None)

    @guard
    async def _subscribe_user(self, user_id: str) -> None:
        channel = keys.user_channel(user_id)
        self._channel_users[channel] = user_id
        try:
            await self._bus.subscribe(channel)
        except BaseException:
            self._channel_users.pop(channel, None)
            raise

    async def _unsubscribe_user(self, user_id: str) -> None:
        channel = keys.user_channel(user_id)
        self._channel_users.pop(channel, None)
        await self._bus.unsubscribe(channel)

    async def _on_bus_message(self, message: dict[str, Any]) -> None:
        if message["type"] == "message":
            await self._on_envelope(message["channel"], message["data"])
        elif message["type"] == "subscribe" and message["backfill"]:
            await self._backfill(message["channel"])

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

    @guard
    async def _presence_report(self, counts: dict[str, int]) -> None:
        ttl_ms = max(1, int(self.presence_ttl_s * 1000))
        calls: list[tuple[list[str], list[Arg]]] = [
            (_presence_keys(room_id), [self.node_id, count, ttl_ms])
            for room_id, count in counts.items()
        ]
        await self._run_each("presence_report", calls)

    @guard
    async def _presence_total(self, room_id: str) -> int:
        return int(await self._scripts["presence_total"](keys=_presence_keys(room_id)))

    # ------------------------------------------------------------------ timers

    @guard
    async def _timer_add(self, name: str, at_ms: int, payload: dict[str, Any]) -> None:
        args: list[Arg] = [name, at_ms, jsonutil.dumps(payload)]
        await self._scripts["timer_add"](keys=_TIMER_KEYS, args=args)

    @guard
    async def _timer_remove(self, name: str) -> bool:
        return bool(await self._scripts["timer_remove"](keys=_TIMER_KEYS, args=[name]))

    @guard
    async def _timer_claim(self, now: int, lease_ms: int, limit: int) -> list[DueTimer]:
        prefix = f"{self.node_id}:{uuid.uuid4().hex[:12]}:"
        flat = await self._scripts["timer_claim"](
            keys=_TIMER_KEYS, args=[now, lease_ms, limit, prefix]
        )
        return [
            DueTimer(flat[i], jsonutil.loads(flat[i + 1]), flat[i + 2])
            for i in range(0, len(flat), 3)
        ]

    @guard
    async def _timer_extend(self, name: str, token: str, until_ms: int) -> bool:
        args: list[str | int] = [name, token, until_ms]
        return bool(await self._scripts["timer_extend"](keys=_TIMER_KEYS, args=args))

    @guard
    async def _timer_done(self, name: str, token: str) -> None:
        await self._scripts["timer_done"](keys=_TIMER_KEYS, args=[name, token])

    # ------------------------------------------------------------------ feature steps

    @guard
    async def _atomic(self, op: str, keys: list[str], args: list[str]) -> Any:
        result = await self._scripts[op](keys=keys, args=args)
        return None if result is None else jsonutil.loads(result)

    @guard
    async def _log_register(self, log: str, stream: str) -> None:
        await self._logs.register(log, stream)

    @guard
    async def _log_read(self, log: str, count: int) -> list[LogEntry]:
        return await self._logs.read(log, count)

    @guard
    async def _log_ack(self, log: str, entries: list[LogEntry]) -> None:
        await self._logs.ack(entries)

    async def _log_release(self, log: str, entries: list[LogEntry]) -> None:
        # Still pending in the group; this node offers them again on its next read.
        self._logs.release(entries)
