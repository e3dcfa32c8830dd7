"""Member orders and groups reach SQL from the engine's ``groupbuy`` log, off the
caller's path.

The log is at-least-once (a node that died mid-write leaves its entries to another), so
writes are idempotent: rows are keyed by id and only move forward by ``updated_at``.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce import jsonutil
from livecommerce.engine import Engine
from livecommerce.features.groupbuy.public import GROUP_LOG
from livecommerce.persistence.groupbuy import GroupRecords

log = structlog.get_logger(__name__)


class GroupWriter:
    def __init__(self, engine: Engine, records: GroupRecords) -> None:
        self.records = records
        self.written = 0
        engine.on_log(GROUP_LOG, self.write)

    async def write(self, batch: list[dict[str, Any]]) -> None:
        orders = [jsonutil.loads(entry["o"]) for entry in batch if "o" in entry]
        groups = [jsonutil.loads(entry["g"]) for entry in batch if "g" in entry]
        await self.records.write(orders, groups)
        self.written += len(batch)
        log.debug("groupbuy_written", orders=len(orders), groups=len(groups))
