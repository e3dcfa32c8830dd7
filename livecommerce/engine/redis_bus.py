"""Pub/sub plumbing of the Redis engines: the connections a node receives its room and
user channels on, kept subscribed across drops and slot moves.

A :class:`Lane` is one pub/sub connection and the channels it carries. Its listener task
reads the connection and hands every message, in order, to the engine's handler; a
subscription is confirmed to the caller only after the handler saw Redis confirm it. When
the connection drops, the lane reconnects with backoff, subscribes its channels again and
flags each confirmation "backfill": the engine replays what was published in the gap before
the lane reads on, so sinks still see every durable broadcast once and in seq order.

:class:`Bus` (one server) has one lane: SUBSCRIBE, and the engine PUBLISHes.
:class:`ShardedBus` (Redis Cluster) has one lane per master, carrying the channels whose
hash slot that master serves: sharded pub/sub (SSUBSCRIBE / SPUBLISH, Redis 7), so a
message travels inside its shard instead of across the whole cluster bus. One channel is
read through one lane, so a room's order holds. When a slot moves (resharding, failover)
the old master drops the subscription (a server-sent ``sunsubscribe``), or its connection
fails or answers MOVED; the bus then refreshes the slot map and moves the channel to the
lane of its new master, with a back-fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import ResponseError

from livecommerce.engine.redis_common import DOWN, cancel_and_wait
from livecommerce.errors import Unavailable

log = structlog.get_logger(__name__)

#: Receives ``{"type": "message", "channel", "data"}`` and, before the subscriber is told,
#: ``{"type": "subscribe", "channel", "backfill": bool}``.
Handler = Callable[[dict[str, Any]], Awaitable[None]]

_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 2.0
#: Sharded pub/sub's message types, named as the classic ones.
_KINDS = {"smessage": "message", "ssubscribe": "subscribe", "sunsubscribe": "unsubscribe"}


class Lane:
    """One pub/sub connection (from ``client``) and the channels it carries."""

    def __init__(self, bus: Bus, key: str, client: Redis) -> None:
        self.bus = bus
        self.key = key  # the master's "host:port" on a cluster
        self.name = f"{bus.node_id}@{key}"
        self.client = client
        self.channels: set[str] = set()
        self._pubsub: PubSub | None = None
        self._backfill_due: set[str] = set()
        #: unsubscribes we sent and Redis has not confirmed yet; any other unsubscribe
        #: is Redis dropping the channel (its slot moved to another master)
        self._leaving: Counter[str] = Counter()
        self.task = asyncio.create_task(self._listen(), name=f"engine-pubsub-{self.name}")

    async def add(self, channel: str, *, backfill: bool = False) -> None:
        self.channels.add(channel)
        if backfill:
            self._backfill_due.add(channel)
        if self._pubsub is not None:
            # on failure the listener reconnects and subscribes everything in channels
            with contextlib.suppress(*DOWN):
                await self._send(self._pubsub, True, [channel])

    async def remove(self, channel: str) -> None:
        self.channels.discard(channel)
        self._backfill_due.discard(channel)
        if self._pubsub is not None:
            self._leaving[channel] += 1
            with contextlib.suppress(*DOWN):
                await self._send(self._pubsub, False, [channel])

    def drop(self, channel: str) -> None:
        """Forget ``channel`` without telling Redis (it already dropped it, or is gone)."""
        self.channels.discard(channel)
        self._backfill_due.discard(channel)

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _send(self, pubsub: PubSub, subscribe: bool, channels: list[str]) -> None:
        if self.bus.sharded:
            await (pubsub.ssubscribe if subscribe else pubsub.sunsubscribe)(*channels)
        else:
            await (pubsub.subscribe if subscribe else pubsub.unsubscribe)(*channels)

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                pubsub = await self._open()
                backoff = _BACKOFF_MIN_S
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message)
            except (*DOWN, Unavailable, ResponseError) as exc:  # ResponseError: MOVED
                log.warning("pubsub_lost", lane=self.name, error=str(exc), retry_s=backoff)
            except Exception:  # a bug must not silence the node for good
                log.exception("pubsub_listener_failed", lane=self.name, retry_s=backoff)
            await self.close()
            if not await self.bus.lane_lost(self):
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _open(self) -> PubSub:
        pubsub = self.client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            raise
        # From here on add() sends its own SUBSCRIBE; everything carried before is in this
        # snapshot. No await in between, so no channel falls in the gap.
        self._pubsub = pubsub
        channels = sorted(self.channels)
        self._backfill_due = set(channels)
        self._leaving.clear()
        for batch in self.bus.batches(channels):
            await self._send(pubsub, True, batch)
        if channels:
            log.info("pubsub_resubscribed", lane=self.name, channels=len(channels))
        return pubsub

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = _KINDS.get(message["type"], message["type"]), message["channel"]
        if kind == "message":
            await self.bus.handler({"type": kind, "channel": channel, "data": message["data"]})
        elif kind == "subscribe":
            backfill = channel in self._backfill_due
            self._backfill_due.discard(channel)
            await self.bus.handler({"type": kind, "channel": channel, "backfill": backfill})
            if channel in self.channels:
                self.bus.confirm(channel)
        elif kind == "unsubscribe":
            if self._leaving[channel] > 0:
                self._leaving[channel] -= 1
            elif channel in self.channels:
                await self.bus.slot_moved(self, channel)


class Bus:
    """This node's subscriptions on one Redis server: one lane."""

    sharded = False

    def __init__(
        self, node_id: str, handler: Handler, client: Redis | None, subscribe_timeout_s: float
    ) -> None:
        self.node_id = node_id
        self.handler = handler
        self.subscribe_timeout_s = subscribe_timeout_s
        self._client = client
        self._lanes: dict[str, Lane] = {}
        self._routes: dict[str, Lane] = {}  # channel -> the lane carrying it
        self._confirmations: dict[str, asyncio.Future[None]] = {}

    def start(self) -> None:
        # Redis being down at start is not fatal: the listener keeps retrying.
        if self._client is not None:
            self._lanes["redis"] = Lane(self, "redis", self._client)

    async def close(self) -> None:
        lanes = list(self._lanes.values())
        self._lanes = {}
        await cancel_and_wait([lane.task for lane in lanes])
        for lane in lanes:
            await lane.close()

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirmed it (the listener resolves the future)."""
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            lane = await self._lane_for(channel)
            self._routes[channel] = lane
            await lane.add(channel)
            async with asyncio.timeout(self.subscribe_timeout_s):
                await confirmed
        except TimeoutError as exc:
            await self.unsubscribe(channel)
            raise Unavailable("redis did not confirm the subscription") from exc
        except BaseException:
            await self.unsubscribe(channel)
            raise

    async def unsubscribe(self, channel: str) -> None:
        self._confirmations.pop(channel, None)
        lane = self._routes.pop(channel, None)
        if lane is not None:
            await lane.remove(channel)

    def confirm(self, channel: str) -> None:
        confirmed = self._confirmations.pop(channel, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def lanes(self) -> dict[str, set[str]]:
        """Lane name -> the channels it carries (tests, diagnostics)."""
        return {name: set(lane.channels) for name, lane in self._lanes.items()}

    # -- what a sharded bus does differently ------------------------------------------

    async def _lane_for(self, channel: str) -> Lane:
        return self._lanes["redis"]

    def batches(self, channels: list[str]) -> list[list[str]]:
        """``channels`` split into the groups one SUBSCRIBE may carry."""
        return [channels] if channels else []

    async def lane_lost(self, lane: Lane) -> bool:
        """The lane's connection failed; returns whether it should reconnect."""
        return True

    async def slot_moved(self, lane: Lane, channel: str) -> None:
        """Redis dropped ``channel`` from ``lane`` on its own (never on one server)."""


