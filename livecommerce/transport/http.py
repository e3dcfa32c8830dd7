"""HTTP routes: health, metrics, auth, rooms, products, orders and the pages."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from livecommerce import errors, jsonutil
from livecommerce.auth import Principal
from livecommerce.features.access import Access, require
from livecommerce.features.rooms.schemas import ProductCreate, RoomCreate
from livecommerce.features.schemas import Payload
from livecommerce.observability import CONTENT_TYPE
from livecommerce.transport._validate import M, validate

if TYPE_CHECKING:
    from livecommerce.app import Node

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent.parent.parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
#: What an incoming request id may look like (UUIDs, trace ids); anything else is replaced.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class GuestIn(Payload):
    name: str


class LoginIn(Payload):
    username: str
    password: str


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonutil.dumpb(data), status=status, content_type="application/json")


def error_response(exc: errors.DomainError) -> web.Response:
    response = json_response({"error": exc.to_dict()}, status=exc.http_status)
    retry_ms = exc.extra.get("retry_after_ms")
    if isinstance(retry_ms, int):
        response.headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
    return response


def request_id_of(request: web.Request) -> str:
    """The request's id: the caller's X-Request-Id (a client's or the balancer's trace id)
    when it looks like one, else a new one. It is echoed back and on every log line."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def _log_context(request: web.Request) -> dict[str, str]:
    context = {
        "request_id": request_id_of(request),
        "http_method": request.method,
        "http_path": request.path[:200],
    }
    room_id = request.match_info.get("room_id")
    if room_id:
        context["room_id"] = room_id[:128]
    return context


def error_middleware(node: Node) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "_unmatched"
        # Socket.IO's requests are left alone: each event binds its own context
        # (dispatch.py), and a WebSocket's request lasts as long as its connection.
        socketio = request.path.startswith("/socket.io")
        context = {} if socketio else _log_context(request)
        bound = structlog.contextvars.bind_contextvars(**context)
        try:
            response = await handler(request)
        except errors.DomainError as exc:
            response = error_response(exc)
            _log_refusal(exc.code, response.status)
        except web.HTTPException as exc:
            if exc.status < 400 or socketio:
                if context:
                    exc.headers[REQUEST_ID_HEADER] = context["request_id"]
                raise
            code = {404: "not_found", 405: "invalid", 413: "invalid"}.get(exc.status, "invalid")
            response = json_response(
                {"error": {"code": code, "message": exc.reason}}, status=exc.status
            )
            _log_refusal(code, exc.status)
        except Exception:
            log.exception("http_failed")
            response = error_response(errors.Unavailable("internal error"))
        finally:
            structlog.contextvars.reset_contextvars(**bound)
        if context and not response.prepared:
            response.headers[REQUEST_ID_HEADER] = context["request_id"]
        node.metrics.http.labels(name, str(response.status)).inc()
        return response

    return middleware


def _log_refusal(code: str, status: int) -> None:
    # As for socket events: info, a backend down at warning, rate limits at debug.
    level = {"unavailable": logging.WARNING, "rate_limited": logging.DEBUG}.get(code, logging.INFO)
    log.log(level, "http_refused", code=code, status=status)


async def body(request: web.Request, schema: type[M]) -> M:
    try:
        data = await request.json(loads=jsonutil.loads) if request.can_read_body else {}
    except ValueError:
        raise errors.Invalid("body must be JSON") from None
    return validate(schema, data)


