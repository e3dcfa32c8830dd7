"""Fixtures of the production tests: whole clusters (redis-server, real nodes, nginx) as
scripts/cluster starts them, and a Redis of a test's own for the drills that restart it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from livecommerce.persistence.migrate import migrate
from tests.support.nginx import Cluster, cluster_env
from tests.support.redis_server import RedisServer

StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own with an append-only file fsynced on every write,
    as production runs it: a restart keeps seqs, history, stock and the logs."""
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
async def start_cluster(tmp_path: Path, db_url: str) -> AsyncIterator[StartCluster]:
    """``await start_cluster(redis_url, nodes=3, sticky=False, env=None)``: nodes sharing
    ``redis_url`` and the test's database, nginx in front (``cluster.url``). Everything is
    stopped when the test ends, passed or not."""
    clusters: list[Cluster] = []
    await migrate(db_url)

    async def start(
        redis_url: str, *, nodes: int = 3, sticky: bool = False, env: dict[str, str] | None = None
    ) -> Cluster:
        cluster = Cluster(
            tmp_path / f"cluster{len(clusters)}",
            nodes=nodes,
            database_url=db_url,
            redis_url=redis_url,
            sticky=sticky,
            env=cluster_env(env),
        )
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()
