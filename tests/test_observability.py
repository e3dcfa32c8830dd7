"""Operations: /metrics counts what happened (buys by outcome, payments, timers, comments
and their drops, connections, queues), logs carry the ids of what they are about, and
HTTP answers carry an X-Request-Id.

Everything runs on real nodes with real Socket.IO clients; the metrics are read the way
Prometheus reads them, over HTTP, and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from livecommerce.app import GATEWAY
from livecommerce.features.access import Access
from livecommerce.features.schemas import Payload
from livecommerce.observability import merge_event_context
from livecommerce.persistence.migrate import migrate
from livecommerce.transport.dispatch import Call
from tests.conftest import AppServer, ack_error, make_user
from tests.support.client import Api, Client
from tests.support.rawws import StalledClient
from tests.support.servers import ServerProcess, add_user

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
NODE = "test-node"
_ids = itertools.count(1)


def rid() -> str:
    return f"rq-{next(_ids)}"


async def scrape(api: Api, node: str = NODE) -> Samples:
    """GET /metrics as Prometheus would: every series must name its node."""
    status, text = await api.request("GET", "/metrics")
    assert status == 200, text
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("node") == node, sample
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "node")
            found[(sample.name, labels)] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no series {name}{labels}"
    return samples[key]


def values(samples: Samples, name: str, label: str) -> dict[str, float]:
    """label value -> sample value, for every series of ``name``."""
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name}


async def live_room(server: AppServer, api: Api) -> tuple[str, str, str]:
    host = await make_user(server.node, "anchor", "host")
    room_id = (await api.ok("POST", "/api/rooms", host, {"title": "Ops"}))["id"]
    product = {"title": "Tea", "price_cents": 2000, "stock": 100}
    product_id = (await api.ok("POST", f"/api/rooms/{room_id}/products", host, product))["id"]
    await api.ok("POST", f"/api/rooms/{room_id}/start", host)
    return host, room_id, product_id


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def batches(client: Client) -> list[dict[str, Any]]:
    return client.received("comment:batch")


def shown_and_dropped(client: Client) -> int:
    """Comments a viewer saw (merged ones count as many) plus those it was told it missed."""
    return sum(
        sum(item.get("count", 1) for item in b["items"]) + b.get("dropped", 0)
        for b in batches(client)
    )


async def test_metrics_count_buys_payments_timers_comments_and_drops(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    # viewer_rate 1/s: a burst of comments is mostly sampled out of the shared frame.
    server = await node_factory(comments={"viewer_rate": 1})
    await shop_and_chat(server, api_factory(server.url), client_factory)


async def shop_and_chat(server: AppServer, api: Api, client_factory: ClientFactory) -> None:
    host_token, room, product = await live_room(server, api)
    host = await client_factory(server.url, host_token)
    people: dict[str, Client] = {}
    user_ids: dict[str, str] = {}
    for name in ("alice", "bob", "eve", "dave", "decline-carl", "mo"):
        token, user = await api.guest(name)
        people[name], user_ids[name] = await client_factory(server.url, token), user["id"]
    watcher = await client_factory(server.url)  # anonymous: only ever the shared frame
    everyone = [host, watcher, *people.values()]
    for client in everyone:
        await client.ok("room:join", {"room_id": room})
    alice, bob, eve, dave, carl, mo = people.values()

    # -- flash sales: one live now (2 units, 1 per user), one starting in 0.8 s -------------
    sale = {"room_id": room, "product_id": product, "price_cents": 990, "duration_s": 60}
    now = (await host.ok("flashsale:create", {**sale, "quantity": 2}))["sale"]["id"]
    starts_at = int(time.time() * 1000) + 800
    later = await host.ok("flashsale:create", {**sale, "quantity": 5, "starts_at": starts_at})
    later_id = later["sale"]["id"]

    def buy(client: Client, sale_id: str) -> Awaitable[dict[str, Any]]:
        return client.call("flashsale:buy", {"sale_id": sale_id, "request_id": rid()})

    order = (await buy(alice, now))["order"]
    assert ack_error(await buy(alice, now)) == "limit_exceeded"
    assert (await buy(bob, now))["ok"] is True
    assert ack_error(await buy(eve, now)) == "sold_out"
    assert ack_error(await buy(carl, later_id)) == "not_started"
    assert ack_error(await buy(carl, "fs_nope")) == "not_found"
    assert (await alice.ok("order:pay", {"order_id": order["id"]}))["order"]["status"] == "paid"
    await host.wait_for("flashsale:update", lambda d: d["sale"]["id"] == later_id and
                        d["sale"]["status"] == "live")  # fmt: skip
    carl_order = (await buy(carl, later_id))["order"]
    ack = await carl.call("order:pay", {"order_id": carl_order["id"]})
    assert ack_error(ack) == "payment_failed"

    # -- group buy: groups of two ---------------------------------------------------------
    terms = {"room_id": room, "product_id": product, "group_size": 2, "price_cents": 1500,
             "group_ttl_s": 600, "duration_s": 3600}  # fmt: skip
    campaign = (await host.ok("groupbuy:create", terms))["campaign"]["id"]
    group = await alice.ok("groupbuy:open", {"campaign_id": campaign, "request_id": rid()})
    group_id = group["group"]["id"]

    def join(client: Client) -> Awaitable[dict[str, Any]]:
        return client.call("groupbuy:join", {"group_id": group_id, "request_id": rid()})

    assert ack_error(await join(alice)) == "already_joined"
    assert (await join(bob))["group"]["status"] == "succeeded"
    assert ack_error(await join(dave)) == "group_full"
    ack = await carl.call("groupbuy:open", {"campaign_id": campaign, "request_id": rid()})
    assert ack_error(ack) == "payment_failed"

    # -- comments: a burst, one sender over its rate, a banned word, a muted sender --------
    await host.ok("mod:banned_words", {"room_id": room, "add": ["spam"]})
    await host.ok("mod:mute", {"room_id": room, "user_id": user_ids["mo"], "duration_s": 60})

    def say(client: Client, text: str) -> Awaitable[dict[str, Any]]:
        return client.call("comment:send", {"room_id": room, "text": text, "request_id": rid()})

    acks = await asyncio.gather(
        *(say(c, f"{name} {i}") for c, name in ((bob, "bob"), (eve, "eve"), (dave, "dave"))
          for i in range(3)),
        *(say(alice, f"alice {i}") for i in range(5)),  # burst 3: some are refused
    )  # fmt: skip
    accepted = sum(1 for a in acks if a["ok"])
    limited = [a for a in acks if not a["ok"]]
    assert limited and all(a["error"]["code"] == "rate_limited" for a in limited)
    assert ack_error(await say(eve, "cheap spam here")) == "blocked"
    assert ack_error(await say(mo, "hello")) == "muted"
    # Every comment reached every viewer, shown or counted as dropped.
    await until(lambda: shown_and_dropped(watcher) == accepted)
    await until(lambda: all(shown_and_dropped(c) >= accepted for c in everyone))
    sampled = sum(b.get("dropped", 0) for b in batches(watcher))
    assert sampled > 0, "viewer_rate 1/s must sample a burst"
    frames = sum(len(batches(c)) for c in everyone)

    m = await scrape(api)
    buys = "livecommerce_buys_total"
    assert value(m, buys, kind="flashsale", outcome="ok") == 3
    assert value(m, buys, kind="flashsale", outcome="limit_exceeded") == 1
    assert value(m, buys, kind="flashsale", outcome="sold_out") == 1
    assert value(m, buys, kind="flashsale", outcome="not_started") == 1
    assert value(m, buys, kind="flashsale", outcome="not_found") == 1
    assert value(m, buys, kind="groupbuy", outcome="ok") == 2
    assert value(m, buys, kind="groupbuy", outcome="already_joined") == 1
    assert value(m, buys, kind="groupbuy", outcome="group_full") == 1
    assert value(m, buys, kind="groupbuy", outcome="payment_failed") == 1
    assert value(m, buys, kind="groupbuy", outcome="sold_out") == 0  # pre-made, at zero
    pays = "livecommerce_payments_total"
    assert value(m, pays, op="charge", outcome="ok") == 3  # alice's order, two group seats
    assert value(m, pays, op="charge", outcome="declined") == 2
    assert value(m, pays, op="charge", outcome="error") == 0
    assert value(m, "livecommerce_payment_seconds_count", op="charge") == 5
    events = "livecommerce_events_total"
    assert value(m, events, event="order:pay", outcome="ok") == 1
    assert value(m, events, event="order:pay", outcome="payment_failed") == 1

    # the sale's start timer: fired once, a little after its due time
    assert value(m, "livecommerce_timer_runs_total", kind="sale.start", outcome="ok") == 1
    assert value(m, "livecommerce_timer_lag_seconds_count", kind="sale.start") == 1
    assert 0 <= value(m, "livecommerce_timer_lag_seconds_sum", kind="sale.start") < 1.0
    runs = sum(v for (n, k), v in m.items()
               if n == "livecommerce_timer_runs_total" and ("outcome", "ok") in k)  # fmt: skip
    assert runs == value(m, "livecommerce_timers_fired")

    # orders and group seats reached SQL through the durable logs, every entry counted
    written = {
        log: value(m, "livecommerce_log_entries_total", log=log, outcome="written")
        for log in ("orders", "groupbuy")
    }
    assert written["orders"] == server.node.order_writer.written > 0
    assert written["groupbuy"] == server.node.groupbuys.writer.written > 0
    assert value(m, "livecommerce_log_write_seconds_count", log="orders") > 0

    # comments: published, delivered, dropped by reason
    assert value(m, "livecommerce_comment_publish_items_sum") == accepted
    assert value(m, "livecommerce_comment_batch_items_sum") == accepted
    assert value(m, "livecommerce_comment_frames_total") == frames
    drops = values(m, "livecommerce_comments_dropped_total", "reason")
    assert drops == {
        "sampled": sampled,
        "slow_consumer": 0,
        "rate_limited": len(limited),
        "blocked": 1,
        "muted": 1,
    }

    # connections, rooms and queues of this node
    assert value(m, "livecommerce_connections") == len(everyone)
    assert values(m, "livecommerce_connections_by_transport", "transport") == {
        "websocket": len(everyone),
        "polling": 0,
    }
    assert value(m, "livecommerce_rooms_local") == 1
    assert value(m, "livecommerce_room_members_local") == len(everyone)
    assert values(m, "livecommerce_queue_depth", "queue") == {
        "comments_publish": 0,
        "comments_tick": 0,
        "like_taps": 0,
        "outbound_frames": 0,
    }
    assert value(m, "livecommerce_node_info", engine="memory") == 1

    await watcher.close()
    for _ in range(100):
        m = await scrape(api)
        if value(m, "livecommerce_connections") == len(everyone) - 1:
            break
        await asyncio.sleep(0.05)
    assert value(m, "livecommerce_connections") == len(everyone) - 1
    # the client says goodbye and closes its socket: whichever the server sees first
    [(reason, count)] = values(m, "livecommerce_disconnects_total", "reason").items()
    assert reason in ("client_disconnect", "transport_close") and count == 1


async def test_comments_lost_to_a_cut_off_reader_are_counted(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    server = await node_factory(transport={"out_buffer_max": 8192, "ws_sndbuf": 4096})
    api = api_factory(server.url)
    host_token, room, _ = await live_room(server, api)
    host = await client_factory(server.url, host_token)
    await host.ok("room:join", {"room_id": room})
    stalled = StalledClient(server.url)
    await stalled.connect_and_join(room)
    sent = 0
    try:
        for start in range(0, 600, 50):  # host comments: never sampled, all go out
            await asyncio.gather(*(
                host.ok("comment:send", {"room_id": room, "text": f"{i} " + "x" * 90})
                for i in range(start, start + 50)
            ))  # fmt: skip
            sent += 50
            m = await scrape(api)
            if value(m, "livecommerce_slow_consumers_cut_total") == 1:
                break
    finally:
        stalled.close()
    assert value(m, "livecommerce_slow_consumers_cut_total") == 1
    lost = value(m, "livecommerce_comments_dropped_total", reason="slow_consumer")
    # at least the frame that found it over its limit; never more than was sent
    assert 1 <= lost <= sent
    assert value(m, "livecommerce_comments_dropped_total", reason="sampled") == 0


class Boom(Payload):
    room_id: str
    request_id: str


async def test_a_fault_is_logged_once_with_its_ids_and_answered_internal(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """A bug in a handler: the client gets the documented unavailable / "internal error"
    ack, the log one error line with the traceback and the event's ids, the metrics an
    ``internal`` outcome (not ``unavailable``: no backend was down)."""
    dispatcher = app_server.server.app[GATEWAY].dispatcher

    @dispatcher.on("test:boom", Boom, Access.WATCH)
    async def boom(call: Call[Boom]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    client = await client_factory(app_server.url)
    payload = {"room_id": "r_ops", "request_id": "rq-boom"}
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, merge_event_context]
    ) as lines:
        ack = await client.call("test:boom", payload)
        refused = await client.call("room:join", {"room_id": "r_missing", "request_id": "rq-2"})
    assert ack == {"ok": False, "error": {"code": "unavailable", "message": "internal error"}}
    assert ack_error(refused) == "not_found"
    failed = [line for line in lines if line["event"] == "event_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and failed[0]["exc_info"]
    assert failed[0]["room_id"] == "r_ops" and failed[0]["request_id"] == "rq-boom"
    assert failed[0]["socket_event"] == "test:boom" and failed[0]["sid"]
    [info] = [line for line in lines if line["event"] == "event_refused"]
    assert info["log_level"] == "info" and info["code"] == "not_found"
    assert info["room_id"] == "r_missing" and info["request_id"] == "rq-2"
    m = await scrape(api_factory(app_server.url))
    assert value(m, "livecommerce_events_total", event="test:boom", outcome="internal") == 1
    assert value(m, "livecommerce_events_total", event="room:join", outcome="not_found") == 1


async def test_http_answers_carry_a_request_id(
    app_server: AppServer, api_factory: ApiFactory
) -> None:
    api = api_factory(app_server.url)

    async def request_id(path: str, sent: str | None) -> tuple[int, str]:
        headers = {"X-Request-Id": sent} if sent is not None else {}
        async with api.session.get(app_server.url + path, headers=headers) as res:
            return res.status, res.headers["X-Request-Id"]

    assert await request_id("/healthz", "trace-7f3a.1:b") == (200, "trace-7f3a.1:b")
    assert await request_id("/api/rooms/nope", "abc-123") == (404, "abc-123")
    for unfit in (None, "", "has space", "x" * 129, "<script>"):
        status, made = await request_id("/healthz", unfit)
        assert status == 200 and len(made) == 32 and int(made, 16) >= 0, (unfit, made)
    _, first = await request_id("/healthz", None)
    _, second = await request_id("/healthz", None)
    assert first != second
    m = await scrape(api)
    assert value(m, "livecommerce_http_requests_total", route="/healthz", status="200") == 8


async def test_serve_writes_json_lines_with_the_ids_of_each_event(
    tmp_path: Path, db_url: str, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """``python -m livecommerce serve`` with server.log_json: stderr is JSON lines, and a
    socket event's lines carry the node, the connection, the user, the room and the
    request id."""
    await migrate(db_url)
    env = {"LIVECOMMERCE_SERVER__LOG_JSON": "true"}
    node = ServerProcess("obs1", db_url, None, tmp_path, env)
    await node.start()
    try:
        host = await add_user(db_url, "anchor", "host")
        api = api_factory(node.url)
        room = (await api.ok("POST", "/api/rooms", host, {"title": "Logged"}))["id"]
        await api.ok("POST", f"/api/rooms/{room}/start", host)
        host_c = await client_factory(node.url, host)
        await host_c.ok("room:join", {"room_id": room})
        await host_c.ok("mod:banned_words", {"room_id": room, "add": ["spam"]})
        token, viewer = await api.guest("vic")
        vic = await client_factory(node.url, token)
        payload = {"room_id": room, "text": "spam spam", "request_id": "rq-json-1"}
        assert ack_error(await vic.call("comment:send", payload)) == "blocked"
        async with api.session.get(
            f"{node.url}/api/rooms/r_nope", headers={"X-Request-Id": "rq-http-1"}
        ) as res:
            assert res.status == 404 and res.headers["X-Request-Id"] == "rq-http-1"
        m = await scrape(api, node="obs1")
        assert value(m, "livecommerce_comments_dropped_total", reason="blocked") == 1
        await until(lambda: "rq-http-1" in node.log_path.read_text())
        text = node.log_path.read_text().splitlines()
    finally:
        node.stop()
    # stdout's banner aside (the same file here), every line is a JSON object
    banner = f"livecommerce obs1 listening on http://127.0.0.1:{node.port}"
    assert [x for x in text if x[:1] != "{"] == [banner]
    parsed = [json.loads(x) for x in text if x[:1] == "{"]
    assert all(x["node"] == "obs1" and x["level"] and x["timestamp"] for x in parsed)
    [refused] = [x for x in parsed if x["event"] == "event_refused"]
    assert refused["code"] == "blocked" and refused["level"] == "info"
    assert refused["room_id"] == room and refused["request_id"] == "rq-json-1"
    assert refused["user_id"] == viewer["id"] and refused["socket_event"] == "comment:send"
    assert refused["sid"]
    [http] = [x for x in parsed if x.get("request_id") == "rq-http-1"]
    assert http["event"] == "http_refused" and http["code"] == "not_found"
    assert http["room_id"] == "r_nope" and http["http_path"] == "/api/rooms/r_nope"
    assert any(x.get("logger") == "alembic.runtime.migration" for x in parsed)


async def test_on_redis_timer_lag_and_the_engine_inbox_are_measured(
    node_factory: NodeFactory, redis_url: str, api_factory: ApiFactory
) -> None:
    server = await node_factory(redis={"url": redis_url})
    api = api_factory(server.url)
    host = await make_user(server.node, "anchor", "host")
    starts_at = int(time.time() * 1000) + 500
    room = await api.ok("POST", "/api/rooms", host, {"title": "At once", "starts_at": starts_at})
    await until(lambda: server.node.engine.timers_fired == 1)
    m = await scrape(api)
    assert value(m, "livecommerce_node_info", engine="redis") == 1
    assert value(m, "livecommerce_timer_runs_total", kind="room.start", outcome="ok") == 1
    assert value(m, "livecommerce_timer_lag_seconds_count", kind="room.start") == 1
    assert 0 <= value(m, "livecommerce_timer_lag_seconds_sum", kind="room.start") < 1.0
    assert value(m, "livecommerce_queue_depth", queue="engine_inbox") == 0
    assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["status"] == "live"
