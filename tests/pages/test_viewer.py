"""The viewer's live room (static/room.html + static/js/room.js) in a real browser, with the
server side driven by real Socket.IO clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import AppServer, make_user
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
T = 10_000  # ms, for every wait on the page
XSS = "<img src=x onerror=alert(1)>"


@dataclass
class Room:
    server: AppServer
    api: Api
    host: Client
    room_id: str
    product_id: str


async def live_room(
    server: AppServer, api: Api, clients: ClientFactory, host_name: str = "anchor"
) -> Room:
    token = await make_user(server.node, host_name, "host")
    room_id = (await api.ok("POST", "/api/rooms", token, {"title": f"{host_name}的直播间"}))["id"]
    product = {"title": "龙井茶 Tea", "price_cents": 2000, "stock": 100}
    product_id = (await api.ok("POST", f"/api/rooms/{room_id}/products", token, product))["id"]
    await api.ok("POST", f"/api/rooms/{room_id}/start", token)
    host = await clients(server.url, token)
    await host.ok("room:join", {"room_id": room_id})
    return Room(server, api, host, room_id, product_id)


async def viewer(room: Room, clients: ClientFactory, name: str) -> Client:
    token, _ = await room.api.guest(name)
    client = await clients(room.server.url, token)
    await client.ok("room:join", {"room_id": room.room_id})
    return client


@pytest.fixture
async def page(page: Page) -> AsyncIterator[Page]:
    """The browser page, failing the test on any uncaught script error."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    assert errors == []


async def open_page(page: Page, room: Room, query: str = "") -> None:
    await page.goto(f"{room.server.url}/rooms/{room.room_id}{query}")
    await expect(page.get_by_test_id("room-status")).to_contain_text("LIVE", timeout=T)


async def page_user(page: Page) -> dict[str, Any]:
    user = await page.evaluate("window.lcRoom.me")
    assert isinstance(user, dict) and user["id"]
    return user


