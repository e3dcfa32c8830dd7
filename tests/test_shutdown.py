"""Graceful shutdown (SIGTERM): stop accepting, finish in-flight acks, tell clients to
reconnect elsewhere, flush the writers, hand timer leases back — and lose no order.

The first test drives ``drain()`` in-process to look at each step; the others send SIGTERM
to real ``livecommerce serve`` processes while buyers are buying and paying."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from livecommerce.app import drain
from tests.conftest import ack_error, make_user, start_app
from tests.features.flashsale.stampede import eventually_sql, sql_orders
from tests.features.flashsale.stampede import sale as new_sale
from tests.support.client import Api, Client
from tests.support.servers import ServerProcess, add_user, mint_token

ClusterFactory = Callable[..., Awaitable[list[ServerProcess]]]
ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]

PAY_LATENCY_MS = 300  # so that payments are in flight when the signal lands


async def test_drain_finishes_in_flight_refuses_new_work_and_lets_clients_go(
    db_url: str, client_factory: ClientFactory, api_factory: ApiFactory
) -> None:
    app = await start_app(
        db_url,
        payments={"sandbox_latency_ms": 800},
        shutdown={"grace_s": 5.0, "spread_s": 0.1},
    )
    try:
        api = api_factory(app.url)
        host = await make_user(app.node, "anchor", "host")
        host_client = await client_factory(app.url, host)
        _, sale = await new_sale(api, host_client, host, 10, 1)
        buyer = await client_factory(app.url, await make_user(app.node, "payer", "viewer"))
        other = await client_factory(app.url, await make_user(app.node, "late", "viewer"))
        order = (await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"}))[
            "order"
        ]
        paying = asyncio.create_task(buyer.call("order:pay", {"order_id": order["id"]}))
        await asyncio.sleep(0.2)  # the payment is at the (slow) gateway now
        draining = asyncio.create_task(drain(app.server.app))
        await asyncio.sleep(0.1)

        status, ready = await api.request("GET", "/readyz")
        assert status == 503 and ready["checks"]["accepting"] is False
        late = await other.call("flashsale:buy", {"sale_id": sale["id"], "request_id": "1"})
        assert ack_error(late) == "unavailable" and late["error"]["retry_after_ms"] > 0
        refused: list[Any] = []
        newcomer = Client(app.url)
        newcomer.sio.on("connect_error", refused.append)
        try:
            await newcomer.connect()
            raise AssertionError("a draining node accepted a new connection")
        except socketio.exceptions.ConnectionError:
            assert refused[0]["data"]["code"] == "unavailable"
        finally:
            await newcomer.close()

        paid = await paying  # in flight when the drain began: finished and acked
        assert paid["ok"] is True and paid["order"]["status"] == "paid", paid
        await asyncio.wait_for(draining, 10)
        for client in (buyer, other, host_client):
            assert client.received("server:draining")[0]["reconnect"] is True
            await _eventually(lambda c=client: not c.sio.connected)  # type: ignore[misc]
        assert late["ok"] is False and not app.node.engine._running_timers
    finally:
        await app.server.close()


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- SIGTERM under load ---------------------------------------------------------------


@dataclass
class Shopper:
    """A buyer that keeps buying and paying; on ``server:draining`` (or a dropped
    connection) it moves to the next node and re-sends what had no answer, with the same
    request id, as a client of PROTOCOL.md would."""

    user_id: str
    nodes: list[str]
    at: int
    client: Client | None = None
    #: request_id -> order id of every ok buy ack; order id -> last pay ack status
    bought: dict[str, str] = field(default_factory=dict)
    paid: set[str] = field(default_factory=set)
    unanswered_before_signal: list[str] = field(default_factory=list)
    moves: int = 0
    #: told the node is going: a server:draining notice, or an `unavailable` ack
    told: bool = False

    async def connect(self) -> None:
        self.client = Client(self.nodes[self.at], mint_token(self.user_id, self.user_id))
        await self.client.connect()

    async def call(self, event: str, data: dict[str, Any], signalled: list[float]) -> Any:
        while True:
            assert self.client is not None
            sent_at = time.monotonic()
            try:
                ack = await self.client.call(event, data, timeout=10)
            except (socketio.exceptions.BadNamespaceError, socketio.exceptions.TimeoutError):
                if not signalled or sent_at < signalled[0] - 0.05:
                    self.unanswered_before_signal.append(f"{event} {data}")
                await self.move()
                continue
            if ack.get("ok") is False and ack["error"]["code"] == "unavailable":
                self.told = True
                await self.move()  # the node is draining: go elsewhere and send it again
                continue
            return ack

    async def move(self) -> None:
        assert self.client is not None
        self.told |= bool(self.client.received("server:draining"))
        await self.client.close()
        self.at = (self.at + 1) % len(self.nodes)
        self.moves += 1
        await self.connect()

    async def shop(self, sale_id: str, until: asyncio.Event, signalled: list[float]) -> None:
        n = 0
        while not until.is_set():
            n += 1
            rid = f"r{n}"
            ack = await self.call(
                "flashsale:buy", {"sale_id": sale_id, "request_id": rid}, signalled
            )
            assert ack["ok"] is True, ack
            order_id = ack["order"]["id"]
            assert self.bought.setdefault(rid, order_id) == order_id
            if n % 2:
                pay = await self.call("order:pay", {"order_id": order_id}, signalled)
                assert pay["ok"] is True and pay["order"]["status"] == "paid", pay
                self.paid.add(order_id)


async def _run_shoppers(
    nodes: list[ServerProcess], victim: ServerProcess, n: int, sale_id: str, seed: int
) -> list[Shopper]:
    rng = random.Random(seed)
    urls = [node.url for node in nodes]
    shoppers = [Shopper(f"u_sd{seed}_{i}", urls, i % len(urls)) for i in range(n)]
    await asyncio.gather(*(s.connect() for s in shoppers))
    stop, signalled = asyncio.Event(), []
    running = [asyncio.create_task(s.shop(sale_id, stop, signalled)) for s in shoppers]
    await asyncio.sleep(rng.uniform(0.8, 1.5))
    assert victim.proc is not None
    signalled.append(time.monotonic())
    victim.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(victim.proc.wait, 30)
    assert code == 0, victim.log_tail()
    await asyncio.sleep(0.5)  # the survivors keep selling for a moment
    stop.set()
    await asyncio.gather(*running)
    for s in shoppers:
        if s.client is not None:
            await s.client.close()
    return shoppers


def _check_books(shoppers: list[Shopper], rows: list[Any], quantity: int) -> None:
    acked = {oid: s.user_id for s in shoppers for oid in s.bought.values()}
    paid = {oid for s in shoppers for oid in s.paid}
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "an order was written twice"
    assert set(acked) <= set(ids), f"lost {len(set(acked) - set(ids))} acknowledged orders"
    status = {r[0]: r[3] for r in rows}
    assert all(status[oid] == "paid" for oid in paid), "a paid order is not paid in SQL"
    assert sum(r[2] for r in rows if r[3] in ("reserved", "paid")) <= quantity
    unanswered = [u for s in shoppers for u in s.unanswered_before_signal]
    assert unanswered == [], f"in-flight events lost their acks: {unanswered[:5]}"


async def test_sigterm_on_the_only_node_loses_no_acknowledged_order(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """In-process engine, one node: nobody else could finish its writes."""
    (node,) = await cluster(
        1, redis=False, env={"LIVECOMMERCE_PAYMENTS__SANDBOX_LATENCY_MS": str(PAY_LATENCY_MS)}
    )
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(node.url)
    host_client = await client_factory(node.url, host)
    quantity = 100_000
    _, sale = await new_sale(api, host_client, host, quantity, quantity)
    await host_client.close()
    urls_seen: list[Shopper] = []

    async def shop() -> None:
        # Only one node: after the drain there is nowhere to go, so shoppers just stop.
        stop, signalled = asyncio.Event(), [0.0]
        shoppers = [Shopper(f"u_solo_{i}", [node.url], 0) for i in range(30)]
        await asyncio.gather(*(s.connect() for s in shoppers))
        urls_seen.extend(shoppers)

        async def until_gone(s: Shopper) -> None:
            try:
                await s.shop(sale["id"], stop, signalled)
            except Exception:  # its move() found no node: the end of its day
                pass

        running = [asyncio.create_task(until_gone(s)) for s in shoppers]
        await asyncio.sleep(1.0)
        assert node.proc is not None
        signalled[0] = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 30)
        assert code == 0, node.log_tail()
        stop.set()
        await asyncio.gather(*running)

    await shop()
    log = node.log_path.read_text()
    assert "node_drained" in log and "logs_flushed" in log
    for s in urls_seen:
        assert s.told, f"{s.user_id} was neither told to reconnect nor answered unavailable"
    rows = sql_orders(db_url, sale["id"])
    assert len(rows) > 30
    _check_books(urls_seen, rows, quantity)


async def test_sigterm_under_load_moves_clients_and_loses_no_order(
    cluster: ClusterFactory, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """Two nodes on Redis: the stopped node's shoppers finish on the other one."""
    nodes = await cluster(2, env={"LIVECOMMERCE_PAYMENTS__SANDBOX_LATENCY_MS": str(PAY_LATENCY_MS)})
    host = await add_user(db_url, "anchor", "host")
    api = api_factory(nodes[1].url)
    host_client = await client_factory(nodes[1].url, host)
    quantity = 100_000
    _, sale = await new_sale(api, host_client, host, quantity, quantity)
    shoppers = await _run_shoppers(nodes, nodes[0], 40, sale["id"], seed=5)
    moved = [s for s in shoppers if s.moves]
    assert len(moved) >= 15, "the stopped node's shoppers should have moved"
    assert all(s.client is not None for s in moved)
    want = {oid for s in shoppers for oid in s.bought.values()}
    paid = {oid for s in shoppers for oid in s.paid}
    rows = await eventually_sql(db_url, sale["id"], want, paid=paid)
    _check_books(shoppers, rows, quantity)
    status, _ = await api.request("GET", "/readyz")
    assert status == 200
