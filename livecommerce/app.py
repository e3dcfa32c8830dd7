"""create_app(settings) wires one node: database, engine, services, transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from aiohttp import web

from livecommerce.auth import Auth, resolve_secret
from livecommerce.engine import Engine, create_engine
from livecommerce.features.comments.keywords import warm_up
from livecommerce.features.comments.likes import LikeService
from livecommerce.features.comments.service import CommentService
from livecommerce.features.comments.writer import CommentWriter
from livecommerce.features.draws.service import DrawService
from livecommerce.features.flashsale.orders import OrderWriter
from livecommerce.features.flashsale.reconcile import reconcile
from livecommerce.features.flashsale.service import FlashSaleService
from livecommerce.features.groupbuy.reconcile import reconcile as reconcile_groups
from livecommerce.features.groupbuy.service import GroupBuyService
from livecommerce.features.metrics.cluster import ClusterReport
from livecommerce.features.metrics.service import MetricsService
from livecommerce.features.moderation.service import ModerationService
from livecommerce.features.payments.provider import SandboxProvider
from livecommerce.features.pk.service import PkService
from livecommerce.features.rooms.service import RoomService
from livecommerce.observability import Metrics
from livecommerce.persistence.commerce import FlashSales, Payments
from livecommerce.persistence.db import Database
from livecommerce.persistence.draws import Draws
from livecommerce.persistence.groupbuy import Coupons, GroupCampaigns, GroupRecords
from livecommerce.persistence.metrics import MetricsHistory
from livecommerce.persistence.migrate import migrate
from livecommerce.persistence.pk import PkBattles
from livecommerce.persistence.repositories import Orders, Products, Rooms, Secrets, Users
from livecommerce.persistence.social import Audit, Comments, LikeTotals
from livecommerce.settings import Settings
from livecommerce.transport import (
    comment_events,
    draw_events,
    flashsale_events,
    groupbuy_events,
    metrics_events,
    pk_events,
    room_events,
)
from livecommerce.transport.dispatch import Dispatcher
from livecommerce.transport.gauges import watch_node
from livecommerce.transport.http import add_routes
from livecommerce.transport.limits import Limits
from livecommerce.transport.socket import SocketGateway, create_server

log = structlog.get_logger(__name__)


class Node:
    """Everything one server process holds. Built on start-up, torn down on shutdown;
    transport reads the services from here at call time."""

    db: Database
    engine: Engine
    auth: Auth
    users: Users
    orders: Orders
    rooms: RoomService
    flashsales: FlashSaleService
    payments: SandboxProvider
    comments: CommentService
    likes: LikeService
    moderation: ModerationService
    audit: Audit
    draws: DrawService
    pk: PkService
    groupbuys: GroupBuyService
    room_metrics: MetricsService
    cluster: ClusterReport

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.metrics = Metrics(self.node_id)
        #: Shutting down (SIGTERM): /readyz says 503 so the balancer stops sending clients.
        self.draining = False
        self.limits = Limits(settings.limits)

    async def start(self) -> None:
        s = self.settings
        await migrate(s.database.url)
        self.db = Database(s.database.url, sqlite_busy_timeout_ms=s.database.sqlite_busy_timeout_ms)
        self.engine = create_engine(
            s.redis_url, self.node_id, cluster=s.redis.cluster, **s.engine.model_dump()
        )
        self.users = Users(self.db)
        self.orders = Orders(self.db)
        secret = await resolve_secret(s.auth.secret, Secrets(self.db))
        self.auth = Auth(self.users, secret, s.auth.token_ttl_s)
        self.rooms = RoomService(
            self.engine, Rooms(self.db), Products(self.db), self.users, self.orders
        )
        pay = s.payments
        self.payments = SandboxProvider(
            Payments(self.db),
            pay.sandbox_decline_prefix,
            pay.sandbox_latency_ms,
            pay.sandbox_refund_latency_ms,
        )
        paying = self.metrics.count_payments(self.payments)  # what the provider answers
        self.flashsales = FlashSaleService(
            self.engine, self.rooms, FlashSales(self.db), self.orders, paying
        )
        self.order_writer = OrderWriter(self.engine, self.orders)
        self.comments = CommentService(self.engine, self.rooms, s.comments)
        stored = Comments(self.db)
        self.comment_writer = CommentWriter(self.engine, stored)
        self.likes = LikeService(self.engine, self.rooms, LikeTotals(self.db), s.likes)
        self.audit = Audit(self.db)
        self.moderation = ModerationService(
            self.engine, self.rooms, self.comments, self.users, self.audit, stored
        )
        self.draws = DrawService(
            self.engine, self.rooms, self.comments, Draws(self.db), s.draws.min_duration_s
        )
        self.pk = PkService(self.engine, self.rooms, self.users, PkBattles(self.db), s.pk)
        self.groupbuys = GroupBuyService(
            self.engine,
            self.rooms,
            GroupCampaigns(self.db),
            GroupRecords(self.db),
            Coupons(self.db),
            paying,
            min_ttl_s=s.groupbuy.min_ttl_s,
            coupon_cents=s.groupbuy.coupon_cents,
        )
        self.flashsales.paid_hooks.append(self._paid)
        self.groupbuys.confirmed_hooks.append(self._paid)  # a group's orders, once it succeeds
        parts = [self.flashsales._snapshot, self.groupbuys._snapshot, self.pk._snapshot]
        self.room_metrics = MetricsService(
            self.engine, self.rooms, self.comments, parts, MetricsHistory(self.db), s.metrics
        )
        self.comments.batch_hooks.append(self.room_metrics.on_comments)
        self.cluster = ClusterReport(self.engine, s.metrics.cluster_report_s)
        self.likes.add_hook(self._liked)
        self.metrics.watch(
            "livecommerce_timers_fired",
            "Timers fired by this node",
            lambda: self.engine.timers_fired,
        )
        self.metrics.watch(
            "livecommerce_rooms_local",
            "Rooms with members on this node",
            lambda: len(self.engine.local_rooms()),
        )

    async def _paid(self, order: dict[str, Any]) -> None:
        amounts = {order["user_id"]: order["amount_cents"]}
        await self.pk.add_scores(order["room_id"], amounts, "sales")
        await self.room_metrics.on_paid(order)

    async def _liked(self, room_id: str, taps: Mapping[str, int]) -> None:
        await self.pk.add_scores(room_id, taps, "likes")

    async def reconcile(self) -> None:
        try:
            await reconcile(self.flashsales)
        except Exception:
            log.exception("reconcile_failed")
        try:
            await reconcile_groups(self.groupbuys)
        except Exception:
            log.exception("groupbuy_reconcile_failed")

    async def stop(self) -> None:
        await self.room_metrics.close()
        await self.cluster.close()
        await self.flashsales.close()
        await self.draws.close()
        await self.pk.close()
        await self.comments.close()
        await self.likes.close()
        with contextlib.suppress(Exception):
            # Orders and comments acked here reach SQL before the process goes (on Redis
            # another node would write them anyway; in-process there is no other node).
            written = await self.engine.drain_logs(rounds=1000)
            log.info("logs_flushed", entries=written)
        await self.engine.close()
        await self.db.close()


NODE = web.AppKey("node", Node)
GATEWAY = web.AppKey("gateway", SocketGateway)


async def drain(app: web.Application) -> None:
    """Graceful shutdown, between "stop listening" and the runner's cleanup (cli.py):
    readiness goes 503, in-flight events finish and are acked, clients are told to
    reconnect elsewhere and let go, running timers finish or are handed back to the
    cluster. The cleanup then flushes the writers and closes the engine and database."""
    node, gateway = app[NODE], app[GATEWAY]
    s = node.settings.shutdown
    node.draining = True
    log.info("node_draining", node_id=node.node_id, connections=len(gateway.conns))
    await asyncio.gather(gateway.drain(s.grace_s, s.spread_s), node.engine.stop_timers(s.grace_s))
    log.info("node_drained", node_id=node.node_id)


def create_app(settings: Settings) -> web.Application:
    node = Node(settings)
    app = web.Application(client_max_size=256 * 1024)
    app[NODE] = node
    sio = create_server(settings)
    dispatcher = Dispatcher(node.metrics, _room_host(node))
    gateway = SocketGateway(sio, node, dispatcher)
    app[GATEWAY] = gateway
    room_events.register(dispatcher, gateway, node)
    flashsale_events.register(dispatcher, node)
    comment_events.register(dispatcher, node)
    draw_events.register(dispatcher, node)
    pk_events.register(dispatcher, node)
    groupbuy_events.register(dispatcher, node)
    metrics_hub = metrics_events.register(dispatcher, gateway, node)
    sio.attach(app)
    add_routes(app, node)
    metrics_events.add_routes(app, node)

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await node.start()
        watch_node(node, gateway)
        node.engine.set_sinks(gateway.deliver_room, gateway.deliver_user)
        node.engine.busy = gateway.busy
        await node.engine.start()
        gateway.start()
        node.draws.local_members = gateway.signed_in_members
        node.draws.start()
        node.room_metrics.start()
        node.cluster.connections = lambda: len(gateway.conns)
        node.cluster.start()
        reconciling = asyncio.create_task(node.reconcile())
        # jieba loads its dictionary (~1 s) now, in a thread, not on the first comment.
        warming = asyncio.create_task(asyncio.to_thread(warm_up))
        log.info("node_started", node_id=node.node_id, engine=node.engine.kind)
        yield
        log.info("node_stopping", node_id=node.node_id)
        await reconciling
        await warming
        await metrics_hub.stop()
        await gateway.stop()
        await node.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def _room_host(node: Node):  # type: ignore[no-untyped-def]
    async def host_of(payload: object) -> str | None:
        room_id = getattr(payload, "room_id", None)
        if not isinstance(room_id, str):
            return None
        return (await node.rooms.get(room_id)).host_id

    return host_of
