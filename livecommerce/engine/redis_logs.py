"""Durable logs on Redis: a stream per room (written by the atomic steps, in the room's
slot) read through one consumer group per stream (consumer: the node id).

An entry a node read but did not acknowledge stays pending in the group. While its batch
is being handled the node does not hand it out again (concurrent drains on one node get
different entries, as in-process). When the handler fails the batch is released and this
node reads it again first thing next time, which also keeps it from looking idle; if the
node died instead, any node claims it with XAUTOCLAIM once it has been idle
``CLAIM_IDLE_MS``, so the write is finished elsewhere. A node restarted under the same id
reads its old pending entries again at once. Acknowledged entries are deleted: the stream
is a queue.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError

from livecommerce.engine import keys
from livecommerce.engine.base import LogEntry
from livecommerce.engine.redis_common import Client

GROUP = "writers"
CLAIM_IDLE_MS = 5_000


class RedisLogs:
    def __init__(self, redis: Client, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self._grouped: set[str] = set()
        #: (stream, id) handed to a handler here and neither acknowledged nor released
        self._inflight: set[tuple[str, str]] = set()
        #: One read at a time, so an entry is marked in flight before the next read looks.
        self._reading = asyncio.Lock()

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
        async with self._reading:
            streams: Any = await self.redis.smembers(keys.log_registry(log))
            for stream in sorted(streams):
                if len(entries) >= count:
                    break
                try:
                    entries += await self._read(stream, count - len(entries))
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    # The stream was lost and written anew (without the group): make it
                    # again; what this node had in flight there is gone with it.
                    self._grouped.discard(stream)
                    self._inflight = {e for e in self._inflight if e[0] != stream}
                    entries += await self._read(stream, count - len(entries))
            self._inflight.update((e.stream, e.id) for e in entries)
        return entries

    async def _read(self, stream: str, count: int) -> list[LogEntry]:
        await self._group(stream)
        # This consumer's own unacknowledged entries first (a released batch, or what it
        # had before a restart), then entries another consumer left idle, then new ones.
        batch = await self._mine(stream, count)
        if len(batch) < count:
            claimed: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=count - len(batch)
            )
            # One of ours outlived the idle time: still being handled here, not again.
            batch += [e for e in claimed[1] if (stream, e[0]) not in self._inflight]
        if len(batch) < count:
            fresh: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=count - len(batch)
            )
            batch += [item for _, items in fresh for item in items]
        # Pending entries deleted from the stream (trimmed) read back empty: drop them from
        # the group, or they would take up this consumer's reads forever.
        gone = [entry_id for entry_id, data in batch if not data]
        if gone:
            await self.redis.xack(stream, GROUP, *gone)
        return [LogEntry(stream, entry_id, data) for entry_id, data in batch if data]

    async def _mine(self, stream: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` of this consumer's pending entries that are not in flight."""
        found: list[tuple[str, dict[str, Any]]] = []
        cursor = "0"
        while len(found) < count:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {stream: cursor}, count=count
            )
            items: list[tuple[str, dict[str, Any]]] = [i for _, page in reply for i in page]
            found += [item for item in items if (stream, item[0]) not in self._inflight]
            if len(items) < count:
                break
            cursor = items[-1][0]
        return found[:count]

    def release(self, entries: list[LogEntry]) -> None:
        """Their handler failed: offer them again on the next read."""
        self._inflight.difference_update((e.stream, e.id) for e in entries)

    async def ack(self, entries: list[LogEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
        self._inflight.difference_update((e.stream, e.id) for e in entries)
