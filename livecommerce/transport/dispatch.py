"""The single path every socket event takes: decode, authorize, call, answer once.

Handlers declare their payload schema and access level; this module does the rest, so no
handler can forget validation, authorization, metrics or the error envelope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel

from livecommerce import errors, observability
from livecommerce.auth import Principal
from livecommerce.features.access import Access, require
from livecommerce.observability import EVENT_LOG_CONTEXT, Metrics
from livecommerce.transport._validate import validate

log = structlog.get_logger(__name__)

P = TypeVar("P", bound=BaseModel)
Ack = dict[str, Any]
#: Payload fields copied into the log context of an event (when they are short strings).
LOGGED_IDS = frozenset(
    "room_id request_id sale_id order_id campaign_id group_id draw_id pk_id product_id".split()
)
#: Names Socket.IO gives a meaning of its own: as client events they would reach the
#: connect/disconnect handlers (a client could change identity mid-connection). Both
#: transport paths refuse them.
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error", "message", "*"})
#: Refusals log at info, except: a backend down (warning) and rate limits (debug: a flood
#: of refused events must not become a flood of log lines).
_REFUSAL_LEVEL = {"unavailable": logging.WARNING, "rate_limited": logging.DEBUG}


@dataclass(slots=True, eq=False)
class Connection:
    """One Socket.IO connection on this node."""

    sid: str
    principal: Principal | None
    ip: str = ""
    rooms: set[str] = field(default_factory=set)
    eio: Any = None  # its Engine.IO socket (engineio.async_socket.AsyncSocket), or
    wire: Any = None  # its lean WebSocket (transport/wire.py WireConn)
    cut: bool = False  # cut off as a slow consumer: nothing more is written to it
    events: Any = None  # its event-rate bucket (transport/limits.py Bucket)
    #: Serialises this connection's comments: socket.io runs each event in a task of its
    #: own, and a sender's comments must reach the room in the order they were sent.
    #: Made on the first comment: most connections never send one.
    comment_order: asyncio.Lock | None = None


@dataclass(frozen=True, slots=True)
class Call(Generic[P]):
    conn: Connection
    payload: P

    @property
    def principal(self) -> Principal | None:
        return self.conn.principal

    @property
    def user(self) -> Principal:
        """The signed-in caller (handlers with access ACT or stronger)."""
        assert self.conn.principal is not None
        return self.conn.principal


Handler = Callable[[Call[Any]], Awaitable[Ack]]
#: Finds the host of the room a payload targets (for Access.CONTROL).
HostOf = Callable[[Any], Awaitable[str | Collection[str] | None]]


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    schema: type[BaseModel]
    access: Access
    handler: Handler
    host_of: HostOf | None


class Dispatcher:
    def __init__(self, metrics: Metrics, default_host_of: HostOf) -> None:
        self.metrics = metrics
        self.default_host_of = default_host_of
        self.specs: dict[str, EventSpec] = {}

    def on(
        self, name: str, schema: type[P], access: Access, host_of: HostOf | None = None
    ) -> Callable[[Callable[[Call[P]], Awaitable[Ack]]], Callable[[Call[P]], Awaitable[Ack]]]:
        def register(
            fn: Callable[[Call[P]], Awaitable[Ack]],
        ) -> Callable[[Call[P]], Awaitable[Ack]]:
            if name in self.specs:
                raise ValueError(f"event {name} registered twice")
            self.specs[name] = EventSpec(name, schema, access, fn, host_of)
            return fn

        return register

    async def dispatch(self, conn: Connection, event: str, data: Any) -> Ack:
        started = time.perf_counter()
        spec = self.specs.get(event)
        label = event if spec is not None else "_unknown"
        # Every log line of this event (features' too) carries who and what it was about.
        bound = EVENT_LOG_CONTEXT.set(partial(_log_context, conn, event, data))
        try:
            if spec is None:
                raise errors.Invalid("unknown event", event=str(event)[:64])
            ack = await self._run(spec, conn, data)
            outcome = "ok"
        except errors.DomainError as exc:
            ack, outcome = {"ok": False, "error": exc.to_dict()}, exc.code
            level = _REFUSAL_LEVEL.get(exc.code, logging.INFO)
            if level >= observability.LOG_LEVEL:
                log.log(level, "event_refused", code=exc.code, message=exc.message)
        except Exception:
            log.exception("event_failed")
            # docs/protocol.md: a server fault answers unavailable / "internal error".
            ack = {"ok": False, "error": errors.Unavailable("internal error").to_dict()}
            outcome = "internal"
        finally:
            EVENT_LOG_CONTEXT.reset(bound)
        self.metrics.event_done(label, outcome, time.perf_counter() - started)
        return ack

    async def _run(self, spec: EventSpec, conn: Connection, data: Any) -> Ack:
        if spec.access is not Access.WATCH:
            require(conn.principal, Access.ACT)  # anonymous: unauthorized, whatever it sent
        payload = validate(spec.schema, data)
        host_id = None
        if spec.access is Access.CONTROL:
            host_id = await (spec.host_of or self.default_host_of)(payload)
        require(conn.principal, spec.access, host_id)
        result = await spec.handler(Call(conn, payload))
        return {"ok": True, **result}


def _log_context(conn: Connection, event: str, data: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"sid": conn.sid, "socket_event": str(event)[:64]}
    if conn.principal is not None:
        context["user_id"] = conn.principal.id
    if isinstance(data, dict):
        for key in LOGGED_IDS:
            value = data.get(key)
            if isinstance(value, str) and 0 < len(value) <= 128:
                context[key] = value
    return context
