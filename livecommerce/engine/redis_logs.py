"""Durable logs on Redis: a stream per room (written by the atomic steps, in the room's
slot) read through one consumer group per stream.

An entry a node read but did not acknowledge stays pending in the group. The same node
reads it again first thing next time (its handler raised: retry now, as the in-process
engine does), which also keeps it from looking idle; if the node died instead, any node
claims it with XAUTOCLAIM once it has been idle ``CLAIM_IDLE_MS``, so the write is finished
elsewhere. Acknowledged entries are deleted: the stream is a queue.
"""

from __future__ import annotations

from typing import Any

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
        # Always (re)create the group: after Redis lost its data the stream and its group
        # are gone although this process remembers having made them.
        self._grouped.discard(stream)
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
        streams: Any = await self.redis.smembers(keys.log_registry(log))
        for stream in sorted(streams):
            if len(entries) >= count:
                break
            try:
                entries += await self._read(stream, count - len(entries))
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream was lost and written anew (without the group): make it again.
                self._grouped.discard(stream)
                entries += await self._read(stream, count - len(entries))
        return entries

    async def _read(self, stream: str, count: int) -> list[LogEntry]:
        await self._group(stream)
        # This consumer's own unacknowledged entries first (re-reading resets their idle
        # time), then entries another consumer left idle, then new ones.
        mine: Any = await self.redis.xreadgroup(GROUP, self.consumer, {stream: "0"}, count=count)
        batch: list[tuple[str, dict[str, Any]]] = [item for _, items in mine for item in items]
        if len(batch) < count:
            claimed: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=count - len(batch)
            )
            batch += claimed[1]
        if len(batch) < count:
            fresh: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=count - len(batch)
            )
            batch += [item for _, items in fresh for item in items]
        # Pending entries deleted from the stream (trimmed) read back empty: drop them from
        # the group, or they would take up every read of this consumer forever.
        gone = [entry_id for entry_id, data in batch if not data]
        if gone:
            await self.redis.xack(stream, GROUP, *gone)
        return [LogEntry(stream, entry_id, data) for entry_id, data in batch if data]

    async def ack(self, entries: list[LogEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
