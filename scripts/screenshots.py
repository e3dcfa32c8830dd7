"""Screenshots of the pages with live data, for the docs.

Starts one in-process node (memory engine, a throw-away SQLite file) on a free port, seeds
the demo logins (host/host-demo, staff/staff-demo), fills a live room with comments, likes,
a flash sale, a group buy, a lucky draw and a PK against a second room, then photographs
the viewer page (375×812), the host panel (/host) and the staff dashboard (/staff) into
docs/screenshots/. Everything it started is stopped before it exits.

    scripts/screenshots            # via the bash wrapper (installs what is missing)
    python scripts/screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livecommerce.app import NODE, create_app  # noqa: E402
from livecommerce.demo import seed  # noqa: E402
from livecommerce.settings import load_settings  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--no-first-run", "--disable-component-update", "--disable-sync"]  # fmt: skip
CHATTER = [
    "主播好！",
    "这个颜色好看 😍",
    "求链接",
    "已下单 ✔",
    "想要",
    "多少钱？",
    "上链接上链接",
    "第一次来直播间",
    "支持主播",
    "质量怎么样",
    "包邮吗",
    "666",
    "太划算了",
    "想要想要",
]
_ids = itertools.count(1)


def request_id() -> str:
    return f"shot-{next(_ids)}"


class Bot:
    """A python-socketio client with an ack-returning ``call``."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.sio = socketio.AsyncClient(reconnection=False)

    async def connect(self, room_id: str) -> Bot:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        await self.call("room:join", {"room_id": room_id})
        return self

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await self.sio.call(event, data, timeout=10)
        if not ack.get("ok"):
            print(f"  ! {event}: {ack.get('error')}", file=sys.stderr)
        return dict(ack)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


