"""The host control panel (/host) in a real browser against a real node, with
python-socketio viewers on the other side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import AppServer, make_user
from tests.support.client import Api, Client

WAIT_MS = 10_000
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def desk(browser: Browser, app_server: AppServer) -> AsyncIterator[Page]:
    """A laptop-sized page (the panel is desktop-first). It depends on ``app_server`` so
    that it closes first: a node shut down under a connected browser waits for it."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await ctx.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await ctx.close()
    assert not errors, f"script errors on the page: {errors}"


def tid(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.get_by_test_id(name)


async def sign_in(page: Page, server: AppServer, username: str = "host1") -> None:
    await make_user(server.node, username, "host")
    await page.goto(server.url + "/host")
    await tid(page, "login-username").fill(username)
    await tid(page, "login-password").fill("secret-pw")
    await tid(page, "login-submit").click()
    await expect(tid(page, "panel")).to_be_visible(timeout=WAIT_MS)
    await expect(tid(page, "whoami")).to_contain_text(username)


async def open_live_room(page: Page, title: str = "Spring show") -> str:
    """Create a room through the form, take it live, add a product; returns the room id."""
    await tid(page, "room-title").fill(title)
    await tid(page, "room-create").click()
    await expect(tid(page, "rooms-status")).to_contain_text("created", timeout=WAIT_MS)
    await expect(tid(page, "room-current-title")).to_have_text(title)
    await expect(tid(page, "connection")).to_have_text("connected", timeout=WAIT_MS)
    await tid(page, "room-start").click()
    await expect(tid(page, "room-status")).to_have_text("live", timeout=WAIT_MS)
    await tid(page, "product-title").fill("Tea set")
    await tid(page, "product-price").fill("99.90")
    await tid(page, "product-stock").fill("50")
    await tid(page, "product-add").click()
    await expect(tid(page, "product-item")).to_contain_text("¥99.90", timeout=WAIT_MS)
    return (await tid(page, "room-id").inner_text()).strip()


async def viewer(
    server: AppServer, api_factory: Callable[[str], Api], client_factory: ClientFactory, name: str
) -> tuple[Client, dict[str, Any]]:
    token, user = await api_factory(server.url).guest(name)
    return await client_factory(server.url, token), user


async def test_login_create_start_add_and_pin(
    desk: Page, app_server: AppServer, api_factory: Any, client_factory: ClientFactory
) -> None:
    page = desk
    await sign_in(page, app_server)
    room_id = await open_live_room(page)
    # The new room is in "my rooms" and the product is priced in cents on the server.
    await expect(tid(page, "room-item")).to_have_count(1)
    status, data = await api_factory(app_server.url).request(
        "GET", f"/api/rooms/{room_id}/products"
    )
    assert status == 200
    assert [(p["title"], p["price_cents"]) for p in data["products"]] == [("Tea set", 9990)]

    watcher, _ = await viewer(app_server, api_factory, client_factory, "watcher")
    await watcher.ok("room:join", {"room_id": room_id})
    await tid(page, "product-pin").click()
    pinned = await watcher.wait_for("product:pinned")
    assert pinned["product"]["title"] == "Tea set"
    await expect(tid(page, "pinned-product")).to_contain_text("Tea set")
    await expect(tid(page, "products-status")).to_contain_text("Pinned")
    await expect(tid(page, "online")).to_have_text("2", timeout=WAIT_MS)


async def test_flash_sale_stock_goes_down(
    desk: Page, app_server: AppServer, api_factory: Any, client_factory: ClientFactory
) -> None:
    page = desk
    await sign_in(page, app_server)
    room_id = await open_live_room(page)
    buyer, _ = await viewer(app_server, api_factory, client_factory, "buyer")
    await buyer.ok("room:join", {"room_id": room_id})

    await tid(page, "flashsale-price").fill("9.9")
    await tid(page, "flashsale-quantity").fill("5")
    await tid(page, "flashsale-limit").fill("2")
    await tid(page, "flashsale-duration").fill("120")
    await tid(page, "flashsale-create").click()
    await expect(tid(page, "flashsale-status")).to_contain_text("Flash sale", timeout=WAIT_MS)
    await expect(tid(page, "flashsale-left")).to_have_text("5 / 5 left")

    sale = (await buyer.wait_for("flashsale:update"))["sale"]
    assert (sale["price_cents"], sale["quantity"], sale["per_user_limit"]) == (990, 5, 2)
    order = (await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "b1"}))["order"]
    paid = (await buyer.ok("order:pay", {"order_id": order["id"]}))["order"]
    assert paid["status"] == "paid"
    await expect(tid(page, "flashsale-left")).to_have_text("4 / 5 left", timeout=WAIT_MS)
    await buyer.ok("flashsale:buy", {"sale_id": sale["id"], "request_id": "b2"})
    await expect(tid(page, "flashsale-left")).to_have_text("3 / 5 left", timeout=WAIT_MS)


