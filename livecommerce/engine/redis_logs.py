"""Durable logs on Redis: a stream per room (written by the atomic steps, in the room's
slot) read through one consumer group per stream.

An entry a node read but did not acknowledge — it died mid-write — stays pending in the
group; any node claims it with XAUTOCLAIM once it has been idle ``claim_idle_ms``, so the
write is finished elsewhere. Acknowledged entries are deleted: the stream is a queue.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from livecommerce.engine import keys
from livecommerce.engine.base import LogEntry

GROUP = "writers"
CLAIM_IDLE_MS = 5_000


class RedisLogs:
    def __init__(self, redis: Redis, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self._grouped: set[str] = set()

    async def register(self, log: str, stream: str) -> None:
        await self.redis.sadd(keys.log_registry(log), stream)
        await self._group(stream)

    async def _group(self, stream: str) -> None:
        if stream in self._grouped:
            return
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)

    async def read(self, log: str, count: int) -> list[LogEntry]:
        entries: list[LogEntry] = []
        for stream in sorted(await self.redis.smembers(keys.log_registry(log))):
            if len(entries) >= count:
                break
            await self._group(stream)
            claimed = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=count
            )
            fresh = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=count
            )
            batch = list(claimed[1]) + [item for _, items in fresh for item in items]
            entries += [LogEntry(stream, entry_id, data) for entry_id, data in batch if data]
        return entries

    async def ack(self, entries: list[LogEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
