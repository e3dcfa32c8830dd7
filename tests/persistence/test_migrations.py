"""Alembic migrations and the SQLite setup, against real database files."""

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
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from livecommerce.persistence.db import Database
from livecommerce.persistence.migrate import alembic_config, migrate
from livecommerce.persistence.models import Base, User
from livecommerce.persistence.repositories import Users

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


async def test_concurrent_migrations_from_four_processes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'shared.db'}"
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
    assert (tmp_path / "fresh" / "shared.db.migrate.lock").exists()


async def test_alembic_command_line_uses_the_same_env(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "livecommerce/persistence/alembic.ini",
         "upgrade", "head"],
        cwd=REPO, env={**os.environ, "LIVECOMMERCE_DATABASE_URL": url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert await _run_sync(url, _diff) == []


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
    broken = Database(f"sqlite+aiosqlite:///{tmp_path}")  # a directory, not a database
    try:
        assert await good.ping() is True
        assert await broken.ping() is False
    finally:
        await good.close()
        await broken.close()
