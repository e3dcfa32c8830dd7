"""The Redis engines' atomic primitives: one command on one key, or a Lua script where a
step reads and writes (``reserve``/``release`` touch two keys: callers keep them in one
hash tag, so on a Redis Cluster they share a slot)."""

from __future__ import annotations

from redis.commands.core import AsyncScript

from livecommerce.engine.base import Reservation
from livecommerce.engine.redis_common import Arg, Client, guard


class RedisPrimitives:
    """Mixed into :class:`RedisEngine`; implements base.Engine's atomic primitives."""

    _redis: Client
    _scripts: dict[str, AsyncScript]

    @guard
    async def incr(self, key: str, by: int = 1) -> int:
        return int(await self._redis.incrby(key, by))

    @guard
    async def get_int(self, key: str) -> int:
        return int(await self._redis.get(key) or 0)

    @guard
    async def kv_get(self, key: str) -> str | None:
        value = await self._redis.get(key)
        return None if value is None else str(value)

    @guard
    async def kv_set(self, key: str, value: str, ttl_ms: int | None = None) -> None:
        await self._redis.set(key, value, px=ttl_ms)

    @guard
    async def kv_set_nx(self, key: str, value: str, ttl_ms: int | None = None) -> bool:
        return bool(await self._redis.set(key, value, px=ttl_ms, nx=True))

    @guard
    async def kv_delete(self, key: str) -> bool:
        return bool(await self._redis.delete(key))

    @guard
    async def set_add(self, key: str, member: str) -> bool:
        return bool(await self._redis.sadd(key, member))

    @guard
    async def set_remove(self, key: str, member: str) -> bool:
        return bool(await self._redis.srem(key, member))

    @guard
    async def set_has(self, key: str, member: str) -> bool:
        return bool(await self._redis.sismember(key, member))

    @guard
    async def set_card(self, key: str) -> int:
        return int(await self._redis.scard(key))

    @guard
    async def set_members(self, key: str) -> set[str]:
        return {str(member) for member in await self._redis.smembers(key)}

    @guard
    async def zincr(self, key: str, member: str, by: float) -> float:
        score = await self._redis.zincrby(key, by, member)
        return float(score or 0.0)  # never None: ZINCRBY always answers the score

    @guard
    async def ztop(self, key: str, n: int) -> list[tuple[str, float]]:
        flat = await self._scripts["ztop"](keys=[key], args=[n])
        pairs = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
        return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))

    @guard
    async def remember(self, key: str, value: str, ttl_ms: int) -> str | None:
        first = await self._scripts["remember"](keys=[key], args=[value, ttl_ms])
        return None if first is None else str(first)

    @guard
    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> int:
        args: list[Arg] = [rate_per_s, burst]
        return int(await self._scripts["rate_limit"](keys=[key], args=args))

    @guard
    async def reserve(
        self, pool_key: str, holds_key: str, holder: str, qty: int, limit: int
    ) -> Reservation:
        if qty < 1:
            raise ValueError("qty must be positive")
        ok, reason, left, held = await self._scripts["reserve"](
            keys=[pool_key, holds_key], args=[holder, qty, limit]
        )
        return Reservation(bool(ok), reason or None, int(left), int(held))

    @guard
    async def release(self, pool_key: str, holds_key: str, holder: str, qty: int) -> int:
        released = await self._scripts["release"](keys=[pool_key, holds_key], args=[holder, qty])
        return int(released)
