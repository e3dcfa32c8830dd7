"""The engine seam: state, fan-out and timers that features code against.

Features never ask whether they run on one node or twenty. They call this class; the
in-process backend (``memory.py``) and the Redis backend (``redis.py``) differ only in the
``_``-prefixed storage steps at the bottom, the way python-socketio's pub/sub managers
differ only in ``_publish`` and ``_listen``. Everything else — local membership, presence
reporting, the online-count broadcaster, the timer loop — lives here, once.

Semantics every backend must keep (tests/engine/test_contract.py checks both):

* ``publish`` gives each room broadcast a per-room, strictly increasing ``seq`` and, unless
  ``history=False``, appends it to a bounded per-room history. Every node that has local
  members of the room (``room_local_join``) receives it, in seq order, exactly once, through
  the room sink. Nodes without local members receive nothing.
* ``replay(room_id, since_seq)`` returns the durable broadcasts with ``seq > since_seq``, or
  ``None`` when some of them were trimmed from history (or ``since_seq`` is in the future).
  Ephemeral broadcasts (``history=False``: online counts, like totals) consume a seq but are
  never replayed; the join snapshot carries their latest values.
* Keys come from ``keys.py``; atomic steps are atomic (one Lua script on Redis).
* Timers fire at-least-once and, barring a handler that outlives ``timer_lease_s``, exactly
  once cluster-wide: a claim leases the timer; the lease lapsing (its node died) makes it due
  again for any node. Handlers are written to be idempotent (state transitions), which makes
  the rare re-fire harmless.
* A backend that cannot reach its store raises :class:`livecommerce.errors.Unavailable`
  and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from livecommerce.engine import keys

log = structlog.get_logger(__name__)

#: Delivers a room broadcast to this node's local members of ``room_id``.
RoomSink = Callable[["Broadcast"], Awaitable[None]]
#: Delivers a private message to this node's local connections of ``user_id``.
UserSink = Callable[[str, str, dict[str, Any]], Awaitable[None]]
#: Runs a due timer: ``handler(key, payload)``.
TimerHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Consumes a batch of durable-log entries; raising leaves them to be delivered again.
LogHandler = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until done: on Python 3.11 ``asyncio.wait_for`` (used by redis-py) can
    swallow a cancel that races a result, so one ``cancel()`` is not always enough."""
    for _ in range(50):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)


#: Payload field of a stored timer holding its due time (epoch ms); handlers never see it.
DUE_KEY = "_due_ms"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One room broadcast as delivered: ``payload`` already holds ``room_id`` and ``seq``."""

    room_id: str
    seq: int
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Outcome of :meth:`Engine.reserve`.

    ``reason`` is ``None`` on success, else ``"sold_out"`` or ``"limit_exceeded"``.
    ``left`` is what remains in the pool afterwards; ``held`` what the holder now holds.
    """

    ok: bool
    reason: str | None
    left: int
    held: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DueTimer:
    name: str  # "<kind>:<key>"
    payload: dict[str, Any]
    token: str


