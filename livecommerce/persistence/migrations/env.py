"""Alembic environment.

``livecommerce.persistence.migrate`` passes an open connection in
``config.attributes["connection"]`` and we run on it. Run from the ``alembic`` command line
(``alembic -c livecommerce/persistence/alembic.ini ...``) we open our own async connection
through ``Database``, so the same SQLite PRAGMAs and BEGIN handling apply.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from livecommerce.persistence.db import Database
from livecommerce.persistence.models import Base

config = context.config
if config.config_file_name is not None:  # the CLI; never clobber the server's logging
    fileConfig(config.config_file_name)
target_metadata = Base.metadata


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get(
        "LIVECOMMERCE_DATABASE_URL", "sqlite+aiosqlite:///var/livecommerce.db"
    )


async def _run_standalone() -> None:
    db = Database(_url())
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(do_run_migrations)
    finally:
        await db.close()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_run_standalone())  # the alembic CLI: no loop is running
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
