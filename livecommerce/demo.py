"""``serve --demo``: a host, a staff member, a live room with products, printed logins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livecommerce.auth import Principal, Role

if TYPE_CHECKING:
    from livecommerce.app import Node

DEMO_ROOM_TITLE = "Demo room · 直播间"
PRODUCTS = [
    ("Silk scarf 真丝围巾", 8900, 100),
    ("Green tea gift box 绿茶礼盒", 12900, 50),
    ("Phone stand 手机支架", 1990, 500),
]
LOGINS = [("host", "host-demo", Role.HOST), ("staff", "staff-demo", Role.STAFF)]


async def seed(node: Node) -> list[str]:
    """Create what is missing (idempotent across restarts); return lines to print."""
    for username, password, role in LOGINS:
        if await node.users.by_username(username) is None:
            await node.auth.add_user(username, password, role.value)
    host_user = await node.users.by_username("host")
    assert host_user is not None
    host = Principal(host_user.id, host_user.name, Role.HOST)
    rooms = await node.rooms.list_hosted(host.id)
    room = next(
        (r for r in rooms if r["title"] == DEMO_ROOM_TITLE and r["status"] != "ended"), None
    )
    if room is None:
        room = await node.rooms.create(host, DEMO_ROOM_TITLE, None, None)
        for title, price, stock in PRODUCTS:
            await node.rooms.add_product(room["id"], title, price, stock, None)
    if room["status"] != "live":
        await node.rooms.start(room["id"])
    base = f"http://{node.settings.server.host}:{node.settings.server.port}"
    return [
        "livecommerce demo ready",
        f"  room list:   {base}/",
        f"  live room:   {base}/rooms/{room['id']}",
        f"  host login:  host / host-demo    ({base}/host)",
        f"  staff login: staff / staff-demo  ({base}/staff)",
    ]
