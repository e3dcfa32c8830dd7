"""The staff dashboard (static/staff.html + static/js/staff.js) in a real browser: it signs
in, picks a room, and its numbers move when real Socket.IO clients comment and buy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import AppServer, make_user
from tests.support.client import Api, Client

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]
T = 10_000  # ms, for every wait on the page


@pytest.fixture
async def wide(browser: Browser) -> AsyncIterator[Page]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await ctx.close()
    assert not errors, errors


async def _sign_in(page: Page, url: str, username: str) -> None:
    await page.goto(f"{url}/staff")
    form = page.get_by_test_id("login")
    await form.locator("input[name=username]").fill(username)
    await form.locator("input[name=password]").fill("secret-pw")
    await form.locator("button[type=submit]").click()
    await expect(page.get_by_test_id("room-select")).to_be_enabled(timeout=T)


async def test_dashboard_follows_orders_stock_and_keywords(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory, wide: Page
) -> None:
    server = await node_factory(metrics={"tick_ms": 500}, comments={"rate_per_s": 5.0})
    api = api_factory(server.url)
    await make_user(server.node, "boss", "staff")
    host_token = await make_user(server.node, "anchor", "host")
    rid = (await api.ok("POST", "/api/rooms", host_token, {"title": "口红专场"}))["id"]
    product = {"title": "Lipstick 口红", "price_cents": 9900, "stock": 100}
    pid = (await api.ok("POST", f"/api/rooms/{rid}/products", host_token, product))["id"]
    await api.ok("POST", f"/api/rooms/{rid}/start", host_token)
    host = await client_factory(server.url, host_token)
    terms = {"room_id": rid, "product_id": pid, "price_cents": 4900, "quantity": 10,
             "per_user_limit": 2, "duration_s": 120}  # fmt: skip
    sale_id = (await host.ok("flashsale:create", terms))["sale"]["id"]

    page = wide
    await _sign_in(page, server.url, "boss")
    await page.get_by_test_id("room-select").select_option(rid)
    await expect(page.get_by_test_id("connection")).to_have_text("live", timeout=T)
    await expect(page.get_by_test_id("kpi-orders")).to_have_text("0", timeout=T)
    stock = page.locator(f'[data-sale-id="{sale_id}"] .left')
    await expect(stock).to_have_text("10", timeout=T)

    token, _ = await api.guest("buyer")
    buyer = await client_factory(server.url, token)
    await buyer.ok("room:join", {"room_id": rid})
    order = await buyer.ok("flashsale:buy", {"sale_id": sale_id, "qty": 2, "request_id": "a"})
    await buyer.ok("order:pay", {"order_id": order["order"]["id"]})
    await expect(page.get_by_test_id("kpi-orders")).to_have_text("1", timeout=T)
    await expect(stock).to_have_text("8", timeout=T)
    await expect(page.get_by_test_id("kpi-gmv")).to_contain_text("98.00", timeout=T)

    for i in range(3):
        token, _ = await api.guest(f"fan{i}")
        fan = await client_factory(server.url, token)
        await fan.ok("comment:send", {"room_id": rid, "text": f"口红 色号{i} 好看"})
    await expect(page.get_by_test_id("keywords")).to_contain_text("口红", timeout=T)
    words = await page.evaluate(
        "window.lcStaff.charts['chart-words'].getOption().series[0].data.map(d => d.name)"
    )
    assert "口红" in words
    # The live comment list shows them, with moderation buttons.
    comments = page.get_by_test_id("comments")
    await expect(comments.locator("li")).to_have_count(3, timeout=T)
    await comments.locator("li").first.get_by_role("button", name="delete").click()
    await expect(page.get_by_test_id("mod-status")).to_have_text("comment deleted", timeout=T)
    await expect(comments.locator("li.deleted")).to_have_count(1, timeout=T)
    await expect(page.get_by_test_id("error")).to_be_hidden()
    await expect(page.get_by_test_id("cluster")).to_contain_text("test-node", timeout=T)


async def test_viewer_accounts_are_turned_away(wide: Page, node_factory: NodeFactory) -> None:
    server = await node_factory()
    await make_user(server.node, "fan", "viewer")
    page = wide
    await page.goto(f"{server.url}/staff")
    form = page.get_by_test_id("login")
    await form.locator("input[name=username]").fill("fan")
    await form.locator("input[name=password]").fill("secret-pw")
    await form.locator("button[type=submit]").click()
    await expect(form).to_contain_text("for staff and hosts", timeout=T)
    await form.locator("input[name=password]").fill("wrong-password")
    await form.locator("button[type=submit]").click()
    await expect(form).to_contain_text("Wrong username or password", timeout=T)
