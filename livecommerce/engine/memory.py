"""In-process engine: one node, no Redis.

A :class:`MemoryStore` plays the part Redis plays for :class:`RedisEngine`: it holds the
shared state and the subscriptions. Every engine gets a store of its own unless one is
passed in; several engines on one store behave like nodes of one cluster, which lets the
contract tests exercise fan-out, presence and timer races without Redis.

Payloads cross the store as JSON (like they cross Redis), so a feature that works here
cannot rely on sharing mutable dicts or on values Redis could not carry.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from livecommerce import jsonutil
from livecommerce.engine.base import Broadcast, DueTimer, Engine, LogEntry, Reservation
from livecommerce.engine.memory_comment_ops import COMMENT_OPS
from livecommerce.engine.memory_draw_ops import DRAW_OPS
from livecommerce.engine.memory_group_ops import GROUP_OPS
from livecommerce.engine.memory_ops import OPS, OpsState
from livecommerce.engine.memory_pk_ops import PK_OPS

#: A store sweeps expired keys and idle rate buckets once per this many writes.
_SWEEP_EVERY = 1024


def _wire(payload: dict[str, Any]) -> bytes:
    """Encode a payload as it travels: without ``room_id``/``seq`` (the receiver adds them)."""
    if "room_id" in payload or "seq" in payload:
        payload = {k: v for k, v in payload.items() if k not in ("room_id", "seq")}
    return jsonutil.dumpb(payload)


def _broadcast(room_id: str, seq: int, event: str, body: bytes) -> Broadcast:
    payload = jsonutil.loads(body)
    payload["room_id"] = room_id
    payload["seq"] = seq
    return Broadcast(room_id, seq, event, payload)


@dataclass(eq=False)
class _Room:
    seq: int = 0
    #: lowest seq that may still be in history; older durable broadcasts were trimmed
    floor: int = 0
    history: deque[tuple[int, str, bytes]] = field(default_factory=deque)
    last: dict[str, str] = field(default_factory=dict)
    #: node_id -> (connections, monotonic deadline)
    presence: dict[str, tuple[int, float]] = field(default_factory=dict)
    subscribers: set[MemoryEngine] = field(default_factory=set)
    outbox: deque[Broadcast] = field(default_factory=deque)
    draining: bool = False


@dataclass(eq=False)
class _Timer:
    due: int
    payload: bytes
    token: str | None = None


class MemoryStore:
    """State shared by the :class:`MemoryEngine` nodes built on it (what Redis is to them)."""

    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}
        self.users: dict[str, set[MemoryEngine]] = {}
        self.kv: dict[str, str] = {}
        self.deadlines: dict[str, float] = {}  # kv key -> monotonic expiry
        self.sets: dict[str, set[str]] = {}
        self.zsets: dict[str, dict[str, float]] = {}
        self.hashes: dict[str, dict[str, int]] = {}
        self.buckets: dict[str, tuple[float, float, float]] = {}  # tokens, at, full_after_s
        self.timers: dict[str, _Timer] = {}
        self.ops = OpsState()  # what the features' atomic steps keep
        self._writes = 0

    def room(self, room_id: str) -> _Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room()
        return room

    def get(self, key: str) -> str | None:
        deadline = self.deadlines.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self.delete(key)
        return self.kv.get(key)

    def put(self, key: str, value: str, ttl_ms: int | None) -> None:
        self.kv[key] = value
        if ttl_ms is None:
            self.deadlines.pop(key, None)
        else:
            self.deadlines[key] = time.monotonic() + ttl_ms / 1000
        self._wrote()

    def delete(self, key: str) -> bool:
        """Like Redis DEL: removes the key whatever its type."""
        self.deadlines.pop(key, None)
        found = [store.pop(key, None) is not None for store in self._keyspaces()]
        return any(found)

    def _keyspaces(self) -> tuple[dict[str, Any], ...]:
        return (self.kv, self.sets, self.zsets, self.hashes, self.buckets)

    def _wrote(self) -> None:
        # Without this, idempotency records and rate buckets of long-gone users pile up.
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = time.monotonic()
            for key in [k for k, at in self.deadlines.items() if at <= now]:
                self.delete(key)
            idle = [k for k, (_, at, full) in self.buckets.items() if now - at >= full]
            for key in idle:
                del self.buckets[key]


_OPS = {**OPS, **COMMENT_OPS, **DRAW_OPS, **PK_OPS, **GROUP_OPS}


class MemoryEngine(Engine):
    """Single-process engine. ``store`` shares state with other engines (tests only)."""

    kind = "memory"

    def __init__(self, node_id: str, *, store: MemoryStore | None = None, **options: Any):
        super().__init__(node_id, **options)
        self.store = store if store is not None else MemoryStore()
        self._log_retry: dict[str, list[LogEntry]] = {}
        self._tokens = itertools.count(1)
        self._drainers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def _connect(self) -> None:
        return None

    async def _disconnect(self) -> None:
        for room in self.store.rooms.values():
            room.subscribers.discard(self)
        for engines in self.store.users.values():
            engines.discard(self)

    async def _ping(self) -> None:
        return None

    # ------------------------------------------------------------------ fan-out

    async def _publish(
        self, room_id: str, event: str, payload: dict[str, Any], history: bool
    ) -> int:
        room = self.store.room(room_id)
        body = _wire(payload)  # before seq: a payload that cannot be encoded consumes nothing
        room.seq += 1
        if history:
            self._remember(room, room.seq, event, body)
        await self._fan_out(room, _broadcast(room_id, room.seq, event, body))
        return room.seq

    def _remember(self, room: _Room, seq: int, event: str, body: bytes) -> None:
        room.history.append((seq, event, body))
        while len(room.history) > self.history_size:
            trimmed_seq, _, _ = room.history.popleft()
            room.floor = trimmed_seq + 1

    async def _publish_if_changed(
        self, room_id: str, event: str, dedupe: str, value: int, payload: dict[str, Any]
    ) -> int | None:
        room = self.store.room(room_id)
        if room.last.get(dedupe) == str(value):
            return None
        room.last[dedupe] = str(value)
        room.seq += 1
        await self._fan_out(room, _broadcast(room_id, room.seq, event, _wire(payload)))
        return room.seq

    async def _fan_out(self, room: _Room, message: Broadcast) -> None:
        # Whoever finds the room idle delivers its queue in order; concurrent (or re-entrant,
        # from inside a sink) publishers only enqueue. Sinks thus see seq order without a
        # lock a sink could deadlock on.
        room.outbox.append(message)
        if not room.draining:
            await self._drain(room)

    async def _drain(self, room: _Room) -> None:
        room.draining = True
        try:
            while room.outbox:
                message = room.outbox.popleft()
                for engine in list(room.subscribers):
                    await engine._deliver_room(message)
        finally:
            room.draining = False
            if room.outbox:  # the drainer was cancelled: hand the rest to a task
                task = asyncio.create_task(self._drain(room))
                self._drainers.add(task)
                task.add_done_callback(self._drainers.discard)

    async def _replay(self, room_id: str, since_seq: int) -> list[Broadcast] | None:
        room = self.store.rooms.get(room_id) or _Room()
        if since_seq > room.seq or since_seq + 1 < room.floor:
            return None
        return [
            _broadcast(room_id, seq, event, body)
            for seq, event, body in room.history
            if seq > since_seq
        ]

    async def _last_seq(self, room_id: str) -> int:
        room = self.store.rooms.get(room_id)
        return room.seq if room is not None else 0

    async def _send_to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        body = jsonutil.dumpb(payload)
        for engine in list(self.store.users.get(user_id, ())):
            await engine._deliver_user(user_id, event, jsonutil.loads(body))

    async def _subscribe_room(self, room_id: str) -> None:
        self.store.room(room_id).subscribers.add(self)

    async def _unsubscribe_room(self, room_id: str) -> None:
        self.store.room(room_id).subscribers.discard(self)

    async def _subscribe_user(self, user_id: str) -> None:
        self.store.users.setdefault(user_id, set()).add(self)

    async def _unsubscribe_user(self, user_id: str) -> None:
        engines = self.store.users.get(user_id)
        if engines is not None:
            engines.discard(self)
            if not engines:
                del self.store.users[user_id]

    # ------------------------------------------------------------------ presence

    async def _presence_report(self, counts: dict[str, int]) -> None:
        deadline = time.monotonic() + self.presence_ttl_s
        for room_id, count in counts.items():
            presence = self.store.room(room_id).presence
            if count > 0:
                presence[self.node_id] = (count, deadline)
            else:
                presence.pop(self.node_id, None)

    async def _presence_total(self, room_id: str) -> int:
        room = self.store.rooms.get(room_id)
        if room is None:
            return 0
        now = time.monotonic()
        for node in [n for n, (_, until) in room.presence.items() if until <= now]:
            del room.presence[node]
        return sum(count for count, _ in room.presence.values())

    # ------------------------------------------------------------------ timers

    async def _timer_add(self, name: str, at_ms: int, payload: dict[str, Any]) -> None:
        # A fresh _Timer has no token: the old run's ack must not delete the new schedule.
        self.store.timers[name] = _Timer(at_ms, jsonutil.dumpb(payload))

    async def _timer_remove(self, name: str) -> bool:
        return self.store.timers.pop(name, None) is not None

    async def _timer_claim(self, now: int, lease_ms: int, limit: int) -> list[DueTimer]:
        due = sorted(
            (timer.due, name) for name, timer in self.store.timers.items() if timer.due <= now
        )[:limit]
        claimed = []
        for _, name in due:
            timer = self.store.timers[name]
            timer.due = now + lease_ms
            timer.token = f"{self.node_id}:{next(self._tokens)}"
            claimed.append(DueTimer(name, jsonutil.loads(timer.payload), timer.token))
        return claimed

    async def _timer_extend(self, name: str, token: str, until_ms: int) -> bool:
        timer = self.store.timers.get(name)
        if timer is None or timer.token != token:
            return False
        timer.due = until_ms
        return True

    async def _timer_done(self, name: str, token: str) -> None:
        timer = self.store.timers.get(name)
        if timer is not None and timer.token == token:
            del self.store.timers[name]

    # ------------------------------------------------------------------ primitives

    async def incr(self, key: str, by: int = 1) -> int:
        value = int(self.store.get(key) or 0) + by
        self.store.kv[key] = str(value)  # keeps any ttl, like INCRBY
        return value

    async def get_int(self, key: str) -> int:
        return int(self.store.get(key) or 0)

    async def kv_get(self, key: str) -> str | None:
        return self.store.get(key)

    async def kv_set(self, key: str, value: str, ttl_ms: int | None = None) -> None:
        self.store.put(key, value, ttl_ms)

    async def kv_set_nx(self, key: str, value: str, ttl_ms: int | None = None) -> bool:
        if self.store.get(key) is not None:
            return False
        self.store.put(key, value, ttl_ms)
        return True

    async def kv_delete(self, key: str) -> bool:
        self.store.get(key)  # drops it if expired: an expired key counts as absent
        return self.store.delete(key)

    async def set_add(self, key: str, member: str) -> bool:
        members = self.store.sets.setdefault(key, set())
        added = member not in members
        members.add(member)
        return added

    async def set_remove(self, key: str, member: str) -> bool:
        members = self.store.sets.get(key)
        if members is None or member not in members:
            return False
        members.discard(member)
        if not members:
            del self.store.sets[key]
        return True

    async def set_has(self, key: str, member: str) -> bool:
        return member in self.store.sets.get(key, ())

    async def set_card(self, key: str) -> int:
        return len(self.store.sets.get(key, ()))

    async def set_members(self, key: str) -> set[str]:
        return set(self.store.sets.get(key, ()))

    async def zincr(self, key: str, member: str, by: float) -> float:
        scores = self.store.zsets.setdefault(key, {})
        scores[member] = scores.get(member, 0.0) + by
        return scores[member]

    async def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        scores = self.store.zsets.get(key, {})
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return ranked[: max(n, 0)]

    async def remember(self, key: str, value: str, ttl_ms: int) -> str | None:
        first = self.store.get(key)
        if first is None:
            self.store.put(key, value, ttl_ms)
        return first

    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> int:
        now = time.monotonic()
        tokens, at, _ = self.store.buckets.get(key, (float(burst), now, 0.0))
        tokens = min(float(burst), tokens + (now - at) * rate_per_s)
        wait = 0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = max(1, math.ceil((1 - tokens) * 1000 / rate_per_s))
        self.store.buckets[key] = (tokens, now, burst / rate_per_s)
        self.store._wrote()
        return wait

    async def reserve(
        self, pool_key: str, holds_key: str, holder: str, qty: int, limit: int
    ) -> Reservation:
        if qty < 1:
            raise ValueError("qty must be positive")
        left = int(self.store.get(pool_key) or 0)
        holds = self.store.hashes.get(holds_key, {})
        held = holds.get(holder, 0)
        if left < qty:
            return Reservation(False, "sold_out", left, held)
        if held + qty > limit:
            return Reservation(False, "limit_exceeded", left, held)
        self.store.kv[pool_key] = str(left - qty)
        self.store.hashes.setdefault(holds_key, {})[holder] = held + qty
        return Reservation(True, None, left - qty, held + qty)

    async def release(self, pool_key: str, holds_key: str, holder: str, qty: int) -> int:
        holds = self.store.hashes.get(holds_key, {})
        released = min(holds.get(holder, 0), qty)
        if released <= 0:
            return 0
        holds[holder] -= released
        if holds[holder] == 0:
            del holds[holder]
        await self.incr(pool_key, released)
        return released

    # ------------------------------------------------------------------ feature steps

    async def _atomic(self, op: str, keys: list[str], args: list[str]) -> Any:
        # No await inside: one step on one event loop is atomic, as the Lua script is.
        return _OPS[op](self.store.ops, keys, args)

    async def _log_register(self, log: str, stream: str) -> None:
        self.store.ops.registries.setdefault(log, set()).add(stream)

    async def _log_read(self, log: str, count: int) -> list[LogEntry]:
        # Each entry goes to one reader at a time (concurrent drains must not write the
        # same batch twice); a batch whose handler failed is released and offered first.
        retry = self._log_retry.pop(log, [])
        batch, rest = retry[:count], retry[count:]
        if rest:  # several failed batches (concurrent drains): keep what this read can't take
            self._log_retry[log] = rest
        for stream in sorted(self.store.ops.registries.get(log, ())):
            queue = self.store.ops.logs.get(stream)
            while queue and len(batch) < count:
                entry_id, data = queue.popleft()
                batch.append(LogEntry(stream, str(entry_id), data))
        return batch

    async def _log_ack(self, log: str, entries: list[LogEntry]) -> None:
        return None  # read entries already left the queue

    async def _log_release(self, log: str, entries: list[LogEntry]) -> None:
        self._log_retry.setdefault(log, [])[:0] = entries