class ShardedBus(Bus):
    """This node's subscriptions on a Redis Cluster: one lane per master, by hash slot."""

    sharded = True

    def __init__(
        self,
        node_id: str,
        handler: Handler,
        cluster: RedisCluster,
        subscribe_timeout_s: float,
        connection: dict[str, Any],
    ) -> None:
        super().__init__(node_id, handler, None, subscribe_timeout_s)
        self._cluster = cluster
        self._connection = connection  # how a lane connects (auth, timeouts)

    def start(self) -> None:
        """Lanes open on demand: a master's lane when a channel of its slots is wanted."""

    async def close(self) -> None:
        lanes = list(self._lanes.values())
        await super().close()
        for lane in lanes:
            await lane.client.aclose()

    async def _lane_for(self, channel: str) -> Lane:
        await self._cluster.initialize()  # the slot map (once; again after a failure)
        node = self._cluster.get_node_from_key(channel)
        if node is None:
            raise Unavailable(f"no master serves the slot of {channel}")
        lane = self._lanes.get(node.name)
        if lane is None:
            client = Redis(host=node.host, port=int(node.port), **self._connection)
            lane = self._lanes[node.name] = Lane(self, node.name, client)
        return lane

    def batches(self, channels: list[str]) -> list[list[str]]:
        # One SSUBSCRIBE may only name channels of one slot (CROSSSLOT otherwise).
        by_slot: defaultdict[int, list[str]] = defaultdict(list)
        for channel in channels:
            by_slot[key_slot(channel.encode())].append(channel)
        return list(by_slot.values())

    async def lane_lost(self, lane: Lane) -> bool:
        # Its master may be gone (failover) or have given slots away: move the channels
        # another master serves now; the rest wait here for the reconnect.
        with contextlib.suppress(Exception):  # cluster unreachable: keep them all here
            await self._cluster.nodes_manager.initialize()
            await self._reroute(lane, sorted(lane.channels), stay=True)
        if lane.channels:
            return True
        if self._lanes.get(lane.key) is lane:  # nothing left here (a master gone for good?)
            del self._lanes[lane.key]
        await lane.client.aclose()
        return False

    async def slot_moved(self, lane: Lane, channel: str) -> None:
        log.info("pubsub_slot_moved", lane=lane.name, channel=channel)
        with contextlib.suppress(Exception):  # the refresh failed: re-subscribe here
            await self._cluster.nodes_manager.initialize()
        await self._reroute(lane, [channel], stay=False)

    async def _reroute(self, lane: Lane, channels: list[str], *, stay: bool) -> None:
        """Move ``channels`` to their master's lane, to be back-filled once subscribed
        there. ``stay``: leave those the slot map still puts on ``lane`` alone."""
        for channel in channels:
            try:
                target = await self._lane_for(channel)
            except Exception as exc:
                log.warning("pubsub_reroute_failed", channel=channel, error=str(exc))
                target = lane
            if target is lane and stay:
                continue
            lane.drop(channel)
            if self._routes.get(channel) is lane:
                self._routes[channel] = target
            await target.add(channel, backfill=True)
