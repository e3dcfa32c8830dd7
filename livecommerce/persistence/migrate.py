"""Bring the schema up to date with Alembic, safely when several nodes start at once.

``migrate()`` is a coroutine so the server can await it during startup and the CLI can
``asyncio.run()`` it. Alembic itself is synchronous: we open an async connection and hand
its sync face to Alembic through ``config.attributes`` (env.py runs on it), so there is
never a nested event loop.

Concurrent starters are serialized: SQLite by an exclusive ``flock`` on
``<db>.migrate.lock`` (waited for in a thread, so the loop keeps running), PostgreSQL by a
transaction-scoped advisory lock. The loser then finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from livecommerce.persistence.db import Database, sqlite_path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: pg_advisory_xact_lock key: any constant that other applications are unlikely to use.
PG_LOCK_KEY = zlib.crc32(b"livecommerce.migrate")


def alembic_config(url: str) -> Config:
    """An Alembic Config built in code: independent of the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    # ConfigParser interpolates '%': escape it (URL-encoded passwords contain it).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(target: str | Database) -> None:
    """Upgrade the database at ``target`` (a URL, or an open Database) to head."""
    if isinstance(target, Database):
        await _migrate_db(target)
        return
    db = Database(target)
    try:
        await _migrate_db(db)
    finally:
        await db.close()


async def _migrate_db(db: Database) -> None:
    path = sqlite_path(db.url)
    async with _file_lock(path), db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Released by the COMMIT at the end of this block.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        await _upgrade(conn, db.url)


async def _upgrade(conn: AsyncConnection, url: str) -> None:
    def run(sync_conn: Connection) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    await conn.run_sync(run)


@asynccontextmanager
async def _file_lock(db_path: Path | None) -> AsyncIterator[None]:
    """Hold an exclusive flock next to the SQLite file (no-op for other databases).

    flock, not lockf: flock locks belong to the open file, so two migrations in one
    process exclude each other too, and the kernel drops the lock if we die."""
    if db_path is None:
        yield
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_path.with_name(db_path.name + ".migrate.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
