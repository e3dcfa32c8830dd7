"""nginx in front of real nodes, for the production tests.

The cluster is the one ``scripts/cluster`` starts (``scripts/cluster.py``: redis-server, N
``livecommerce serve`` processes, nginx rendered from ``config/nginx/livecommerce.conf``);
tests give it their own Redis, database and fast settings. What tests ask of a running
cluster lives here too.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from scripts.cluster import Cluster, NodeProcess, free_port, render_site
from tests.support.client import Api
from tests.support.servers import FAST_ENV

__all__ = ["Cluster", "NodeProcess", "cluster_env", "free_port", "node_connections", "render_site"]

#: Viewers see every comment and senders may keep a steady pace: what the production
#: tests check (completeness, order) needs nothing sampled or rate-limited away.
OPEN_ROOM = {
    "LIVECOMMERCE_COMMENTS__RATE_PER_S": "1000",
    "LIVECOMMERCE_COMMENTS__BURST": "1000",
    "LIVECOMMERCE_COMMENTS__VIEWER_RATE": "10000",
    # every broadcast of a test stays replayable, so a late client can audit the room
    "LIVECOMMERCE_ENGINE__HISTORY_SIZE": "10000",
    # GET /api/cluster (each node's connection count) fresh within a fraction of a second
    "LIVECOMMERCE_METRICS__CLUSTER_REPORT_S": "0.3",
}


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The nodes' environment: this process's, minus any LIVECOMMERCE_* of the developer's,
    plus the suite's fast timings and shared secret (tests/support/servers.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
    return env | FAST_ENV | OPEN_ROOM | (extra or {})


async def node_connections(
    api: Api, staff_token: str, expect_total: int | None = None, timeout: float = 10
) -> dict[str, int]:
    """node id -> its Socket.IO connections, from ``GET /api/cluster`` (each node reports
    every 0.3 s here). With ``expect_total``, waits until the reports add up to it."""
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = await api.ok("GET", "/api/cluster", staff_token)
        counts = {n["node_id"]: int(n["connections"]) for n in data["nodes"]}
        if expect_total is None or sum(counts.values()) == expect_total:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"connections never added up to {expect_total}: {counts}")
        await asyncio.sleep(0.1)
