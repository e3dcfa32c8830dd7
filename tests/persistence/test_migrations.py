"""Alembic migrations and the database setup, against real SQLite files and a real
PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from livecommerce import errors
from livecommerce.persistence.db import Database
from livecommerce.persistence.migrate import alembic_config, migrate
from livecommerce.persistence.models import Base, User
from livecommerce.persistence.repositories import Users
from tests.support.postgres import PostgresServer
from tests.support.redis_server import free_port

pytestmark = pytest.mark.both_databases

REPO = Path(__file__).resolve().parents[2]
TABLES = {*Base.metadata.tables, "alembic_version"}
#: The newest migration; migrating twice must stay there.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


def _diff(conn: Connection, metadata: sa.MetaData = Base.metadata) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _tables(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


async def _run_sync(url: str, fn: Any) -> Any:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await db.close()


async def test_migrated_schema_matches_models(db_url: str) -> None:
    await migrate(db_url)
    assert await _run_sync(db_url, _diff) == []


async def test_schema_comparison_sees_drift(db_url: str) -> None:
    # Guards the test above against passing vacuously.
    await migrate(db_url)
    drifted = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    sa.Table("users", drifted, sa.Column("nickname", sa.Text()), extend_existing=True)
    diff = await _run_sync(db_url, lambda conn: _diff(conn, drifted))
    assert any(entry[0] == "add_column" and entry[3].name == "nickname" for entry in diff)


async def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    versions = await _run_sync(
        db_url, lambda c: c.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    )
    assert versions == [(HEAD,)] and HEAD is not None
    assert await _run_sync(db_url, _tables) == TABLES


async def test_concurrent_migrations_from_four_processes(db_url: str, tmp_path: Path) -> None:
    """Four nodes start at once on an empty database: one migrates, the others wait (an
    flock beside the SQLite file, a PostgreSQL advisory lock) and find it at head."""
    sqlite = make_url(db_url).get_backend_name() == "sqlite"
    # SQLite: in a directory that does not exist yet, which every process creates.
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'shared.db'}" if sqlite else db_url
    start_at = time.time() + 1.5  # all four begin together, after interpreter start-up
    script = (
        "import asyncio, sys, time\n"
        "from livecommerce.persistence.migrate import migrate\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "asyncio.run(migrate(sys.argv[1]))\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            url,
            str(start_at),
            cwd=REPO,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = [await proc.communicate() for proc in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode() for _, err in results]
    assert await _run_sync(url, _diff) == []
    assert await _run_sync(url, _tables) == TABLES
    if sqlite:
        assert (tmp_path / "fresh" / "shared.db.migrate.lock").exists()


async def test_alembic_command_line_uses_the_same_env(db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "livecommerce/persistence/alembic.ini",
         "upgrade", "head"],
        cwd=REPO, env={**os.environ, "LIVECOMMERCE_DATABASE_URL": db_url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert await _run_sync(db_url, _diff) == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite: tests/test_cli.py
async def test_livecommerce_migrate_command(db_url: str) -> None:
    """``livecommerce migrate --database URL``, the operator's way."""
    done = subprocess.run(
        [sys.executable, "-m", "livecommerce", "migrate", "--database", db_url],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert await _run_sync(db_url, _diff) == []


async def test_sqlite_connections_are_tuned(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b' / 'tuned.db'}"  # dirs do not exist
    db = Database(url, sqlite_busy_timeout_ms=1234)
    try:
        async with db.engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
            }
    finally:
        await db.close()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 1234, "synchronous": 1,
                       "foreign_keys": 1}  # fmt: skip


async def test_transactions_are_real(db_url: str) -> None:
    """The driver's legacy mode is off: a rollback undoes a write, and a read-only
    transaction keeps its snapshot while another connection commits."""
    await migrate(db_url)
    db = Database(db_url)
    try:
        with pytest.raises(RuntimeError):
            async with db.session() as s, s.begin():
                s.add(User(id="u_rolled_back", name="x", role="viewer", created_at=0))
                await s.flush()
                raise RuntimeError("abort the transaction")
        assert await Users(db).get("u_rolled_back") is None

        count = sa.select(sa.func.count()).select_from(sa.table("users"))
        async with db.session(readonly=True) as reader, reader.begin():
            before = await reader.scalar(count)
            await Users(db).create(name="late", role="viewer", is_guest=True)
            assert await reader.scalar(count) == before  # same snapshot
        async with db.session(readonly=True) as reader:
            assert await reader.scalar(count) == (before or 0) + 1
    finally:
        await db.close()


