"""Redis Cluster engine: the Redis engine with cluster connections and sharded pub/sub.

Keys, scripts and fan-out logic are :class:`RedisEngine`'s. Every key a script touches
shares one hash tag (``keys.py``: ``{room:<id>}`` per room, ``{pk}``, ``{timers}``), so
each script runs whole on the master serving that slot; the cluster refuses a script
whose keys span slots (CROSSSLOT), which the engine test suite run against a real
cluster would show. What differs here is plumbing only:

* commands go through redis-py's ``RedisCluster`` (slot map, MOVED/ASK redirections), with
  no retries after a connection error, as on one server;
* room and user channels use sharded pub/sub: the publish scripts SPUBLISH on the room's
  own channel (same hash tag, so the message stays in that shard) and the node SSUBSCRIBEs
  on a connection to that master (``redis_bus.ShardedBus``). Requires Redis >= 7.0;
* no auto-pipelining (``redis_autopipe.py`` is for one server only): a batch would have
  to be split per master, and a cluster pipeline cannot carry EVALSHA.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import MaxConnectionsError

from livecommerce.engine.redis import CONNECTION, RedisEngine
from livecommerce.engine.redis_bus import Bus, ShardedBus
from livecommerce.engine.redis_common import Arg, Client, guard


class _QueueingCluster(RedisCluster):
    """redis-py's cluster client, made to behave under a burst:

    * callers wait (up to ``wait_s``) for a free connection instead of failing with
      MaxConnectionsError, like the one-server engine's blocking pool: at most
      ``permits`` commands are in flight, so no master's pool (``permits`` plus room for
      pipelines) runs dry;
    * the slot map is loaded before a command is routed: redis-py routes a command issued
      while its map is (re)loading to an arbitrary master, which answers MOVED;
    * a MOVED reply only patches that slot (``reinitialize_steps=0``): redis-py's default
      closes the whole client every fifth MOVED, failing every command in flight.
    """

    def __init__(self, *args: Any, permits: int, wait_s: float, **kwargs: Any) -> None:
        kwargs["max_connections"] = permits + 32
        kwargs["reinitialize_steps"] = 0
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(permits)
        self._wait_s = wait_s

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._permits.acquire()
        except TimeoutError:
            raise MaxConnectionsError("no free connection to the cluster") from None
        try:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)
        finally:
            self._permits.release()


def seed_nodes(url: str) -> tuple[str, list[ClusterNode]]:
    """``redis://h1:7000,redis://h2:7001`` (or ``redis://h1:7000,h2:7001``): the first URL
    (its credentials and options apply to every node) and the other seeds."""
    parts = [part.strip() for part in url.split(",") if part.strip()]
    if not parts:
        raise ValueError("no Redis Cluster seed in the url")
    others = []
    for part in parts[1:]:
        found = urlsplit(part if "://" in part else f"redis://{part}")
        others.append(ClusterNode(found.hostname or "127.0.0.1", found.port or 6379))
    return parts[0], others


class RedisClusterEngine(RedisEngine):
    kind = "redis-cluster"
    publish_command = "SPUBLISH"

    def _make_client(self, url: str) -> Client:
        first, others = seed_nodes(url)
        return _QueueingCluster.from_url(
            first, startup_nodes=others, permits=self.max_connections, wait_s=5.0, **CONNECTION
        )

    @property
    def cluster(self) -> RedisCluster:
        assert isinstance(self._redis, RedisCluster)
        return self._redis

    async def _connect(self) -> None:
        # Learn the slot map now, so the first burst is routed right away. A cluster
        # that cannot be reached is not fatal (as on one server): commands retry it.
        with contextlib.suppress(Exception):
            await self.cluster.initialize()
        await super()._connect()

    def _make_bus(self, handler: Callable[[dict[str, Any]], Awaitable[None]]) -> Bus:
        options = parse_url(seed_nodes(self.url)[0])
        connection = {**CONNECTION, "username": options.get("username")}
        connection["password"] = options.get("password")
        connection["ssl"] = options.get("connection_class") is SSLConnection
        return ShardedBus(self.node_id, handler, self.cluster, self.subscribe_timeout_s, connection)

    async def drop_idle_connections(self) -> None:
        """Nothing to do: on a connection error redis-py's cluster client already drops the
        failed master's idle connections and reloads the slot map before the next command
        (dropping more here would close connections other callers just took)."""

    @guard
    async def _ping(self) -> None:
        # Ready when every master answers: a master down takes its rooms with it.
        await self.cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    async def _run_each(self, op: str, calls: list[tuple[list[str], list[Arg]]]) -> None:
        # A cluster pipeline cannot carry EVALSHA: one call each, concurrently.
        script = self._scripts[op]
        await asyncio.gather(*(script(keys=k, args=a) for k, a in calls))