async def test_comments_from_others_render_as_text_in_the_list_and_as_danmaku(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory, page: Page
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    room = await live_room(app_server, api_factory(app_server.url), client_factory)
    await room.host.ok("comment:send", {"room_id": room.room_id, "text": "欢迎来到直播间"})
    await open_page(page, room)
    comments = page.get_by_test_id("comment-list")
    await expect(comments).to_contain_text("欢迎来到直播间", timeout=T)  # recent_comments
    ann = await viewer(room, client_factory, "Ann")
    await ann.ok("comment:send", {"room_id": room.room_id, "text": "大家好 hello"})
    await expect(comments).to_contain_text("大家好 hello", timeout=T)
    await expect(page.get_by_test_id("danmaku")).to_contain_text("大家好 hello", timeout=T)
    await ann.ok("comment:send", {"room_id": room.room_id, "text": XSS})
    await expect(comments).to_contain_text(XSS, timeout=T)
    await expect(page.get_by_test_id("danmaku")).to_contain_text(XSS, timeout=T)
    await room.host.ok("comment:send", {"room_id": room.room_id, "text": "主播来了"})
    host_line = page.get_by_test_id("comment").filter(has_text="主播来了")
    await expect(host_line).to_have_class("comment role-host", timeout=T)
    await expect(host_line).to_contain_text("主播")
    await expect(page.get_by_test_id("online")).to_contain_text("3", timeout=T)
    assert await page.locator("img[src=x]").count() == 0
    assert await page.locator("img").count() == 0
    # moderation removes a comment from the list
    xss_id = await page.get_by_test_id("comment").filter(has_text=XSS).get_attribute("data-id")
    await room.host.ok("mod:delete_comment", {"room_id": room.room_id, "comment_id": xss_id})
    await expect(comments).not_to_contain_text(XSS, timeout=T)
    assert dialogs == []


async def test_the_viewer_buys_and_pays_a_flash_sale(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory, page: Page
) -> None:
    room = await live_room(app_server, api_factory(app_server.url), client_factory)
    await open_page(page, room)
    terms = {"room_id": room.room_id, "product_id": room.product_id, "price_cents": 990,
             "quantity": 5, "duration_s": 60}  # fmt: skip
    sale = (await room.host.ok("flashsale:create", terms))["sale"]
    card = page.locator(f'[data-testid=flashsale][data-sale-id="{sale["id"]}"]')
    await expect(card.get_by_test_id("flashsale-left")).to_have_text("5 / 5 left", timeout=T)
    await expect(card.get_by_test_id("flashsale-countdown")).to_contain_text("ends in 0:5")
    await expect(card).to_contain_text("¥9.90")
    await card.get_by_test_id("flashsale-buy").click()
    await expect(card.get_by_test_id("order-status")).to_contain_text("Reserved", timeout=T)
    await expect(card.get_by_test_id("flashsale-left")).to_have_text("4 / 5 left", timeout=T)
    await card.get_by_test_id("order-pay").click()
    await expect(card.get_by_test_id("order-status")).to_contain_text("Paid", timeout=T)
    # a second unit passes the per-user limit: said in words
    await card.get_by_test_id("flashsale-buy").click()
    await expect(card.get_by_test_id("flashsale-error")).to_contain_text("limit", timeout=T)
    state = (await room.host.ok("room:join", {"room_id": room.room_id}))["state"]
    assert [s["left"] for s in state["flashsales"]] == [4]
    user = await page_user(page)
    orders = await room.server.node.rooms.orders.list_for_user(user["id"], room_id=room.room_id)
    assert [o.status for o in orders] == ["paid"]


async def test_group_buy_draw_and_pk_on_the_page(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory, page: Page
) -> None:
    server = await node_factory(
        draws={"min_duration_s": 1},
        pk={"min_duration_s": 1, "update_ms": 100},
        likes={"broadcast_ms": 100},
        groupbuy={"min_ttl_s": 1},
    )
    api = api_factory(server.url)
    room = await live_room(server, api, client_factory, "host_a")
    other = await live_room(server, api, client_factory, "host_b")
    # a group buy: someone leads a group of 3, the page auto-matches into it
    terms = {"room_id": room.room_id, "product_id": room.product_id, "group_size": 3,
             "price_cents": 1000, "group_ttl_s": 600, "duration_s": 3600}  # fmt: skip
    campaign = (await room.host.ok("groupbuy:create", terms))["campaign"]
    leader = await viewer(room, client_factory, "Leader")
    ack = await leader.ok("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "r1"})
    group_id = ack["group"]["id"]
    await open_page(page, room, f"?group={group_id}")
    invited = page.locator(f'[data-testid=group][data-group-id="{group_id}"]')
    await expect(invited).to_contain_text("2 more to go", timeout=T)
    await expect(invited).to_have_class("group invited")
    await page.get_by_test_id("groupbuy-auto").click()
    mine = page.locator(f'[data-testid=my-group][data-group-id="{group_id}"]')
    await expect(mine).to_contain_text("1 more to go", timeout=T)
    share = await mine.get_by_test_id("share-link").get_attribute("href")
    assert share and share.endswith(f"/rooms/{room.room_id}?group={group_id}")
    third = await viewer(room, client_factory, "Third")
    await third.ok("groupbuy:join", {"group_id": group_id, "request_id": "r2"})
    await expect(mine.get_by_test_id("my-group-status")).to_contain_text("complete", timeout=T)
    await expect(mine).to_contain_text("Confirmed", timeout=T)

    # a lucky draw anyone may enter: the page enters and, alone, wins
    spec = {"room_id": room.room_id, "prize": "口红一支", "winners": 1, "duration_s": 2,
            "entry": {"type": "anyone"}}  # fmt: skip
    draw = (await room.host.ok("draw:create", spec))["draw"]
    card = page.get_by_test_id("draw")
    await expect(card).to_contain_text("口红一支", timeout=T)
    await card.get_by_test_id("draw-enter").click()
    await expect(card.get_by_test_id("draw-entered")).to_be_visible(timeout=T)
    me = await page_user(page)
    await expect(card.get_by_test_id("draw-result")).to_contain_text(me["name"], timeout=T)
    await expect(card.get_by_test_id("draw-won")).to_be_visible(timeout=T)
    verify = await card.get_by_test_id("draw-verify").get_attribute("href")
    assert verify == f"/api/draws/{draw['id']}/proof"
    proof = await api.ok("GET", verify)
    assert proof["winners"] == [me["id"]]

    # a likes PK against another room: the page's taps score for its side
    invite = {"room_id": room.room_id, "target_room_id": other.room_id, "duration_s": 30,
              "punish_s": 1, "mode": "likes"}  # fmt: skip
    pk = (await room.host.ok("pk:invite", invite))["pk"]
    await other.host.ok("pk:respond", {"pk_id": pk["id"], "accept": True})
    bar = page.get_by_test_id("pk")
    await expect(bar.get_by_test_id("pk-phase")).to_contain_text("PK 0:", timeout=T)
    fan = await viewer(other, client_factory, "fan_b")
    await fan.ok("like:send", {"room_id": other.room_id, "count": 3})
    for _ in range(7):
        await page.get_by_test_id("like-button").click()
    await expect(bar.get_by_test_id("pk-score-left")).to_have_text("7", timeout=T)
    await expect(bar.get_by_test_id("pk-score-right")).to_have_text("3", timeout=T)
    await expect(page.get_by_test_id("likes")).to_have_text("7", timeout=T)
    await room.host.ok("pk:end", {"pk_id": pk["id"]})
    await expect(bar.get_by_test_id("pk-winner")).to_contain_text("We won", timeout=T)
    await expect(bar.get_by_test_id("pk-mvp-left")).to_contain_text(me["name"])


async def test_sending_comments_from_the_page_and_errors_in_words(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory, page: Page
) -> None:
    room = await live_room(app_server, api_factory(app_server.url), client_factory)
    await open_page(page, room)
    await page.get_by_test_id("comment-input").fill("  第一条评论  ")
    await page.get_by_test_id("comment-send").click()
    mine = page.locator("[data-testid=comment].mine")
    await expect(mine).to_contain_text("第一条评论", timeout=T)
    await expect(page.get_by_test_id("comment-input")).to_have_value("")
    batch = await room.host.wait_for("comment:batch", lambda b: "第一条评论" in str(b["items"]))
    me = await page_user(page)
    assert batch["items"][0]["user"]["id"] == me["id"]
    await room.host.ok("mod:mute", {"room_id": room.room_id, "user_id": me["id"], "duration_s": 60})
    await page.get_by_test_id("comment-input").fill("还能说话吗")
    await page.get_by_test_id("comment-send").click()
    error = page.get_by_test_id("comment-error")
    await expect(error).to_contain_text("You are muted in this room", timeout=T)
    await expect(error).to_contain_text("until")
    await expect(page.get_by_test_id("comment-input")).to_have_value("还能说话吗")
    await room.host.ok("mod:unmute", {"room_id": room.room_id, "user_id": me["id"]})
    await room.host.ok("mod:banned_words", {"room_id": room.room_id, "add": ["刷单"]})
    await page.get_by_test_id("comment-input").fill("来 刷 单")
    await page.get_by_test_id("comment-send").click()
    await expect(error).to_contain_text("blocked word", timeout=T)


async def test_reconnect_banner_recovery_and_room_not_found(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory, page: Page
) -> None:
    room = await live_room(app_server, api_factory(app_server.url), client_factory)
    await open_page(page, room)
    banner = page.get_by_test_id("reconnect-banner")
    await expect(banner).to_be_hidden()
    await page.evaluate("window.lcRoom.socket.io.engine.close()")  # the network drops
    await expect(banner).to_be_visible(timeout=T)
    await room.host.ok("comment:send", {"room_id": room.room_id, "text": "断线期间的评论"})
    await expect(banner).to_be_hidden(timeout=T)
    await expect(page.get_by_test_id("comment-list")).to_contain_text("断线期间的评论", timeout=T)
    await page.goto(f"{app_server.url}/rooms/no-such-room")
    await expect(page.get_by_test_id("fatal-text")).to_contain_text("Room not found", timeout=T)
