"""The cluster view: each node reports its connection count with an expiry; a reader
lists the nodes whose reports are still alive (a killed node drops out within
``3 × cluster_report_s``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from livecommerce import jsonutil
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms

log = structlog.get_logger(__name__)

NODES_TAG = f"{keys.PREFIX}{{nodes}}"
NODES = f"{NODES_TAG}:list"


def node_key(node_id: str) -> str:
    return f"{NODES_TAG}:node:{node_id}"


class ClusterReport:
    def __init__(self, engine: Engine, every_s: float) -> None:
        self.engine = engine
        self.every_s = every_s
        #: This node's local connection count (set by the transport).
        self.connections: Callable[[], int] = lambda: 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cluster-report")

    async def report(self) -> None:
        me = {
            "node_id": self.engine.node_id,
            "connections": self.connections(),
            "rooms": len(self.engine.local_rooms()),
            "at": now_ms(),
        }
        ttl_ms = int(self.every_s * 3000)
        await self.engine.kv_set(node_key(self.engine.node_id), jsonutil.dumps(me), ttl_ms)
        await self.engine.set_add(NODES, self.engine.node_id)

    async def nodes(self) -> list[dict[str, Any]]:
        found = []
        for node_id in sorted(await self.engine.set_members(NODES)):
            raw = await self.engine.kv_get(node_key(node_id))
            if raw is None:  # its report expired: gone
                await self.engine.set_remove(NODES, node_id)
                continue
            found.append(jsonutil.loads(raw))
        return found

    async def _loop(self) -> None:
        while True:
            try:
                await self.report()
            except Exception as exc:
                log.warning("cluster_report_failed", error=str(exc))
            await asyncio.sleep(self.every_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.engine.kv_delete(node_key(self.engine.node_id))