class Engine(ABC):
    """Shared engine logic. Subclasses implement the storage steps (``_`` methods)."""

    kind: str = "abstract"
    #: Whether durable logs outlive this process (Redis streams do; in-process ones don't,
    #: so features drain them before acknowledging: "direct writes in-process").
    durable_logs: bool = False

    def __init__(
        self,
        node_id: str,
        *,
        history_size: int = 500,
        presence_ttl_s: float = 6.0,
        presence_refresh_s: float = 1.5,
        online_interval_s: float = 1.0,
        timer_poll_s: float = 0.1,
        timer_lease_s: float = 30.0,
    ) -> None:
        self.node_id = node_id
        self.history_size = history_size
        self.presence_ttl_s = presence_ttl_s
        self.presence_refresh_s = presence_refresh_s
        self.online_interval_s = online_interval_s
        self.timer_poll_s = timer_poll_s
        self.timer_lease_s = timer_lease_s
        self._room_sink: RoomSink | None = None
        self._user_sink: UserSink | None = None
        self._timer_handlers: dict[str, TimerHandler] = {}
        #: room_id -> local connections in it (presence) ; user_id -> local connections
        self._room_members: dict[str, int] = {}
        self._user_conns: dict[str, int] = {}
        self._presence_dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        #: handler tasks of the timers this node holds a lease on, and those timers
        self._running_timers: dict[asyncio.Task[None], DueTimer] = {}
        self._claiming = True
        self._membership_lock = asyncio.Lock()
        self._log_handlers: dict[str, LogHandler] = {}
        self._drain_lock = asyncio.Lock()
        self.timers_fired = 0
        #: Hooks the app sets for metrics (the engine itself stays free of them):
        #: ``timer_observer(kind, lag_s, ok)`` after each timer handler (lag: start - due),
        #: ``log_observer(log, entries, seconds, ok)`` after each durable-log batch.
        self.timer_observer: Callable[[str, float | None, bool], None] | None = None
        self.log_observer: Callable[[str, int, float, bool], None] | None = None
        #: ``busy()`` true while the node is answering a burst (app.py: events in flight):
        #: durable logs then wait, up to ``log_defer_max_s``, so a flash sale's buyers are
        #: not answered after the SQL writes of the orders placed a moment before.
        self.busy: Callable[[], bool] | None = None
        self.log_defer_max_s = 2.0

    # ------------------------------------------------------------------ lifecycle

    def set_sinks(self, room_sink: RoomSink, user_sink: UserSink) -> None:
        self._room_sink = room_sink
        self._user_sink = user_sink

    async def start(self) -> None:
        self._claiming = True
        await self._connect()
        self._tasks = [
            asyncio.create_task(self._presence_loop(), name="engine-presence"),
            asyncio.create_task(self._online_loop(), name="engine-online"),
            asyncio.create_task(self._timer_loop(), name="engine-timers"),
            asyncio.create_task(self._log_loop(), name="engine-logs"),
        ]

    async def close(self) -> None:
        await self.stop_timers(5.0)
        await _cancel_all(self._tasks)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._presence_report({room: 0 for room in self._room_members})
        await self._disconnect()

    async def ping(self) -> bool:
        """True when the backing store answers (readiness)."""
        try:
            await self._ping()
        except Exception:
            return False
        return True

    # ------------------------------------------------------------------ fan-out

    async def publish(
        self, room_id: str, event: str, payload: dict[str, Any], *, history: bool = True
    ) -> int:
        """Broadcast ``event`` to the room on every node; returns its ``seq``.

        ``payload`` must not hold ``room_id``/``seq``: they are added here.
        """
        return await self._publish(room_id, event, payload, history)

    async def publish_if_changed(
        self,
        room_id: str,
        event: str,
        field: str,
        value: int,
        *,
        payload: dict[str, Any] | None = None,
        dedupe: str | None = None,
    ) -> int | None:
        """Publish ``payload`` (default ``{field: value}``) as an ephemeral broadcast unless
        ``value`` is what was last published under ``dedupe`` (default: the event name) in
        this room. Atomic, so of several nodes noticing the same change only one broadcasts
        it. Returns the seq, or None when nothing changed."""
        body = payload if payload is not None else {field: value}
        return await self._publish_if_changed(room_id, event, dedupe or event, value, body)

    async def replay(self, room_id: str, since_seq: int) -> list[Broadcast] | None:
        return await self._replay(room_id, since_seq)

    async def last_seq(self, room_id: str) -> int:
        return await self._last_seq(room_id)

    async def send_to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        """Deliver privately to every connection of ``user_id``, on whichever node."""
        await self._send_to_user(user_id, event, payload)

    # ------------------------------------------------------------------ local membership

    async def room_local_join(self, room_id: str) -> None:
        """A local connection entered the room. The first one subscribes this node; the
        call returns once broadcasts published afterwards are certain to arrive here."""
        async with self._membership_lock:
            count = self._room_members.get(room_id, 0)
            if count == 0:
                await self._subscribe_room(room_id)
            self._room_members[room_id] = count + 1
            self._presence_dirty.add(room_id)

    async def room_local_leave(self, room_id: str) -> None:
        async with self._membership_lock:
            count = self._room_members.get(room_id, 0)
            if count <= 0:
                return
            if count == 1:
                del self._room_members[room_id]
                with contextlib.suppress(Exception):
                    await self._unsubscribe_room(room_id)
            else:
                self._room_members[room_id] = count - 1
            self._presence_dirty.add(room_id)

    async def user_local_join(self, user_id: str) -> None:
        async with self._membership_lock:
            count = self._user_conns.get(user_id, 0)
            if count == 0:
                await self._subscribe_user(user_id)
            self._user_conns[user_id] = count + 1

    async def user_local_leave(self, user_id: str) -> None:
        async with self._membership_lock:
            count = self._user_conns.get(user_id, 0)
            if count <= 1:
                self._user_conns.pop(user_id, None)
                if count == 1:
                    with contextlib.suppress(Exception):
                        await self._unsubscribe_user(user_id)
            else:
                self._user_conns[user_id] = count - 1

    def local_rooms(self) -> dict[str, int]:
        return dict(self._room_members)

    def local_online(self, room_id: str) -> int:
        return self._room_members.get(room_id, 0)

    async def _deliver_room(self, message: Broadcast) -> None:
        if self._room_sink is not None and message.room_id in self._room_members:
            try:
                await self._room_sink(message)
            except Exception:
                log.exception("room_sink_failed", room_id=message.room_id, event=message.event)

    async def _deliver_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        if self._user_sink is not None and user_id in self._user_conns:
            try:
                await self._user_sink(user_id, event, payload)
            except Exception:
                log.exception("user_sink_failed", user_id=user_id, event=event)

    # ------------------------------------------------------------------ presence

    async def online(self, room_id: str) -> int:
        """Connections in the room summed over live nodes."""
        return await self._presence_total(room_id)

    async def _presence_loop(self) -> None:
        last_full = 0.0
        while True:
            await asyncio.sleep(min(0.25, self.presence_refresh_s))
            full = time.monotonic() - last_full >= self.presence_refresh_s
            rooms = set(self._room_members) if full else set()
            rooms |= self._presence_dirty
            if not rooms:
                continue
            self._presence_dirty = set()
            counts = {room: self._room_members.get(room, 0) for room in rooms}
            try:
                await self._presence_report(counts)
                if full:
                    last_full = time.monotonic()
            except Exception as exc:
                self._presence_dirty |= rooms
                log.warning("presence_report_failed", error=str(exc))

    async def _online_loop(self) -> None:
        while True:
            await asyncio.sleep(self.online_interval_s)
            for room_id in list(self._room_members):
                try:
                    total = await self.online(room_id)
                    await self.publish_if_changed(room_id, "online:count", "online", total)
                except Exception as exc:
                    log.warning("online_broadcast_failed", room_id=room_id, error=str(exc))

    # ------------------------------------------------------------------ timers

    def on_timer(self, kind: str, handler: TimerHandler) -> None:
        """Register the handler for timers of ``kind`` (e.g. ``"room.start"``)."""
        if ":" in kind:
            raise ValueError("timer kinds may not contain ':'")
        self._timer_handlers[kind] = handler

    async def schedule(
        self, kind: str, key: str, at_ms: int, payload: dict[str, Any] | None = None
    ) -> None:
        """Fire ``kind``'s handler with ``(key, payload)`` at ``at_ms`` (epoch ms), once,
        cluster-wide. Scheduling the same kind+key again replaces the earlier one."""
        # The due time rides along, so whichever node fires it knows how late it is.
        body = {**(payload or {}), DUE_KEY: at_ms}
        await self._timer_add(keys.timer_name(kind, key), at_ms, body)

    async def cancel(self, kind: str, key: str) -> bool:
        return await self._timer_remove(keys.timer_name(kind, key))

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.timer_poll_s)
            if not self._timer_handlers or not self._claiming:
                continue
            try:
                due = await self._timer_claim(now_ms(), int(self.timer_lease_s * 1000), 100)
            except Exception as exc:
                log.warning("timer_claim_failed", error=str(exc))
                continue
            for timer in due:
                if not self._claiming:  # stop_timers() began while we claimed these
                    await self._hand_back(timer)
                    continue
                task = asyncio.create_task(self._fire(timer))
                self._running_timers[task] = timer
                task.add_done_callback(self._running_timers.pop)

    async def stop_timers(self, grace_s: float) -> None:
        """Shutdown: claim no more timers, give the running handlers ``grace_s`` to
        finish, then cancel the rest and hand their leases back (due now), so another node
        fires them at once rather than when the lease lapses."""
        self._claiming = False
        if self._running_timers:
            await asyncio.wait(list(self._running_timers), timeout=grace_s)
        left = dict(self._running_timers)
        await _cancel_all(list(left))
        for timer in left.values():
            await self._hand_back(timer)

    async def _hand_back(self, timer: DueTimer) -> None:
        try:
            if await self._timer_extend(timer.name, timer.token, now_ms()):
                log.info("timer_handed_back", timer=timer.name)
        except Exception as exc:
            log.warning("timer_hand_back_failed", timer=timer.name, error=str(exc))

    async def _fire(self, timer: DueTimer) -> None:
        kind, _, key = timer.name.partition(":")
        due = timer.payload.pop(DUE_KEY, None)
        lag_s = (now_ms() - due) / 1000 if isinstance(due, int) else None
        handler = self._timer_handlers.get(kind)
        if handler is None:
            log.error("timer_without_handler", timer=timer.name)
            return  # left leased: a node that knows the kind picks it up after the lease
        renewing = asyncio.create_task(self._renew_lease(timer))
        try:
            await handler(key, timer.payload)
        except Exception:
            log.exception("timer_handler_failed", timer=timer.name)
            if self.timer_observer is not None:
                self.timer_observer(kind, lag_s, False)
            return  # retried by whichever node claims it after the lease lapses
        finally:
            await _cancel_all([renewing])
        self.timers_fired += 1
        if self.timer_observer is not None:
            self.timer_observer(kind, lag_s, True)
        try:
            await self._timer_done(timer.name, timer.token)
        except Exception as exc:
            log.warning("timer_ack_failed", timer=timer.name, error=str(exc))

    async def _renew_lease(self, timer: DueTimer) -> None:
        """Keep the lease while the handler runs, so a slow handler is not fired twice."""
        lease_ms = int(self.timer_lease_s * 1000)
        while True:
            await asyncio.sleep(self.timer_lease_s / 3)
            try:
                if not await self._timer_extend(timer.name, timer.token, now_ms() + lease_ms):
                    return  # re-scheduled or lost: nothing left to hold
            except Exception as exc:
                log.warning("timer_renew_failed", timer=timer.name, error=str(exc))

    # ------------------------------------------------------------------ feature steps

    async def atomic(self, op: str, keys: list[str], args: list[Any]) -> Any:
        """Run a feature's atomic step: ``engine/lua/<op>.lua`` on Redis, its twin in
        ``memory_ops.py`` in-process (same state machine, one contract suite). ``keys``
        must share one room's hash tag. Returns the step's JSON result decoded, or None."""
        return await self._atomic(op, keys, [a if isinstance(a, str) else str(a) for a in args])

    # ------------------------------------------------------------------ durable logs

    async def log_register(self, log: str, stream: str) -> None:
        """Make ``stream`` (a per-room key that atomic steps append to) part of ``log``."""
        await self._log_register(log, stream)

    def on_log(self, log: str, handler: LogHandler) -> None:
        """Consume ``log`` on this node. Entries are delivered at least once: one that a
        node read but never acknowledged (it died) goes to another node after a while."""
        self._log_handlers[log] = handler

    async def drain_logs(self, rounds: int = 100) -> int:
        """Consume what is waiting now (start-up reconciliation, shutdown, and the
        in-process "write before the ack"). Drains run one at a time, so when one returns,
        every entry appended before it was called has been handled. Returns the count."""
        total = 0
        async with self._drain_lock:
            for _ in range(rounds):
                done = await self._consume_logs()
                total += done
                if not done:
                    break
        return total

    async def _log_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deferred_since: float | None = None
        while True:
            await asyncio.sleep(self.timer_poll_s)
            if self.durable_logs and self.busy is not None and self.busy():
                # the entries are safe in the log meanwhile (on Redis: a stream)
                deferred_since = deferred_since or loop.time()
                if loop.time() - deferred_since < self.log_defer_max_s:
                    continue
            deferred_since = None
            try:
                await self._consume_logs()
            except Exception as exc:
                log.warning("log_consume_failed", error=str(exc))

    async def _consume_logs(self) -> int:
        count = 0
        for name, handler in list(self._log_handlers.items()):
            entries = await self._log_read(name, 200)
            if not entries:
                continue
            started = time.perf_counter()
            try:
                await handler([dict(entry.data) for entry in entries])  # a retry sees the originals
            except BaseException as exc:
                await self._log_release(name, entries)
                if self.log_observer is not None and isinstance(exc, Exception):
                    self.log_observer(name, len(entries), time.perf_counter() - started, False)
                raise
            await self._log_ack(name, entries)
            if self.log_observer is not None:
                self.log_observer(name, len(entries), time.perf_counter() - started, True)
            count += len(entries)
        return count

    # ------------------------------------------------------------------ atomic primitives
    # Keys are full key strings from keys.py. Integers are 64-bit.

    @abstractmethod
    async def incr(self, key: str, by: int = 1) -> int: ...

    @abstractmethod
    async def get_int(self, key: str) -> int: ...

    @abstractmethod
    async def kv_get(self, key: str) -> str | None: ...

    @abstractmethod
    async def kv_set(self, key: str, value: str, ttl_ms: int | None = None) -> None: ...

    @abstractmethod
    async def kv_set_nx(self, key: str, value: str, ttl_ms: int | None = None) -> bool:
        """Set only if absent; True if this call set it."""

    @abstractmethod
    async def kv_delete(self, key: str) -> bool: ...

    @abstractmethod
    async def set_add(self, key: str, member: str) -> bool:
        """True if ``member`` was not in the set before."""

    @abstractmethod
    async def set_remove(self, key: str, member: str) -> bool: ...

    @abstractmethod
    async def set_has(self, key: str, member: str) -> bool: ...

    @abstractmethod
    async def set_card(self, key: str) -> int: ...

    @abstractmethod
    async def set_members(self, key: str) -> set[str]: ...

    @abstractmethod
    async def zincr(self, key: str, member: str, by: float) -> float: ...

    @abstractmethod
    async def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        """Highest scores first; ties by member ascending."""

    @abstractmethod
    async def remember(self, key: str, value: str, ttl_ms: int) -> str | None:
        """Idempotency record: store ``value`` under ``key`` if absent and return None;
        otherwise return the value stored first (and store nothing)."""

    @abstractmethod
    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> int:
        """Token bucket: take one token. Returns 0 if allowed, else ms until one is free."""

    @abstractmethod
    async def reserve(
        self, pool_key: str, holds_key: str, holder: str, qty: int, limit: int
    ) -> Reservation:
        """Atomically take ``qty`` units from the integer pool at ``pool_key`` for ``holder``
        if at least ``qty`` are left and ``holder``'s holding (a field of the hash at
        ``holds_key``) stays ``<= limit``. A pool that was never set counts as 0."""

    @abstractmethod
    async def release(self, pool_key: str, holds_key: str, holder: str, qty: int) -> int:
        """Give back up to ``qty`` units ``holder`` holds (never more than held); returns
        the number actually released."""

    # ------------------------------------------------------------------ backend steps

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _ping(self) -> None: ...

    @abstractmethod
    async def _publish(
        self, room_id: str, event: str, payload: dict[str, Any], history: bool
    ) -> int: ...

    @abstractmethod
    async def _publish_if_changed(
        self, room_id: str, event: str, dedupe: str, value: int, payload: dict[str, Any]
    ) -> int | None: ...

    @abstractmethod
    async def _replay(self, room_id: str, since_seq: int) -> list[Broadcast] | None: ...

    @abstractmethod
    async def _last_seq(self, room_id: str) -> int: ...

    @abstractmethod
    async def _send_to_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _subscribe_room(self, room_id: str) -> None: ...

    @abstractmethod
    async def _unsubscribe_room(self, room_id: str) -> None: ...

    @abstractmethod
    async def _subscribe_user(self, user_id: str) -> None: ...

    @abstractmethod
    async def _unsubscribe_user(self, user_id: str) -> None: ...

    @abstractmethod
    async def _presence_report(self, counts: dict[str, int]) -> None:
        """Record this node's connection count per room, alive for ``presence_ttl_s``."""

    @abstractmethod
    async def _presence_total(self, room_id: str) -> int: ...

    @abstractmethod
    async def _timer_add(self, name: str, at_ms: int, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _timer_remove(self, name: str) -> bool: ...

    @abstractmethod
    async def _timer_claim(self, now: int, lease_ms: int, limit: int) -> list[DueTimer]:
        """Lease up to ``limit`` due timers (due: at <= now, or a lapsed lease)."""

    @abstractmethod
    async def _timer_extend(self, name: str, token: str, until_ms: int) -> bool:
        """Move the lease of a claimed timer to ``until_ms`` if ``token`` still holds it."""

    @abstractmethod
    async def _timer_done(self, name: str, token: str) -> None:
        """Delete the timer if ``token`` still holds its lease (a re-scheduled or re-claimed
        timer is left alone)."""

    @abstractmethod
    async def _atomic(self, op: str, keys: list[str], args: list[str]) -> Any: ...

    @abstractmethod
    async def _log_register(self, log: str, stream: str) -> None: ...

    @abstractmethod
    async def _log_read(self, log: str, count: int) -> list[LogEntry]:
        """Entries not yet acknowledged: new ones, and ones another consumer left idle."""

    @abstractmethod
    async def _log_ack(self, log: str, entries: list[LogEntry]) -> None: ...

    async def _log_release(self, log: str, entries: list[LogEntry]) -> None:
        """Give back entries whose handler failed. Redis needs nothing: they stay pending
        in the consumer group and are claimed again once idle."""
        return None
