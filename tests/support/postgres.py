"""A real, throwaway PostgreSQL server for tests: its own port, temp dir and socket dir.

How the suite gets PostgreSQL: ``scripts/test`` installs Debian's ``postgresql`` package
when no server binaries are found (``ensure_postgres`` in ``scripts/_bootstrap.sh``);
Debian keeps them in ``/usr/lib/postgresql/<version>/bin``, off PATH, and this module looks
there (newest version first) after PATH. The first test that asks for PostgreSQL starts
one server for the whole session: ``initdb`` into a fresh temp dir, then ``postgres`` on a
free port of 127.0.0.1 with its unix socket inside that dir, trust authentication and
durability switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``: a crash
loses a test database, nothing else). PostgreSQL refuses to run as root, so when the
suite runs as root the server runs as the ``postgres`` system user the Debian package
creates, and owns the temp dir. Each test gets its own empty database
(``CREATE DATABASE``, dropped with ``FORCE`` afterwards), so tests never see each other's
rows. Missing binaries, a missing ``postgres`` user or a server that does not come up are
errors, never skips.

Tests opt in with the ``both_databases`` marker (see ``tests/conftest.py``): the
``db_url`` fixture then runs them once on SQLite and once here. ``sql_rows`` reads what
reached SQL on either database, for tests that look at rows directly.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.support.redis_server import free_port

T = TypeVar("T")

#: Settings for a disposable server: no durability, nothing waits on the disk.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "log_checkpoints": "off",
}


def find_binary(name: str) -> str:
    """``name`` (initdb, postgres) from PATH, else from Debian's versioned directory."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parents[1].name.split(".")[0]), reverse=True)
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} is neither on PATH nor in /usr/lib/postgresql/*/bin; "
            "install the server (e.g. apt-get install postgresql, or run scripts/test)"
        )
    return candidates[0]


def _run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private event loop, whatever loop the caller is on."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class PostgresServer:
    """``start()`` / ``stop()`` / ``restart()`` (same port and data) / ``close()``;
    ``create_database()`` gives a fresh, empty database."""

    user = "postgres"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._counter = 0
        self._version = 0
        # As root, initdb and postgres run as the postgres system user.
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, but there is no 'postgres' system user to run the "
                    "PostgreSQL server as (Debian's postgresql package creates it)"
                ) from None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server: the first time into a new cluster (``initdb``), afterwards
        on the same data (see ``restart``)."""
        initdb, postgres = find_binary("initdb"), find_binary("postgres")
        fresh = self._dir is None
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="lc-postgres-"))
        try:
            if fresh:
                self._init(initdb)
            self._launch(postgres, timeout_s)
        except BaseException:
            self.close()
            raise

    def restart(self) -> None:
        """Stop and start again on the same port and data: clients' connections break."""
        self.stop()
        self.start()

    def _init(self, initdb: str) -> None:
        assert self._dir is not None
        (self._dir / "sock").mkdir()
        if self._run_as is not None:
            for path in (self._dir, self._dir / "sock"):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(
            [initdb, "-D", str(self._dir / "data"), "-U", self.user, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        )  # fmt: skip

    def _launch(self, postgres: str, timeout_s: float) -> None:
        assert self._dir is not None
        settings = {**FAST_SETTINGS, "listen_addresses": "127.0.0.1"}
        settings["unix_socket_directories"] = str(self._dir / "sock")
        args = [postgres, "-D", str(self._dir / "data"), "-p", str(self.port)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log = (self._dir / "postgres.log").open("ab")
        self._proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir, **self._user_kwargs()
        )
        log.close()  # the child holds its own descriptor
        self._wait_ready(timeout_s)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back sessions, exit); SIGKILL if that hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop and remove the temp dir (data, socket, log)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        self._counter += 1
        name = f"lc_test_{os.getpid()}_{self._counter}"
        # FILE_COPY (PostgreSQL 15+) copies the small template's files instead of
        # WAL-logging every block: about 3x faster, and its checkpoint is free without fsync.
        strategy = " STRATEGY FILE_COPY" if self._version >= 150000 else ""
        self.execute(f'CREATE DATABASE "{name}"{strategy}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str) -> Any:
        """Run one statement on the maintenance database (outside a transaction); the first
        column of its first row, if it returns rows."""
        import asyncpg

        async def run() -> Any:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user=self.user, database="postgres"
            )
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return _run_in_thread(run())

    def log_tail(self, lines: int = 30) -> str:
        if self._dir is None:
            return "(no log)"
        try:
            text = (self._dir / "postgres.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _user_kwargs(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(
            args, capture_output=True, text=True, cwd=self._dir, check=False,
            timeout=120, **self._user_kwargs(),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stderr}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log_tail()}")
            if self._accepts_queries():
                self._version = int(self.execute("SHOW server_version_num"))
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not accept connections in {timeout_s}s")

    def _accepts_queries(self) -> bool:
        import asyncpg

        try:
            self.execute("SELECT 1")
        except OSError:  # refused, reset, timed out: not listening yet
            return False
        except asyncpg.CannotConnectNowError:  # "the database system is starting up"
            return False
        return True


def sql_rows(db_url: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``query`` (SQL text, ``:name`` parameters) on the database at
    ``db_url``, SQLite or PostgreSQL alike, callable from sync and async tests: for tests
    that check what reached SQL without going through the repositories."""
    import sqlalchemy as sa

    from livecommerce.persistence.db import Database

    async def run() -> list[tuple[Any, ...]]:
        db = Database(db_url)
        try:
            async with db.session(readonly=True) as s:
                return [tuple(row) for row in await s.execute(sa.text(query), params)]
        finally:
            await db.close()

    return _run_in_thread(run())
