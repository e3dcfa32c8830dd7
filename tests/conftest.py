"""Fixtures shared by the whole suite: a real redis-server, SQLite files (and a real
PostgreSQL for tests marked ``both_databases``), an in-process app, real server processes
and real Socket.IO clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from livecommerce.app import GATEWAY, NODE, Node, create_app
from livecommerce.persistence.migrate import migrate
from livecommerce.settings import LOADTEST_LIMITS, load_settings
from livecommerce.transport.wire import node_runner
from tests.support.client import Api, Client
from tests.support.postgres import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

FAST_ENGINE = {
    "presence_ttl_s": 2.0,
    "presence_refresh_s": 0.5,
    "online_interval_s": 0.3,
    "timer_poll_s": 0.05,
    "timer_lease_s": 3.0,
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the shared redis-server for each test."""
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


#: What a test marked ``both_databases`` runs on, once each (its ids end in ``[sqlite]``
#: and ``[postgresql]``); unmarked tests get SQLite.
DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker("both_databases") is not None
    own = any(  # a test may pick one itself: parametrize("db_url", ["postgresql"], indirect=True)
        "db_url" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")
    )
    if marked and not own and "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, started by the first test needing it."""
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for each test: a SQLite file, or a new database on the
    session's PostgreSQL server (tests marked ``both_databases`` run on each)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'livecommerce.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


class NodeTestServer(TestServer):
    """aiohttp's TestServer with the node's own runner (the lean WebSocket path in front,
    as ``livecommerce serve`` has it)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return node_runner(self.app, self.app[GATEWAY].wire, **kwargs)


class AppServer:
    def __init__(self, server: TestServer, app: web.Application) -> None:
        self.server = server
        self.url = str(server.make_url("")).rstrip("/")
        self.node: Node = app[NODE]


async def start_app(db_url: str, **overrides: dict[str, Any]) -> AppServer:
    """One in-process node (memory engine, SQLite) on a real port; ``overrides`` are
    settings sections merged over the test defaults."""
    base: dict[str, Any] = {
        "database": {"url": db_url},
        "server": {"node_id": "test-node"},
        "engine": FAST_ENGINE,
        "payments": {"sandbox_decline_prefix": "decline-"},
        # the whole suite connects from 127.0.0.1 (tests of the limits set their own)
        "limits": dict(LOADTEST_LIMITS),
    }
    for section, values in overrides.items():
        base[section] = {**base.get(section, {}), **values}
    app = create_app(load_settings(env={}, overrides=base))
    server = NodeTestServer(app, host="127.0.0.1")
    await server.start_server()
    return AppServer(server, app)


@pytest.fixture
async def app_server(db_url: str) -> AsyncIterator[AppServer]:
    """One in-process node (memory engine, SQLite) on a real port."""
    server = await start_app(db_url)
    yield server
    await server.server.close()


@pytest.fixture
async def node_factory(db_url: str) -> AsyncIterator[Callable[..., Awaitable[AppServer]]]:
    """``await node_factory(**sections)``: in-process nodes with tuned settings, sharing
    the test's database."""
    servers: list[AppServer] = []

    async def make(**overrides: dict[str, Any]) -> AppServer:
        servers.append(await start_app(db_url, **overrides))
        return servers[-1]

    yield make
    for server in servers:
        await server.server.close()


@pytest.fixture
async def api_factory() -> AsyncIterator[Callable[[str], Api]]:
    apis: list[Api] = []

    def make(url: str) -> Api:
        apis.append(Api(url))
        return apis[-1]

    yield make
    for api in apis:
        await api.close()


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def make(url: str, token: str | None = None) -> Client:
        client = Client(url, token)
        clients.append(client)
        return await client.connect()

    yield make
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@pytest.fixture
async def cluster(
    tmp_path: Path, db_url: str, redis_url: str
) -> AsyncIterator[Callable[..., Awaitable[list[ServerProcess]]]]:
    """``await cluster(n)``: n real server processes sharing redis and one SQLite file.
    ``redis=False``: the in-process engine; ``redis_url=...``: another Redis (a cluster)."""
    nodes: list[ServerProcess] = []
    await migrate(db_url)

    async def start(
        n: int = 2,
        *,
        redis: bool = True,
        env: dict[str, str] | None = None,
        redis_url: str = redis_url,
    ) -> list[ServerProcess]:
        url = redis_url if redis else None
        new = [
            ServerProcess(f"node{len(nodes) + i + 1}", db_url, url, tmp_path, env) for i in range(n)
        ]
        nodes.extend(new)
        await asyncio.gather(*(node.start() for node in new))
        return new

    yield start
    for node in nodes:
        node.stop()


async def make_user(node: Node, username: str, role: str, password: str = "secret-pw") -> str:
    """Create a password user directly and return a token for them."""
    user = await node.auth.add_user(username, password, role)
    return node.auth.issue(user)


def ack_error(ack: dict[str, Any]) -> str:
    assert ack.get("ok") is False, f"expected an error, got {ack}"
    return str(ack["error"]["code"])
