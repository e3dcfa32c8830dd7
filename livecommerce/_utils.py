"""Small private helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A per-process read-through cache with single-flight loading.

    A join storm of thousands of viewers into one room then costs one database read per
    ``ttl_s`` instead of one per viewer. Values may be up to ``ttl_s`` stale on other nodes;
    callers use it only for data where that is harmless (titles, product lists, who hosts a
    room) and invalidate locally after their own writes.
    """

    def __init__(self, ttl_s: float, max_items: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._items: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it, nobody logs it twice
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl_s, value)

    def invalidate(self, key: K) -> None:
        self._items.pop(key, None)


class LocalBuckets:
    """Token buckets kept in this process, one per key: for limits where a node-local
    count is enough (likes: cheap, high-rate, harmless if a user on two nodes gets two
    budgets) and a Redis round trip per event would cost more than the event."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 200_000) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> int:
        """0 if a token was taken, else ms until one is free."""
        now = time.monotonic()
        tokens, at = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._state[key] = (tokens, now)
            return max(1, int((1 - tokens) * 1000 / self.rate) + 1)
        if len(self._state) >= self.max_keys:
            self._sweep(now)
        self._state[key] = (tokens - 1, now)
        return 0

    def _sweep(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._state = {k: v for k, v in self._state.items() if now - v[1] < full_after}
