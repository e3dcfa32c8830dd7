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

On PostgreSQL (``postgresql+asyncpg://``) write sessions run at the default READ
COMMITTED: repositories make every racing write a guarded statement, an ``ON CONFLICT``
insert, or a read ``FOR UPDATE`` (rows locked in id order). Read-only sessions run
REPEATABLE READ READ ONLY, so several reads in one session see one snapshot, as they do on
SQLite. Connections are checked before use (``pool_pre_ping``) and recycled every
half hour, so a restarted server or a proxy's idle timeout costs a reconnect, not an
error. An unreachable server, or a pool that stays exhausted, fails within seconds
(``unavailable`` to clients) instead of queueing requests behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

#: Execution option that marks a connection as read-only, so it gets a deferred BEGIN.
READONLY = "livecommerce_readonly"

#: Pool of one node on a server database: up to POOL_SIZE + MAX_OVERFLOW connections.
POOL_SIZE = 5
MAX_OVERFLOW = 10
#: Seconds: wait for a free pooled connection; open a connection; reuse one at most this long.
POOL_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
POOL_RECYCLE_S = 1800
#: SQLSTATE classes after which the transaction is gone and nothing was written: 08
#: connection exception, 28 / 3D cannot log in / no such database (a misconfiguration,
#: met at connect time), 40 transaction rollback (serialization failure, deadlock), 53
#: insufficient resources (too many connections), 57 operator intervention (shutdown,
#: statement timeout, "the database system is starting up").
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "28", "3D", "40", "53", "57")


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
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, **_engine_options(parsed.drivername))
        read_options: dict[str, Any] = {READONLY: True}
        if self.is_sqlite:
            _tune_sqlite(self.engine, sqlite_busy_timeout_ms)
        elif self.dialect == "postgresql":
            read_options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self._read_engine = self.engine.execution_options(**read_options)
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


def _engine_options(drivername: str) -> dict[str, Any]:
    if drivername.startswith("sqlite"):
        return {}
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_timeout": POOL_TIMEOUT_S,
        "pool_recycle": POOL_RECYCLE_S,
    }
    if drivername == "postgresql+asyncpg":
        options["connect_args"] = {
            "timeout": CONNECT_TIMEOUT_S,
            "server_settings": {"application_name": "livecommerce"},  # in pg_stat_activity
        }
    return options


def dialect_insert(db: Database, model: Any) -> sqlite.Insert | postgresql.Insert:
    """An INSERT with ``on_conflict_do_nothing`` / ``on_conflict_do_update`` for ``db``'s
    dialect (both spell them the same way)."""
    if db.is_sqlite:
        return sqlite.insert(model)
    if db.dialect == "postgresql":
        return postgresql.insert(model)
    raise NotImplementedError(f"upserts are written for SQLite and PostgreSQL, not {db.dialect}")


def means_unavailable(exc: BaseException) -> bool:
    """True if ``exc`` means the transaction was rolled back without changing anything,
    because the database could not be reached or asked us to retry: SQLite busy or
    unopenable, a PostgreSQL server down, restarting or out of connections, a lost
    connection, a deadlock or serialization failure, no pooled connection in time."""
    if isinstance(exc, OperationalError | PoolTimeout | OSError):
        return True  # OSError: asyncpg cannot connect; TimeoutError is one too
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None) or getattr(
            exc.orig.__cause__ if exc.orig is not None else None, "sqlstate", None
        )
        return isinstance(state, str) and state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


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