async def test_moderation_from_the_panel(
    desk: Page, app_server: AppServer, api_factory: Any, client_factory: ClientFactory
) -> None:
    page = desk
    await sign_in(page, app_server)
    room_id = await open_live_room(page)
    troll, _ = await viewer(app_server, api_factory, client_factory, "troll")
    other, _ = await viewer(app_server, api_factory, client_factory, "other")
    for c in (troll, other):
        await c.ok("room:join", {"room_id": room_id})

    # Delete: the comment shows up (as text, not markup), the panel deletes it.
    first = await troll.ok("comment:send", {"room_id": room_id, "text": "<b>buy elsewhere</b>"})
    row = page.locator(f'[data-testid="comment"][data-comment-id="{first["id"]}"]')
    await expect(row.get_by_test_id("comment-text")).to_have_text(
        "<b>buy elsewhere</b>", timeout=WAIT_MS
    )
    await row.get_by_test_id("comment-delete").click()
    deleted = await troll.wait_for("comment:deleted")
    assert deleted["ids"] == [first["id"]]
    await expect(row).to_have_count(0)

    # Mute: the troll's next comment answers muted.
    second = await troll.ok("comment:send", {"room_id": room_id, "text": "again"})
    row = page.locator(f'[data-testid="comment"][data-comment-id="{second["id"]}"]')
    await expect(row).to_contain_text("troll", timeout=WAIT_MS)
    await tid(page, "mute-duration").select_option("3600")
    await row.get_by_test_id("comment-mute").click()
    await expect(tid(page, "mod-status")).to_contain_text("Muted troll", timeout=WAIT_MS)
    ack = await troll.call("comment:send", {"room_id": room_id, "text": "still here"})
    assert ack["ok"] is False and ack["error"]["code"] == "muted"
    assert (await troll.wait_for("comment:muted"))["until"] > 0

    # Banned words: the list shows the word and a comment containing it is blocked.
    await tid(page, "banned-words-input").fill("spam, 刷单")
    await tid(page, "banned-words-add").click()
    await expect(tid(page, "banned-word")).to_have_count(2, timeout=WAIT_MS)
    await expect(tid(page, "banned-words")).to_contain_text("spam")
    code = ""
    for _ in range(30):  # each node caches a room's list for up to a second
        ack = await other.call("comment:send", {"room_id": room_id, "text": "S P A M deals"})
        code = "" if ack["ok"] else ack["error"]["code"]
        if code == "blocked":
            break
        await asyncio.sleep(0.1)
    assert code == "blocked"

    # Slow mode: shown on the panel, and a second comment inside the interval is refused.
    await tid(page, "slow-mode-input").fill("30")
    await tid(page, "slow-mode-apply").click()
    await expect(tid(page, "slow-mode-current")).to_have_text("30 s", timeout=WAIT_MS)
    await expect(tid(page, "mod-status")).to_contain_text("Slow mode on")
    await other.ok("comment:send", {"room_id": room_id, "text": "hello"})
    ack = await other.call("comment:send", {"room_id": room_id, "text": "hello again"})
    assert ack["ok"] is False and ack["error"]["code"] == "rate_limited"
    assert ack["error"].get("reason") == "slow_mode"


