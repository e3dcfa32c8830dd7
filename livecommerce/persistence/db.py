"""The database handle: one async engine and its sessions, SQLite tuned for many processes.

Several server processes may share one SQLite file. Two things keep their writes from
failing with ``database is locked``:

* WAL journal plus ``busy_timeout``: readers never block the writer, and a writer waits
  (in aiosqlite's worker thread, not on the event loop) instead of failing at once.
* ``BEGIN IMMEDIATE`` for write sessions. A deferred transaction that reads first and
  writes later must upgrade its read snapshot to a write lock; if another process
  committed in between, SQLite answers SQLITE_BUSY *immediately*, without consulting the
  busy handler (the snapshot is stale, waiting cannot help). Taking the write lock at BEGIN
  means the wait happens up front, where busy_timeout applies. Pure reads use
  ``session(readonly=True)`` and a plain deferred BEGIN so they do not queue behind writers.

The sqlite3 driver's own ("legacy") transaction handling is switched off so that the BEGIN
we emit is the only one, and transactions cover SELECTs too (see SQLAlchemy's
"Transactions with SQLite and the sqlite3 driver").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

#: Execution option that marks a connection as read-only, so it gets a deferred BEGIN.
READONLY = "livecommerce_readonly"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None (another database, or in-memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


class Database:
    """Owns the engine. ``async with db.session() as s, s.begin(): ...`` for a write."""

    def __init__(self, url: str, *, sqlite_busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            _tune_sqlite(self.engine, sqlite_busy_timeout_ms)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self._read_engine = self.engine.execution_options(**{READONLY: True})
        self._read_sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self._read_engine, expire_on_commit=False
        )

    def session(self, *, readonly: bool = False) -> AsyncSession:
        """A new session. ``readonly=True`` promises no writes: on SQLite it then reads a
        WAL snapshot without taking the write lock (a write in it may fail as busy)."""
        return (self._read_sessionmaker if readonly else self.sessionmaker)()

    async def ping(self) -> bool:
        try:
            async with self._read_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()


def _tune_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching a fresh file to WAL needs a lock another
            # process may hold for a moment.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode; only an OS crash
            # can lose the last transactions, and it saves an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get(READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
