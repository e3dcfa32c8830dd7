"""Polling helpers: delivery is asynchronous (Redis pub/sub), so tests wait for it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livecommerce.engine import Broadcast, Engine


@dataclass
class Node:
    """An engine plus what its sinks received."""

    engine: Engine
    broadcasts: list[Broadcast] = field(default_factory=list)
    private: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: up to this many seconds of random delay per delivery, like a sink doing I/O
    jitter_s: float = 0.0

    async def on_room(self, message: Broadcast) -> None:
        if self.jitter_s:
            await asyncio.sleep(random.uniform(0, self.jitter_s))
        self.broadcasts.append(message)

    async def on_user(self, user_id: str, event: str, payload: dict[str, Any]) -> None:
        self.private.append((user_id, event, payload))

    def seqs(self, room_id: str, event: str | None = None) -> list[int]:
        return [
            b.seq
            for b in self.broadcasts
            if b.room_id == room_id and (event is None or b.event == event)
        ]


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def eventually_equal(
    read: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 3.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await read()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.02)
