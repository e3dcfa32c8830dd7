"""What the Redis engines (one server, or a Redis Cluster) share below the engine itself:
which errors mean "Redis is down", the Lua scripts, and stopping background tasks."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterDownError, ClusterError, ReadOnlyError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from livecommerce.errors import Unavailable

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: A connection to one server or to a cluster: the commands are the same.
Client = Redis | RedisCluster
Arg = str | int | float  # a Lua script argument

#: Errors meaning "Redis cannot be reached / cannot serve" (BusyLoadingError is a
#: ConnectionError; OSError covers refused sockets and the builtin TimeoutError). On a
#: cluster also: the cluster is down (CLUSTERDOWN), or redirections never ended.
DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OSError,
    ClusterDownError,
    ClusterError,
)
LUA_DIR = Path(__file__).parent / "lua"
_INCLUDE = "--#include "


def is_down(exc: BaseException) -> bool:
    if isinstance(exc, DOWN):
        return True
    # RedisCluster reports "no seed answered" and "some slots have no master" with its
    # generic exception (which also means "keys in two slots": a bug, not an outage).
    return isinstance(exc, RedisClusterException) and (
        isinstance(exc.__cause__, DOWN) or "not covered" in str(exc)
    )


def guard(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn "Redis is down" into :class:`Unavailable` (the scripts being atomic, a failed
    call changed nothing — except a timeout, where Redis may have run it)."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            result = await method(*args, **kwargs)
        except (*DOWN, RedisClusterException) as exc:
            if not is_down(exc):
                raise
            # Idle pooled connections may be dead too (Redis restarted): drop them all now,
            # so one failure, not one per stale connection, tells us Redis went away.
            drop = getattr(args[0], "drop_idle_connections", None) if args else None
            if drop is not None:
                await drop()
            raise Unavailable(f"redis: {exc}") from exc
        # On Python 3.11 redis-py's asyncio.wait_for() can return a result and drop a
        # cancel that raced with it; re-raise it, or Engine.close() waits forever.
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        return result

    return guarded


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel until done: one cancel can be dropped (see guard)."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("engine_task_failed", task=task.get_name(), error=str(task.exception()))


def answers_ping(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a redis-server on ``port`` answers PING now: a blocking probe, for whoever
    starts one and waits for it (scripts/cluster.py, the tests' servers)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def load_script(path: Path) -> str:
    """A script's text with its ``--#include <file>`` lines replaced by that file: Redis
    scripts cannot call each other, and helpers such as the token bucket live once."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith(_INCLUDE):
            lines.append((path.parent / line[len(_INCLUDE) :].strip()).read_text())
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def register_scripts(client: Client) -> dict[str, AsyncScript]:
    """Every ``lua/<op>.lua`` by op name (helpers, ``_*.lua``, are inlined, not run)."""
    return {
        path.stem: client.register_script(load_script(path))
        for path in sorted(LUA_DIR.glob("*.lua"))
        if not path.stem.startswith("_")
    }