async def test_failing_actions_show_their_error(desk: Page, app_server: AppServer) -> None:
    page = desk
    await sign_in(page, app_server)
    await open_live_room(page)

    await tid(page, "flashsale-price").fill("9.9")
    await tid(page, "flashsale-quantity").fill("0")
    await tid(page, "flashsale-create").click()
    status = tid(page, "flashsale-status")
    await expect(status).to_contain_text("not accepted", timeout=WAIT_MS)
    await expect(status).to_contain_text("quantity")
    await expect(tid(page, "flashsale-item")).to_have_count(0)

    # A draw with a comment entry but no keyword.
    await tid(page, "draw-prize").fill("A teapot")
    await tid(page, "draw-create").click()
    await expect(tid(page, "draw-status")).to_contain_text("not accepted", timeout=WAIT_MS)

    # End the show, then pinning is refused with words.
    await tid(page, "room-end").click()
    await expect(tid(page, "room-status")).to_have_text("ended", timeout=WAIT_MS)
    await tid(page, "product-pin").click()
    await expect(tid(page, "products-status")).to_have_class("status error", timeout=WAIT_MS)
    text = await tid(page, "products-status").inner_text()
    assert len(text) > 5 and "undefined" not in text


async def test_group_buy_draw_and_pk(
    desk: Page, app_server: AppServer, api_factory: Any, client_factory: ClientFactory
) -> None:
    page = desk
    await sign_in(page, app_server)
    room_id = await open_live_room(page)
    fan, _ = await viewer(app_server, api_factory, client_factory, "fan")
    await fan.ok("room:join", {"room_id": room_id})

    # Group buy with tiers, typed in yuan.
    await tid(page, "groupbuy-size").fill("2")
    await tid(page, "groupbuy-price").fill("89")
    await tid(page, "groupbuy-tiers").fill("3:79, 5:69")
    await tid(page, "groupbuy-create").click()
    await expect(tid(page, "groupbuy-status")).to_contain_text("Group buy", timeout=WAIT_MS)
    campaign = (await fan.wait_for("groupbuy:update"))["campaign"]
    assert campaign["price_cents"] == 8900
    assert campaign["tiers"] == [
        {"size": 3, "price_cents": 7900},
        {"size": 5, "price_cents": 6900},
    ]
    await fan.ok("groupbuy:open", {"campaign_id": campaign["id"], "request_id": "g1"})
    await expect(tid(page, "group-item")).to_contain_text("fan's group: 1/2", timeout=WAIT_MS)

    # A draw anyone can enter; the entrant count follows draw:update.
    await tid(page, "draw-prize").fill("Golden teapot")
    await tid(page, "draw-entry").select_option("anyone")
    await tid(page, "draw-duration").fill("60")
    await tid(page, "draw-create").click()
    await expect(tid(page, "draw-state")).to_have_text("open", timeout=WAIT_MS)
    draw = (await fan.wait_for("draw:update"))["draw"]
    await fan.ok("draw:enter", {"draw_id": draw["id"]})
    await expect(tid(page, "draw-entrants")).to_have_text("1 entrant", timeout=WAIT_MS)
    await tid(page, "draw-create").click()  # a second draw while one runs
    await expect(tid(page, "draw-status")).to_contain_text("Busy", timeout=WAIT_MS)

    # PK: another host invites this room; the panel accepts, then ends it early.
    rival_token = await make_user(app_server.node, "rival", "host")
    rival_api = api_factory(app_server.url)
    rival_room = await rival_api.ok("POST", "/api/rooms", rival_token, {"title": "Rival"})
    await rival_api.ok("POST", f"/api/rooms/{rival_room['id']}/start", rival_token)
    rival = await client_factory(app_server.url, rival_token)
    await rival.ok(
        "pk:invite",
        {"room_id": rival_room["id"], "target_room_id": room_id, "duration_s": 60, "punish_s": 5},
    )
    await expect(tid(page, "pk-invitation")).to_contain_text("rival", timeout=WAIT_MS)
    await tid(page, "pk-invitation").get_by_test_id("pk-accept").click()
    await expect(tid(page, "pk-phase")).to_have_text("fighting", timeout=WAIT_MS)
    await expect(tid(page, "pk-side")).to_have_count(2)
    await tid(page, "pk-end").click()
    await expect(tid(page, "pk-phase")).to_have_text("punishing", timeout=WAIT_MS)
    await expect(tid(page, "pk-winner")).to_contain_text("tie")
