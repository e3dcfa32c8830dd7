"""``livecommerce serve | migrate | user add``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from livecommerce.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecommerce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a server node")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--redis", help="redis://... ; without it: the in-process engine")
    serve.add_argument("--database", help="SQLAlchemy async URL; default: a SQLite file")
    serve.add_argument("--node-id")
    serve.add_argument("--config", help="a TOML file layered over config/default.toml")
    serve.add_argument("--demo", action="store_true", help="seed a host, a live room, products")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--database")
    migrate.add_argument("--config")
    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add a user with a password")
    add.add_argument("--username", required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--role", required=True, choices=["viewer", "host", "staff", "admin"])
    add.add_argument("--database")
    add.add_argument("--config")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "server": {
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "node_id": getattr(args, "node_id", None),
        },
        "redis": {"url": getattr(args, "redis", None)},
        "database": {"url": args.database},
        "demo": True if getattr(args, "demo", False) else None,
    }
    return load_settings(args.config, overrides=overrides)


#: Collector thresholds of a serving node (young, middle, old generation).
GC_THRESHOLDS = (300_000, 50, 100)


def serve(settings: Settings) -> None:
    import uvloop

    from livecommerce.observability import configure_logging

    configure_logging(settings.server.log_level, settings.server.log_json, node=settings.node_id)
    uvloop.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from livecommerce.app import GATEWAY, NODE, create_app, drain
    from livecommerce.transport.wire import node_runner

    app = create_app(settings)
    runner = node_runner(app, app[GATEWAY].wire, access_log=None, handle_signals=False)
    await runner.setup()  # runs the node's start-up: migrate, engine, services
    lines = []
    if settings.demo:
        from livecommerce.demo import seed

        lines = await seed(app[NODE])
    # Everything built so far lives as long as the process: move it out of the collector's
    # sight, and collect less often. With thousands of connections, full collections were
    # a third of a node's CPU in the flash-sale benchmark; young collections in the middle
    # of a burst (5,000 buys in flight are ~100k live objects to scan each time) cost a
    # fifth of its acks/s at 50,000 (docs/benchmarks.md). Cyclic garbage waits longer;
    # everything else is still freed by reference counting at once.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    site = web.TCPSite(runner, settings.server.host, settings.server.port, shutdown_timeout=5)
    await site.start()
    # Printed only once the port accepts connections, so the URLs work when read.
    url = f"http://{settings.server.host}:{settings.server.port}"
    print("\n".join([f"livecommerce {settings.node_id} listening on {url}", *lines]), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Graceful: stop listening first (the balancer's next connect attempt goes to another
    # node), then drain what this node holds, then tear down (writers flushed last).
    await site.stop()
    await drain(app)
    await runner.cleanup()
    print(f"livecommerce {settings.node_id} stopped", flush=True)


async def _migrate(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    from livecommerce.persistence.migrate import migrate

    await migrate(settings.database.url)
    shown = make_url(settings.database.url).render_as_string(hide_password=True)
    print(f"database at head: {shown}")


async def _user_add(settings: Settings, args: argparse.Namespace) -> None:
    from livecommerce.auth import Auth
    from livecommerce.persistence.db import Database
    from livecommerce.persistence.migrate import migrate
    from livecommerce.persistence.repositories import Users

    await migrate(settings.database.url)
    db = Database(settings.database.url)
    try:
        auth = Auth(Users(db), "unused-for-user-add", settings.auth.token_ttl_s)
        user = await auth.add_user(args.username, args.password, args.role)
        print(f"added {user.role} {args.username} ({user.id})")
    finally:
        await db.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "user":
        from livecommerce.errors import DomainError

        try:
            asyncio.run(_user_add(settings, args))
        except DomainError as exc:
            print(f"error: {exc.code}: {exc.message} {exc.extra or ''}", file=sys.stderr)
            raise SystemExit(2) from None


if __name__ == "__main__":
    main()