async def test_in_memory_database_can_be_migrated_in_place() -> None:
    db = Database("sqlite+aiosqlite://")
    try:
        await migrate(db)
        user = await Users(db).create(name="Mem", role="viewer", is_guest=True)
        assert (await Users(db).get(user.id)) is not None
    finally:
        await db.close()


async def test_ping(tmp_path: Path, db_url: str) -> None:
    good = Database(db_url)
    if make_url(db_url).get_backend_name() == "sqlite":
        broken = Database(f"sqlite+aiosqlite:///{tmp_path}")  # a directory, not a database
    else:  # the same server, a database that does not exist
        broken = Database(make_url(db_url).set(database="no_such_db").render_as_string(False))
    try:
        assert await good.ping() is True
        assert await broken.ping() is False
    finally:
        await good.close()
        await broken.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_unreachable_postgresql_is_unavailable(db_url: str) -> None:
    """Nothing listens where the URL points (a server down or restarting): repositories
    answer ``unavailable`` (nothing was changed), promptly, and ping says False; never an
    internal error. (SQLite raises OperationalError there, mapped the same way.)"""
    url = make_url(db_url).set(port=free_port()).render_as_string(False)
    db = Database(url)
    try:
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await Users(db).create(name="x", role="viewer", is_guest=True)
        with pytest.raises(errors.Unavailable):
            await Users(db).get("u_1")
        assert await db.ping() is False
        assert time.monotonic() - started < 10
    finally:
        await db.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_postgresql_sessions(db_url: str) -> None:
    """Writes run READ COMMITTED; read-only sessions REPEATABLE READ and really read-only
    (a write in one is refused, not silently committed); the pool checks connections."""
    await migrate(db_url)
    db = Database(db_url)
    level = sa.text("SELECT current_setting('transaction_isolation'), "
                    "current_setting('transaction_read_only')")  # fmt: skip
    try:
        assert db.engine.pool._pre_ping  # type: ignore[attr-defined]
        async with db.session() as s, s.begin():
            assert (await s.execute(level)).one() == ("read committed", "off")
        async with db.session(readonly=True) as s, s.begin():
            assert (await s.execute(level)).one() == ("repeatable read", "on")
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            async with db.session(readonly=True) as s, s.begin():
                s.add(User(id="u_ro", name="x", role="viewer", created_at=0))
        async with db.session() as s, s.begin():  # the pooled connection was reset
            assert (await s.execute(level)).one() == ("read committed", "off")
        assert await Users(db).get("u_ro") is None
    finally:
        await db.close()


async def test_postgresql_restart_is_survived_by_the_pool() -> None:
    """Its own server, restarted under an open pool: the dead pooled connections are
    replaced on checkout (pool_pre_ping), no caller sees an error; while it is down,
    callers get ``unavailable``; once it is back, service resumes by itself."""
    server = PostgresServer()
    server.start()
    try:
        url = server.url(server.create_database())
        await migrate(url)
        db = Database(url)
        users = Users(db)
        try:
            user = await users.create(name="before", role="viewer", is_guest=True)
            server.restart()
            assert await users.get(user.id) is not None
            server.stop()
            with pytest.raises(errors.Unavailable):
                await users.create(name="during", role="viewer", is_guest=True)
            assert await db.ping() is False
            server.start()
            assert await users.get(user.id) is not None
            assert await db.ping() is True
        finally:
            await db.close()
    finally:
        server.close()


async def test_downgrade_to_base_and_back(db_url: str) -> None:
    """Every migration's downgrade runs on this database too, and leaves it empty."""
    await migrate(db_url)

    def down_and_up(conn: Connection) -> tuple[set[str], list[Any]]:
        cfg = alembic_config(db_url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
        left = _tables(conn)
        command.upgrade(cfg, "head")
        return left, _diff(conn)

    db = Database(db_url)
    try:
        async with db.engine.begin() as conn:
            left, diff = await conn.run_sync(down_and_up)
    finally:
        await db.close()
    assert left == {"alembic_version"} and diff == []
