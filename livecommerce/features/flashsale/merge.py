"""Request merging for a hot item: the buys of one sale that reach a node in the same
event-loop iteration go to the engine as one ``sale_buy_many`` step.

In a flash sale thousands of buyers press at once and 90 % of them are told ``sold_out``;
one engine call per buyer makes the caller's per-call cost (packing, a reply to parse, a
task woken) the node's limit. Merged, a burst of 5,000 is a few dozen steps. Nothing
about a buy changes: the step judges each buy exactly as ``sale_buy`` does, in arrival
order, atomically (docs/protocol.md, "Flash sales"), and each buyer gets its own result.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

from livecommerce.engine import Engine


@dataclass(slots=True)
class _Batch:
    sale_keys: list[str]
    idem_keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)  # now, user_id, qty, order_json per buy
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)


class BuyMerger:
    #: Buys per step: one step holds Redis for its whole batch (a few µs a buy).
    limit = 256

    def __init__(self, engine: Engine, idempotency_ttl_ms: int) -> None:
        self.engine = engine
        self.ttl_ms = idempotency_ttl_ms
        self._pending: dict[str, _Batch] = {}
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def buy(
        self, sale_keys: list[str], idem_key: str, now: int, user_id: str, qty: int, order: str
    ) -> dict[str, Any]:
        """``sale_buy``'s result for this one buy."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        batch = self._pending.get(sale_keys[0])
        if batch is None or len(batch.waiters) >= self.limit:
            if batch is not None:
                self._start(batch)
            batch = self._pending[sale_keys[0]] = _Batch(sale_keys)
        batch.idem_keys.append(idem_key)
        batch.args += (now, user_id, qty, order)
        batch.waiters.append(waiter)
        if self._flush_loop is not loop:
            # call_soon runs after every callback already due in this iteration: the buys
            # that arrived with this one join its batch
            self._flush_loop = loop
            loop.call_soon(self._flush)
        return await waiter

    def _flush(self) -> None:
        self._flush_loop = None
        pending, self._pending = self._pending, {}
        for batch in pending.values():
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            results = await self.engine.atomic(
                "sale_buy_many", [*batch.sale_keys, *batch.idem_keys], [self.ttl_ms, *batch.args]
            )
        except BaseException as exc:  # Unavailable (nothing reserved), or a fault
            for waiter in batch.waiters:
                if not waiter.done():
                    # each its own copy: one object raised in many tasks chains tracebacks
                    waiter.set_exception(copy.copy(exc).with_traceback(None))
            if not isinstance(exc, Exception):
                raise
            return
        for waiter, result in zip(batch.waiters, results, strict=True):
            if not waiter.done():  # done: that buyer's task was cancelled meanwhile
                waiter.set_result(result)
