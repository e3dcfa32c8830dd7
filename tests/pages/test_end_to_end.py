"""The three pages together, in three browser windows against one node: the host panel
starts a flash sale, the viewer page counts it down, buys and pays, the staff dashboard's
orders and stock move, and the viewer page tells the room someone just bought it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.conftest import AppServer, make_user
from tests.pages.test_host import open_live_room, sign_in

T = 10_000


@pytest.fixture
async def windows(browser: Browser, app_server: AppServer) -> AsyncIterator[dict[str, Page]]:
    """Host (laptop), viewer (phone) and staff (laptop) windows, each its own session.
    Depends on ``app_server`` so the windows close before the node does."""
    sizes = {"host": (1280, 800), "viewer": (375, 812), "staff": (1280, 800)}
    contexts: list[BrowserContext] = []
    pages: dict[str, Page] = {}
    errors: list[str] = []
    for name, (width, height) in sizes.items():
        ctx = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        pages[name] = await ctx.new_page()
        pages[name].on("pageerror", lambda exc, n=name: errors.append(f"{n}: {exc}"))
    yield pages
    for ctx in contexts:
        await ctx.close()
    assert not errors, errors


async def test_host_starts_a_sale_viewer_buys_and_pays_staff_sees_it(
    windows: dict[str, Page], app_server: AppServer
) -> None:
    host, viewer, staff = windows["host"], windows["viewer"], windows["staff"]
    await sign_in(host, app_server, "anchor")
    room_id = await open_live_room(host, "E2E show")

    await make_user(app_server.node, "boss", "staff")
    await staff.goto(f"{app_server.url}/staff")
    form = staff.get_by_test_id("login")
    await form.locator("input[name=username]").fill("boss")
    await form.locator("input[name=password]").fill("secret-pw")
    await form.locator("button[type=submit]").click()
    await expect(staff.get_by_test_id("room-select")).to_be_enabled(timeout=T)
    await staff.get_by_test_id("room-select").select_option(room_id)
    await expect(staff.get_by_test_id("connection")).to_have_text("live", timeout=T)
    await expect(staff.get_by_test_id("kpi-orders")).to_have_text("0", timeout=T)

    await viewer.goto(f"{app_server.url}/rooms/{room_id}")
    await host.get_by_test_id("flashsale-price").fill("9.9")
    await host.get_by_test_id("flashsale-quantity").fill("5")
    await host.get_by_test_id("flashsale-limit").fill("2")
    await host.get_by_test_id("flashsale-duration").fill("120")
    await host.get_by_test_id("flashsale-create").click()
    await expect(host.get_by_test_id("flashsale-left")).to_have_text("5 / 5 left", timeout=T)

    card = viewer.get_by_test_id("flashsale").first
    await expect(card.get_by_test_id("flashsale-countdown")).to_contain_text("ends in", timeout=T)
    sale_id = await card.get_attribute("data-sale-id")
    stock = staff.locator(f'[data-sale-id="{sale_id}"] .left')
    await expect(stock).to_have_text("5", timeout=T)
    await card.get_by_test_id("flashsale-buy").click()
    await expect(card.get_by_test_id("order-status")).to_contain_text("Reserved", timeout=T)
    await card.get_by_test_id("order-pay").click()
    await expect(card.get_by_test_id("order-status")).to_contain_text("Paid", timeout=T)

    await expect(staff.get_by_test_id("kpi-orders")).to_have_text("1", timeout=T)
    await expect(stock).to_have_text("4", timeout=T)
    await expect(staff.get_by_test_id("kpi-gmv")).to_contain_text("9.90", timeout=T)
    await expect(host.get_by_test_id("flashsale-left")).to_have_text("4 / 5 left", timeout=T)
    # "N people just bought X" reaches the viewer page (batched every few seconds).
    notice = viewer.get_by_test_id("sales-notice")
    await expect(notice).to_contain_text("1 just bought", timeout=T)
    await expect(notice).to_contain_text("Tea set")
