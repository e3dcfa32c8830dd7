"""Orders reach SQL from the engine's durable order log, off the buyer's path.

On Redis the log is a stream per room read by a consumer group: an entry a node read but
did not acknowledge (it died mid-write) is claimed by another node after a short idle time
and written again. Writes are idempotent by order id and only move a status forward, so a
replay changes nothing.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce import jsonutil
from livecommerce.engine import Engine
from livecommerce.persistence.repositories import Orders

log = structlog.get_logger(__name__)

ORDER_LOG = "orders"


class OrderWriter:
    def __init__(self, engine: Engine, orders: Orders) -> None:
        self.orders = orders
        self.written = 0
        engine.on_log(ORDER_LOG, self.write)

    async def write(self, batch: list[dict[str, Any]]) -> None:
        # One transaction per batch: a burst of buys costs a few SQL commits, not one each.
        await self.orders.upsert_many([jsonutil.loads(entry["o"]) for entry in batch])
        self.written += len(batch)
        log.debug("orders_written", count=len(batch))