class Routes:
    def __init__(self, node: Node) -> None:
        self.node = node

    def principal(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthorized("use Authorization: Bearer <token>")
        principal = self.node.auth.verify(token.strip())
        structlog.contextvars.bind_contextvars(user_id=principal.id)  # this request's lines
        return principal

    async def authorize(self, request: web.Request, access: Access) -> Principal:
        principal = self.principal(request)
        host_id = None
        if access is Access.CONTROL and principal is not None:
            host_id = (await self.node.rooms.get(request.match_info["room_id"])).host_id
        require(principal, access, host_id)
        assert principal is not None
        return principal

    # -- health -------------------------------------------------------------------------

    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"ok": True, "node_id": self.node.node_id})

    async def readyz(self, _: web.Request) -> web.Response:
        checks = {"database": await self.node.db.ping(), "engine": await self.node.engine.ping()}
        # Draining (SIGTERM): not ready, so the balancer stops routing clients here.
        checks["accepting"] = not self.node.draining
        ok = all(checks.values())
        return json_response({"ok": ok, "checks": checks}, status=200 if ok else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.node.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # -- auth ---------------------------------------------------------------------------

    def limit_auth(self, request: web.Request) -> None:
        limits = self.node.limits
        limits.check_auth(limits.client_ip(request.remote, request.headers))

    async def guest(self, request: web.Request) -> web.Response:
        self.limit_auth(request)
        data = await body(request, GuestIn)
        token, user = await self.node.auth.guest(data.name)
        return json_response({"token": token, "user": user.to_public()})

    async def login(self, request: web.Request) -> web.Response:
        self.limit_auth(request)
        data = await body(request, LoginIn)
        token, user = await self.node.auth.login(data.username, data.password)
        return json_response({"token": token, "user": user.to_public()})

    async def me(self, request: web.Request) -> web.Response:
        principal = await self.authorize(request, Access.ACT)
        return json_response({"user": principal.to_public()})

    # -- rooms and products -------------------------------------------------------------

    async def list_rooms(self, request: web.Request) -> web.Response:
        if request.query.get("host") == "me":
            principal = await self.authorize(request, Access.HOST)
            return json_response({"rooms": await self.node.rooms.list_hosted(principal.id)})
        return json_response({"rooms": await self.node.rooms.list_live()})

    async def create_room(self, request: web.Request) -> web.Response:
        principal = await self.authorize(request, Access.HOST)
        data = await body(request, RoomCreate)
        room = await self.node.rooms.create(principal, data.title, data.stream_url, data.starts_at)
        return json_response(room, status=201)

    async def get_room(self, request: web.Request) -> web.Response:
        room_id = request.match_info["room_id"]
        room = (await self.node.rooms.get(room_id)).to_public()
        room["online"] = await self.node.engine.online(room_id)
        return json_response(room)

    async def start_room(self, request: web.Request) -> web.Response:
        await self.authorize(request, Access.CONTROL)
        return json_response(await self.node.rooms.start(request.match_info["room_id"]))

    async def end_room(self, request: web.Request) -> web.Response:
        await self.authorize(request, Access.CONTROL)
        return json_response(await self.node.rooms.end(request.match_info["room_id"]))

    async def add_product(self, request: web.Request) -> web.Response:
        await self.authorize(request, Access.CONTROL)
        d = await body(request, ProductCreate)
        product = await self.node.rooms.add_product(
            request.match_info["room_id"], d.title, d.price_cents, d.stock, d.image_url
        )
        return json_response(product, status=201)

    async def list_products(self, request: web.Request) -> web.Response:
        products = await self.node.rooms.products_of(request.match_info["room_id"])
        return json_response({"products": products})

    async def list_orders(self, request: web.Request) -> web.Response:
        principal = await self.authorize(request, Access.ACT)
        orders = await self.node.orders.list_for_user(principal.id)
        return json_response({"orders": [o.to_public() for o in orders]})

    # -- comments and moderation --------------------------------------------------------

    async def recent_comments(self, request: web.Request) -> web.Response:
        room_id = request.match_info["room_id"]
        await self.node.rooms.get(room_id)
        return json_response({"comments": await self.node.comments.recent(room_id)})

    async def keywords(self, request: web.Request) -> web.Response:
        await self.authorize(request, Access.CONTROL)
        room_id = request.match_info["room_id"]
        return json_response({"keywords": await self.node.comments.keywords(room_id)})

    async def moderation_log(self, request: web.Request) -> web.Response:
        await self.authorize(request, Access.CONTROL)
        actions = await self.node.audit.list_for_room(request.match_info["room_id"])
        return json_response({"actions": [a.to_public() for a in actions]})

    async def draw_proof(self, request: web.Request) -> web.Response:
        return json_response(await self.node.draws.proof(request.match_info["draw_id"]))

    # -- pages --------------------------------------------------------------------------

    def page(self, name: str) -> Handler:
        async def serve(_: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC / name)

        return serve


def add_routes(app: web.Application, node: Node) -> None:
    r = Routes(node)
    app.middlewares.append(error_middleware(node))
    app.router.add_get("/healthz", r.healthz)
    app.router.add_get("/readyz", r.readyz)
    app.router.add_get("/metrics", r.metrics)
    app.router.add_post("/api/auth/guest", r.guest)
    app.router.add_post("/api/auth/login", r.login)
    app.router.add_get("/api/me", r.me)
    app.router.add_get("/api/rooms", r.list_rooms)
    app.router.add_post("/api/rooms", r.create_room)
    app.router.add_get("/api/rooms/{room_id}", r.get_room)
    app.router.add_post("/api/rooms/{room_id}/start", r.start_room)
    app.router.add_post("/api/rooms/{room_id}/end", r.end_room)
    app.router.add_get("/api/rooms/{room_id}/products", r.list_products)
    app.router.add_post("/api/rooms/{room_id}/products", r.add_product)
    app.router.add_get("/api/rooms/{room_id}/comments", r.recent_comments)
    app.router.add_get("/api/rooms/{room_id}/keywords", r.keywords)
    app.router.add_get("/api/rooms/{room_id}/moderation", r.moderation_log)
    app.router.add_get("/api/orders", r.list_orders)
    app.router.add_get("/api/draws/{draw_id}/proof", r.draw_proof)
    app.router.add_get("/", r.page("index.html"))
    app.router.add_get("/rooms/{room_id}", r.page("room.html"))
    app.router.add_get("/host", r.page("host.html"))
    app.router.add_get("/staff", r.page("staff.html"))
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
