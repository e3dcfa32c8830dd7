"""Who may run the control events and routes: one table, every cell checked.

Rows are the host-only / host-or-staff socket events (every ``Access.CONTROL`` event the
dispatcher registers must have one) and HTTP routes; columns are the callers: anonymous,
a viewer, the host of another room, the room's own host and staff. Every cell runs on a
fresh node with fresh state, so an allowed cell must succeed outright (``ok: true`` /
2xx) and a refused one must be refused with exactly the code in the table. For
``pk:respond`` the room's host is the invited room's host (the inviting host may not
answer); for ``pk:end`` both hosts may act. Last, the order of the checks that
docs/protocol.md promises: unauthorized, then invalid, then not_found, then forbidden.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from livecommerce.features.access import Access
from tests.conftest import AppServer, ack_error
from tests.support.client import Api, Client
from tests.test_hostile_input import registered_specs

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]

ALLOWED = "allowed"
STANDARD = {
    "anonymous": "unauthorized",
    "viewer": "forbidden",
    "other_host": "forbidden",
    "host": ALLOWED,
    "staff": ALLOWED,
}
PK_RESPOND = {
    "anonymous": "unauthorized",
    "viewer": "forbidden",
    "other_host": "forbidden",
    "inviting_host": "forbidden",
    "invited_host": ALLOWED,
    "staff": ALLOWED,
}
PK_END = {**PK_RESPOND, "inviting_host": ALLOWED}

#: event -> caller -> expected outcome (an error code, or ALLOWED)
SOCKET_MATRIX: dict[str, dict[str, str]] = {
    "product:pin": STANDARD,
    "flashsale:create": STANDARD,
    "groupbuy:create": STANDARD,
    "draw:create": STANDARD,
    "pk:invite": STANDARD,  # "host": the inviting room's host
    "pk:respond": PK_RESPOND,
    "pk:end": PK_END,
    "mod:mute": STANDARD,
    "mod:unmute": STANDARD,
    "mod:delete_comment": STANDARD,
    "mod:banned_words": STANDARD,
    "mod:slow_mode": STANDARD,
    "metrics:subscribe": STANDARD,
    "metrics:unsubscribe": STANDARD,
}
HTTP_STATUS = {"unauthorized": 401, "forbidden": 403}
#: route -> caller -> expected outcome; {room} is the room's id
HTTP_MATRIX: dict[str, dict[str, str]] = {
    "POST /api/rooms/{room}/start": STANDARD,
    "POST /api/rooms/{room}/end": STANDARD,
    "POST /api/rooms/{room}/products": STANDARD,
    "GET /api/rooms/{room}/keywords": STANDARD,
    "GET /api/rooms/{room}/moderation": STANDARD,
    "GET /api/rooms/{room}/metrics/history": STANDARD,
}
HTTP_BODIES = {"POST /api/rooms/{room}/products": {"title": "Tea", "price_cents": 2000, "stock": 9}}


async def _user(server: AppServer, name: str, role: str) -> str:
    """A token for a new user of ``role`` (no password: Argon2 would cost ~0.1 s a cell)."""
    user = await server.node.users.create(name=name, role=role)
    return server.node.auth.issue(user)


def _cells(matrix: dict[str, dict[str, str]]) -> list[Any]:
    return [
        pytest.param(row, caller, expected, id=f"{row}-{caller}")
        for row, callers in matrix.items()
        for caller, expected in callers.items()
    ]


@dataclass
class Scene:
    """A room of ``host`` with a product (live unless asked otherwise), a viewer in it
    and, for PK rows, a second live room of ``rival``."""

    server: AppServer
    api: Api
    clients: ClientFactory
    host: str
    room: str
    product: str
    viewer: str
    viewer_id: str
    rival: str | None = None
    rival_room: str | None = None

    @classmethod
    async def build(
        cls, server: AppServer, api: Api, clients: ClientFactory, *, live: bool, pk: bool
    ) -> Scene:
        host = await _user(server, "room_host", "host")
        room = await _room(api, host, live)
        item = {"title": "Tea", "price_cents": 2000, "stock": 100}
        product = (await api.ok("POST", f"/api/rooms/{room}/products", host, item))["id"]
        viewer, user = await api.guest("viewer")
        scene = cls(server, api, clients, host, room, product, viewer, user["id"])
        if pk:
            scene.rival = await _user(server, "rival_host", "host")
            scene.rival_room = await _room(api, scene.rival, live=True)
        return scene

    async def token(self, caller: str) -> str | None:
        if caller == "anonymous":
            return None
        if caller == "viewer":
            return self.viewer
        if caller in ("host", "inviting_host"):
            return self.host
        if caller == "invited_host":
            assert self.rival is not None
            return self.rival
        if caller == "other_host":
            outsider = await _user(self.server, "other_host", "host")
            await _room(self.api, outsider, live=True)  # the host of another room
            return outsider
        assert caller == "staff", caller
        return await _user(self.server, "scene_staff", "staff")

    async def as_host(self, token: str | None = None) -> Client:
        return await self.clients(self.server.url, token or self.host)


async def _room(api: Api, host: str, live: bool) -> str:
    room = str((await api.ok("POST", "/api/rooms", host, {"title": "Matrix"}))["id"])
    if live:
        await api.ok("POST", f"/api/rooms/{room}/start", host)
    return room


# -- what each row needs: a payload on fresh state ------------------------------------------


async def _pk_invited(s: Scene) -> str:
    ack = await (await s.as_host()).ok(
        "pk:invite", {"room_id": s.room, "target_room_id": s.rival_room}
    )
    return str(ack["pk"]["id"])


async def _pk_fighting(s: Scene) -> str:
    pk_id = await _pk_invited(s)
    await (await s.as_host(s.rival)).ok("pk:respond", {"pk_id": pk_id, "accept": True})
    return pk_id


async def _muted(s: Scene) -> dict[str, Any]:
    target = {"room_id": s.room, "user_id": s.viewer_id}
    await (await s.as_host()).ok("mod:mute", {**target, "duration_s": 600})
    return target


async def _commented(s: Scene) -> dict[str, Any]:
    author = await s.clients(s.server.url, s.viewer)
    comment = await author.ok("comment:send", {"room_id": s.room, "text": "delete me"})
    return {"room_id": s.room, "comment_id": comment["id"]}


PREPARE: dict[str, Callable[[Scene], Awaitable[dict[str, Any]]]] = {}


def _prepares(event: str) -> Callable[[Callable[[Scene], Any]], Callable[[Scene], Any]]:
    def register(fn: Callable[[Scene], Any]) -> Callable[[Scene], Any]:
        PREPARE[event] = fn
        return fn

    return register


@_prepares("product:pin")
async def _pin(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "product_id": s.product}


@_prepares("flashsale:create")
async def _sale(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "product_id": s.product, "price_cents": 990, "quantity": 5,
            "duration_s": 60}  # fmt: skip


@_prepares("groupbuy:create")
async def _campaign(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "product_id": s.product, "group_size": 3, "price_cents": 1000,
            "group_ttl_s": 600, "duration_s": 3600}  # fmt: skip


@_prepares("draw:create")
async def _draw(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "prize": "lipstick", "winners": 1, "duration_s": 60,
            "entry": {"type": "anyone"}}  # fmt: skip


@_prepares("pk:invite")
async def _invite(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "target_room_id": s.rival_room}


@_prepares("pk:respond")
async def _respond(s: Scene) -> dict[str, Any]:
    return {"pk_id": await _pk_invited(s), "accept": True}


@_prepares("pk:end")
async def _end(s: Scene) -> dict[str, Any]:
    return {"pk_id": await _pk_fighting(s)}


@_prepares("mod:mute")
async def _mute(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "user_id": s.viewer_id, "duration_s": 60}


@_prepares("mod:unmute")
async def _unmute(s: Scene) -> dict[str, Any]:
    return await _muted(s)


@_prepares("mod:delete_comment")
async def _delete(s: Scene) -> dict[str, Any]:
    return await _commented(s)


@_prepares("mod:banned_words")
async def _words(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "add": ["spamword"]}


@_prepares("mod:slow_mode")
async def _slow(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room, "interval_s": 5}


@_prepares("metrics:subscribe")
async def _subscribe(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room}


@_prepares("metrics:unsubscribe")
async def _unsubscribe(s: Scene) -> dict[str, Any]:
    return {"room_id": s.room}


# -- the table is complete ------------------------------------------------------------------


def test_the_table_covers_every_control_event() -> None:
    control = {n for n, spec in registered_specs().items() if spec.access is Access.CONTROL}
    assert control <= set(SOCKET_MATRIX), (
        f"control events missing a row: {control - set(SOCKET_MATRIX)}"
    )
    assert set(SOCKET_MATRIX) == set(PREPARE)


# -- the cells ------------------------------------------------------------------------------


@pytest.mark.parametrize(("event", "caller", "expected"), _cells(SOCKET_MATRIX))
async def test_socket_control_event(
    event: str,
    caller: str,
    expected: str,
    app_server: AppServer,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
) -> None:
    assert event in registered_specs(), f"{event} is in the matrix but not registered"
    scene = await Scene.build(
        app_server, api_factory(app_server.url), client_factory, live=True, pk=event[:3] == "pk:"
    )
    payload = await PREPARE[event](scene)
    actor = await client_factory(app_server.url, await scene.token(caller))
    ack = await actor.call(event, payload)
    if expected == ALLOWED:
        assert ack.get("ok") is True, f"{caller} {event} {payload} -> {ack}"
    else:
        assert ack_error(ack) == expected, f"{caller} {event} {payload} -> {ack}"
        assert isinstance(ack["error"].get("message"), str) and ack["error"]["message"]


@pytest.mark.parametrize(("route", "caller", "expected"), _cells(HTTP_MATRIX))
async def test_http_control_route(
    route: str,
    caller: str,
    expected: str,
    app_server: AppServer,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
) -> None:
    method, template = route.split(" ", 1)
    canonical = template.replace("{room}", "{room_id}")
    routes = {r.canonical for r in app_server.server.app.router.resources()}
    assert canonical in routes, f"{route} is in the matrix but not routed"
    api = api_factory(app_server.url)
    live = not template.endswith("/start")  # start a scheduled room, end a live one
    scene = await Scene.build(app_server, api, client_factory, live=live, pk=False)
    path = template.format(room=scene.room)
    status, body = await api.request(
        method, path, await scene.token(caller), HTTP_BODIES.get(route)
    )
    if expected == ALLOWED:
        assert 200 <= status < 300, f"{caller} {route} -> {status} {body}"
    else:
        assert status == HTTP_STATUS[expected], f"{caller} {route} -> {status} {body}"
        assert body["error"]["code"] == expected, body


# -- the order of the checks ----------------------------------------------------------------


async def test_anonymous_is_unauthorized_before_the_payload_is_looked_at(
    app_server: AppServer, client_factory: ClientFactory
) -> None:
    """docs/protocol.md: "Control events check the caller in this order: no token ->
    unauthorized; payload invalid -> invalid; room missing -> not_found; not the room's
    host nor staff/admin -> forbidden"."""
    anon = await client_factory(app_server.url)
    control = sorted(n for n, s in registered_specs().items() if s.access is Access.CONTROL)
    answers = {event: ack_error(await anon.call(event, {})) for event in control}
    wrong = {event: code for event, code in answers.items() if code != "unauthorized"}
    assert not wrong, f"anonymous with an empty payload, expected unauthorized: {wrong}"


async def test_a_missing_room_is_not_found_before_forbidden(
    app_server: AppServer, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """The same order: a viewer naming a room (or PK) that does not exist gets not_found."""
    api = api_factory(app_server.url)
    scene = await Scene.build(app_server, api, client_factory, live=True, pk=True)
    viewer = await client_factory(app_server.url, scene.viewer)
    wrong: dict[str, str] = {}
    for event in sorted(set(SOCKET_MATRIX) & set(registered_specs())):
        if event in ("pk:respond", "pk:end"):  # their "room" is the PK
            payload = {"pk_id": "missing_1", "accept": True}
        else:
            payload = {**await PREPARE[event](scene), "room_id": "missing_1"}
        ack = await viewer.call(event, payload)
        if ack_error(ack) != "not_found":
            wrong[event] = ack["error"]["code"]
    for route in HTTP_MATRIX:
        method, template = route.split(" ", 1)
        status, body = await api.request(
            method, template.format(room="missing_1"), scene.viewer, HTTP_BODIES.get(route)
        )
        if status != 404:
            wrong[route] = f"{status} {body}"
    assert not wrong, wrong