async def post(
    http: aiohttp.ClientSession, base: str, path: str, body: Any, token: str = ""
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(base + path, json=body, headers=headers) as res:
        data = await res.json()
        if res.status >= 300:
            raise RuntimeError(f"POST {path} -> {res.status} {data}")
        return data


async def get(http: aiohttp.ClientSession, base: str, path: str, token: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(base + path, headers=headers) as res:
        return await res.json()


async def stage(base: str, http: aiohttp.ClientSession, bots: list[Bot]) -> dict[str, Any]:
    """The live data: returns ids and tokens the screenshots need."""
    host_login = await post(
        http, base, "/api/auth/login", {"username": "host", "password": "host-demo"}
    )
    staff_login = await post(
        http, base, "/api/auth/login", {"username": "staff", "password": "staff-demo"}
    )
    host_token = host_login["token"]
    rooms = (await get(http, base, "/api/rooms?host=me", host_token))["rooms"]
    room = next(r for r in rooms if r["status"] == "live")
    room_id = room["id"]
    products = (await get(http, base, f"/api/rooms/{room_id}/products"))["products"]

    host = await Bot(base, host_token).connect(room_id)
    bots.append(host)
    await host.call("product:pin", {"room_id": room_id, "product_id": products[0]["id"]})
    await host.call("flashsale:create", {
        "room_id": room_id, "product_id": products[2]["id"], "price_cents": 990,
        "quantity": 200, "per_user_limit": 2, "duration_s": 600})  # fmt: skip
    campaign = (await host.call("groupbuy:create", {
        "room_id": room_id, "product_id": products[1]["id"], "group_size": 3,
        "price_cents": 9900, "group_ttl_s": 3600, "duration_s": 7200}))["campaign"]  # fmt: skip
    await host.call("draw:create", {
        "room_id": room_id, "prize": "真丝围巾一条", "winners": 3, "duration_s": 600,
        "entry": {"type": "comment", "keyword": "想要"}})  # fmt: skip

    # viewers: some buy, some lead or join groups
    viewers: list[Bot] = []
    for name in ["小美", "阿杰", "Lily", "王大锤", "Coco", "小鱼儿", "Tom", "青青"]:
        token = (await post(http, base, "/api/auth/guest", {"name": name}))["token"]
        bot = await Bot(base, token).connect(room_id)
        bots.append(bot)
        viewers.append(bot)
    sale_id = (await host.call("room:join", {"room_id": room_id}))["state"]["flashsales"][0]["id"]
    for bot in viewers[:5]:
        order = await bot.call("flashsale:buy", {"sale_id": sale_id, "request_id": request_id()})
        if order.get("ok") and bot is not viewers[4]:
            await bot.call("order:pay", {"order_id": order["order"]["id"]})
    lead = await viewers[0].call(
        "groupbuy:open", {"campaign_id": campaign["id"], "request_id": request_id()}
    )
    await viewers[1].call(
        "groupbuy:open", {"campaign_id": campaign["id"], "request_id": request_id()}
    )
    if lead.get("ok"):
        await viewers[2].call(
            "groupbuy:join", {"group_id": lead["group"]["id"], "request_id": request_id()}
        )

    return {"room_id": room_id, "host": host_login, "staff": staff_login, "viewers": viewers,
            "host_bot": host}  # fmt: skip


async def chatter(room_id: str, viewers: list[Bot], stop: asyncio.Event) -> None:
    """Comments and likes from the bots until ``stop``."""
    lines = itertools.cycle(CHATTER)
    who = itertools.cycle(viewers)
    while not stop.is_set():
        bot = next(who)
        await bot.call(
            "comment:send", {"room_id": room_id, "text": next(lines), "request_id": request_id()}
        )
        await bot.call("like:send", {"room_id": room_id, "count": 7})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.35)


async def login_page(page: Page, base: str, path: str, login: dict[str, Any], username: str,
                     password: str, room_id: str) -> None:  # fmt: skip
    """Open a page signed in: the session lc.js keeps in localStorage, or the login form."""
    await page.goto(base + "/static/base.css")
    await page.evaluate(
        "([t, u]) => { localStorage.setItem('lc.token', t); localStorage.setItem('lc.user', u); }",
        [login["token"], json.dumps(login["user"])],
    )
    await page.goto(base + path)
    await page.wait_for_timeout(800)
    # best effort: these pages are other people's work and may change
    with contextlib.suppress(Exception):
        user = page.locator(
            "[data-testid=login-username], input[name=username], input[autocomplete=username]"
        ).first
        signed_in = page.get_by_role("button", name="Sign out").or_(
            page.get_by_role("button", name="Log out")
        )
        if await user.count() and await user.is_visible() and not await signed_in.count():
            await user.fill(username)
            secret = page.locator("input[type=password]").first
            await secret.fill(password)
            await secret.press("Enter")
            await page.wait_for_timeout(800)
    with contextlib.suppress(Exception):  # pick the demo room where a page asks for one
        select = page.locator("select").first
        if await select.count() and await select.is_visible():
            await select.select_option(value=room_id, timeout=2000)
    with contextlib.suppress(Exception):
        control = page.get_by_role("button", name="Control").first
        if await control.count() and await control.is_visible():
            await control.click(timeout=2000)


async def shoot(browser: Browser, base: str, data: dict[str, Any], out: Path,
                http: aiohttp.ClientSession) -> None:  # fmt: skip
    room_id = data["room_id"]
    # viewer: a phone
    ctx = await browser.new_context(viewport={"width": 375, "height": 812}, device_scale_factor=2,
                                    locale="zh-CN")  # fmt: skip
    page = await ctx.new_page()
    await page.goto(f"{base}/rooms/{room_id}")
    await page.get_by_test_id("flashsale-buy").first.wait_for(timeout=10_000)
    for _ in range(12):
        await page.get_by_test_id("like-button").click()
    await page.wait_for_timeout(2500)
    await page.screenshot(path=str(out / "viewer.png"))
    print(f"  wrote {out / 'viewer.png'}")
    await ctx.close()
    # host panel and staff dashboard: desktop
    for name, path, username, password in [("host", "/host", "host", "host-demo"),
                                           ("staff", "/staff", "staff", "staff-demo")]:  # fmt: skip
        async with http.get(f"{base}{path}") as res:
            if res.status != 200:
                print(f"  skipped {name}.png: {path} answers {res.status}")
                continue
        ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
        page = await ctx.new_page()
        await login_page(page, base, path, data[name], username, password, room_id)
        await page.wait_for_timeout(3500)
        await page.screenshot(path=str(out / f"{name}.png"), full_page=False)
        print(f"  wrote {out / f'{name}.png'}")
        await ctx.close()


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lc-shots-") as tmp:
        settings = load_settings(env={}, overrides={
            "database": {"url": f"sqlite+aiosqlite:///{Path(tmp) / 'shots.db'}"},
            "server": {"node_id": "screenshots"},
        })  # fmt: skip
        app = create_app(settings)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        node = app[NODE]
        base = str(server.make_url("")).rstrip("/")
        print(f"» node on {base}")
        bots: list[Bot] = []
        stop = asyncio.Event()
        talk: asyncio.Task[None] | None = None
        try:
            await seed(node)
            async with aiohttp.ClientSession() as http:
                data = await stage(base, http, bots)
                # the PK: a second host and room, invited by the demo host
                user = await node.auth.add_user("host2", "host2-demo", "host")
                token2 = node.auth.issue(user)
                room2 = await post(http, base, "/api/rooms", {"title": "隔壁直播间"}, token2)
                await post(http, base, f"/api/rooms/{room2['id']}/start", {}, token2)
                host2 = await Bot(base, token2).connect(room2["id"])
                bots.append(host2)
                pk = await data["host_bot"].call("pk:invite", {
                    "room_id": data["room_id"], "target_room_id": room2["id"],
                    "duration_s": 300, "punish_s": 60, "mode": "likes"})  # fmt: skip
                if pk.get("ok"):
                    await host2.call("pk:respond", {"pk_id": pk["pk"]["id"], "accept": True})
                fan_token = (await post(http, base, "/api/auth/guest", {"name": "隔壁粉丝"}))[
                    "token"
                ]
                fan = await Bot(base, fan_token).connect(room2["id"])
                bots.append(fan)
                await fan.call("like:send", {"room_id": room2["id"], "count": 60})
                talk = asyncio.create_task(chatter(data["room_id"], data["viewers"], stop))
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                    try:
                        await shoot(browser, base, data, out, http)
                    finally:
                        await browser.close()
        finally:
            stop.set()
            if talk:
                with contextlib.suppress(Exception):
                    await talk
            await asyncio.gather(*(b.close() for b in bots), return_exceptions=True)
            await server.close()
            print("» stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out_dir = parser.parse_args().out
    out_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out_dir))
