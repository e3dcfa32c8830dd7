"""Lucky draws: one at a time per room, entered by keyword comment or by ``draw:enter``,
drawn exactly once by a durable timer with an algorithm anyone can re-run (``fair.py``).

The seed is made (``secrets``) and stored in SQL before the draw is announced with its
commitment; it is revealed only with the result. Who may win: entrants (entered during the
window; muted users cannot enter) who are still in the room when the draw closes — every
node reports its signed-in viewers of rooms with an open draw every
``presence_refresh_s``, and a viewer nobody reported for ``presence_ttl_s`` has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.comments.service import CommentService
from livecommerce.features.comments.text import normalize
from livecommerce.features.draws import fair
from livecommerce.features.draws.events import DrawEvent
from livecommerce.features.draws.schemas import DrawCreate
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.draws import Draws
from livecommerce.persistence.models import Draw, new_id

log = structlog.get_logger(__name__)

END = "draw.end"
#: How long past its end a draw's engine state is kept (a late re-fire still finds it).
KEEP_MS = 3600 * 1000

LocalMembers = Callable[[str], set[str]]


def draw_keys(room_id: str, draw_id: str) -> dict[str, str]:
    base = keys.room_key(room_id, "draw", draw_id)
    return {
        "current": keys.room_key(room_id, "draw", "current"),
        "state": base,
        "entrants": f"{base}:entrants",
        "names": f"{base}:names",
        "here": f"{base}:here",
        "final": f"{base}:final",
    }


def public(draw: Draw, entrants: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": draw.entry_type}
    if draw.keyword is not None:
        entry["keyword"] = draw.keyword
    out: dict[str, Any] = {
        "id": draw.id,
        "room_id": draw.room_id,
        "prize": draw.prize,
        "winners": draw.winners,
        "ends_at": draw.ends_at,
        "entry": entry,
        "status": draw.status,
        "commitment": draw.commitment,
        "entrants": entrants if draw.status == "open" else draw.entrants_count,
    }
    if draw.status == "drawn":
        out["result"] = {
            "winners": jsonutil.loads(draw.winners_json or "[]"),
            "seed": draw.seed_hex,
        }
    return out


@dataclass(frozen=True, slots=True)
class OpenDraw:
    id: str
    keyword: str | None  # normalised; None for "anyone"
    ends_at: int


class DrawService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        comments: CommentService,
        draws: Draws,
        min_duration_s: int = 10,
    ) -> None:
        self.min_duration_s = min_duration_s
        self.engine = engine
        self.rooms = rooms
        self.comments = comments
        self.draws = draws
        #: This node's signed-in viewers of a room (set by the app: transport knows them).
        self.local_members: LocalMembers = lambda _room: set()
        self._open: TTLCache[str, OpenDraw | None] = TTLCache(1.0)
        self._by_id: TTLCache[str, Draw | None] = TTLCache(1.0)  # status changes once
        self._task: asyncio.Task[None] | None = None
        engine.on_timer(END, self._on_end)
        rooms.add_snapshot_part(self._snapshot)
        comments.add_hook(self._on_comment)

    # -- creating -----------------------------------------------------------------------

    async def create(self, data: DrawCreate) -> dict[str, Any]:
        if data.duration_s < self.min_duration_s:
            raise errors.Invalid(
                f"duration_s must be at least {self.min_duration_s}",
                fields={"duration_s": f"at least {self.min_duration_s}"},
            )
        room = await self.rooms.get(data.room_id)
        if room.status != "live":
            raise errors.RoomNotLive(status=room.status)
        keyword = getattr(data.entry, "keyword", None)
        if keyword is not None and not normalize(keyword):
            raise errors.Invalid("keyword has no letters", fields={"entry": "empty keyword"})
        seed = secrets.token_bytes(32)
        draw_id, now = new_id("d"), now_ms()
        ends_at = now + data.duration_s * 1000
        k = draw_keys(data.room_id, draw_id)
        opened = await self.engine.atomic(
            "draw_open", [k["current"], k["state"]], [draw_id, ends_at, ends_at - now + KEEP_MS]
        )
        if opened.get("error") == "busy":
            raise errors.Busy("a draw is already running in this room", draw_id=opened["draw_id"])
        draw = await self.draws.create(
            id=draw_id,
            room_id=data.room_id,
            prize=data.prize,
            winners=data.winners,
            entry_type=data.entry.type,
            keyword=keyword,
            created_at=now,
            ends_at=ends_at,
            status="open",
            seed_hex=seed.hex(),
            commitment=fair.commitment(seed),
            entrants_count=0,
        )
        await self.engine.schedule(END, draw_id, ends_at, {"room_id": data.room_id})
        self._open.invalidate(data.room_id)
        body = public(draw, 0)
        await self.engine.publish(data.room_id, DrawEvent.UPDATE, {"draw": body})
        log.info("draw_created", draw_id=draw_id, room_id=data.room_id, entry=data.entry.type)
        return body

    # -- entering -----------------------------------------------------------------------

    async def enter(self, user: Principal, draw_id: str) -> dict[str, Any]:
        draw = await self._draw(draw_id)
        if draw.entry_type != "anyone":
            raise errors.NotEligible("enter this draw by commenting its keyword")
        if await self.comments.muted_until(draw.room_id, user.id):
            raise errors.NotEligible("muted viewers cannot enter")
        result = await self._enter(draw.room_id, draw_id, user)
        if not result["new"]:
            raise errors.AlreadyEntered()
        return {"entrants": result["count"]}

    async def _enter(self, room_id: str, draw_id: str, user: Principal) -> dict[str, Any]:
        k = draw_keys(room_id, draw_id)
        step = [k["state"], k["entrants"], k["names"]]
        result: dict[str, Any] = await self.engine.atomic(
            "draw_enter", step, [user.id, user.name, now_ms()]
        )
        if result.get("error") == "ended":
            raise errors.Ended("the draw has closed")
        if result.get("error") == "not_found":
            raise errors.NotFound("no such draw", draw_id=draw_id)
        return result

    async def _on_comment(
        self, room_id: str, user: Principal, text: str, draw_id: str | None
    ) -> None:
        # Every accepted comment: the gate step told us the room's open draw (exact, on
        # every node at once); its keyword never changes, so it is cached by draw id.
        if draw_id is None:
            return
        draw = await self._draw(draw_id)
        if draw.keyword is None or normalize(draw.keyword) not in normalize(text):
            return
        with contextlib.suppress(errors.Ended, errors.NotFound):
            await self._enter(room_id, draw_id, user)

    async def _current(self, room_id: str) -> OpenDraw | None:
        async def load() -> OpenDraw | None:
            current = draw_keys(room_id, "-")["current"]
            draw_id = (await self.engine.atomic("draw_current", [current], []))["draw_id"]
            draw = None if draw_id is None else await self.draws.get(draw_id)
            if draw is None or draw.status != "open":
                return None
            keyword = normalize(draw.keyword) if draw.keyword is not None else None
            return OpenDraw(draw.id, keyword, draw.ends_at)

        return await self._open.get(room_id, load)

    async def _draw(self, draw_id: str) -> Draw:
        draw = await self._by_id.get(draw_id, lambda: self.draws.get(draw_id))
        if draw is None:
            self._by_id.invalidate(draw_id)
            raise errors.NotFound("no such draw", draw_id=draw_id)
        return draw

    # -- drawing ------------------------------------------------------------------------

    async def _on_end(self, draw_id: str, payload: dict[str, Any]) -> None:
        room_id = payload["room_id"]
        k = draw_keys(room_id, draw_id)
        closed = await self.engine.atomic(
            "draw_close",
            [k["state"], k["entrants"], k["here"], k["names"], k["final"], k["current"]],
            [now_ms(), draw_id],
        )
        draw = await self.draws.get(draw_id)
        if draw is None or closed.get("error"):
            log.error("draw_lost", draw_id=draw_id, room_id=room_id)
            return
        entrants = fair.order(closed["eligible"])
        chosen = fair.pick(bytes.fromhex(draw.seed_hex), entrants, draw.winners)
        winners = [{"id": u, "name": closed["names"].get(u, "")} for u in chosen]
        first = await self.draws.finish(
            draw_id, entrants=entrants, winners=winners, entered=closed["entered"], at=now_ms()
        )
        self._open.invalidate(room_id)
        self._by_id.invalidate(draw_id)
        if not first:
            return  # a re-fire after the result was recorded: it was announced then
        await self._announce(draw, entrants, winners)

    async def _announce(
        self, draw: Draw, entrants: list[str], winners: list[dict[str, str]]
    ) -> None:
        await self.engine.publish(
            draw.room_id,
            DrawEvent.RESULT,
            {
                "draw_id": draw.id,
                "winners": winners,
                "seed": draw.seed_hex,
                "commitment": draw.commitment,
                "entrants_count": len(entrants),
            },
        )
        won = {"room_id": draw.room_id, "draw_id": draw.id, "prize": draw.prize}
        for winner in winners:
            await self.engine.send_to_user(winner["id"], DrawEvent.WON, won)
        log.info("draw_drawn", draw_id=draw.id, entrants=len(entrants), winners=len(winners))

    async def proof(self, draw_id: str) -> dict[str, Any]:
        draw = await self.draws.get(draw_id)
        if draw is None:
            raise errors.NotFound("no such draw", draw_id=draw_id)
        if draw.status != "drawn":
            raise errors.Conflict("not drawn yet: the seed is revealed with the result")
        return {
            "draw_id": draw.id,
            "room_id": draw.room_id,
            "prize": draw.prize,
            "winners_wanted": draw.winners,
            "seed": draw.seed_hex,
            "commitment": draw.commitment,
            "entrants": jsonutil.loads(draw.entrants_json or "[]"),
            "winners": [w["id"] for w in jsonutil.loads(draw.winners_json or "[]")],
            "algorithm": fair.ALGORITHM,
        }

    # -- presence while a draw is open --------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._report_loop(), name="draw-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.engine.presence_refresh_s)
            for room_id in list(self.engine.local_rooms()):
                try:
                    await self._report(room_id)
                except errors.DomainError as exc:
                    log.warning("draw_presence_failed", room_id=room_id, error=exc.code)

    async def _report(self, room_id: str) -> None:
        current = await self._current(room_id)
        if current is None:
            return
        members = self.local_members(room_id)
        now = now_ms()
        expiry = now + int(self.engine.presence_ttl_s * 1000)
        k = draw_keys(room_id, current.id)
        if members:
            await self.engine.atomic("draw_here", [k["here"]], [now, expiry, *sorted(members)])
        count = (await self._peek(room_id, current.id, None))["count"]  # staff see it grow
        draw = await self._draw(current.id)
        await self.engine.publish_if_changed(
            room_id,
            DrawEvent.UPDATE,
            "entrants",
            count,
            payload={"draw": public(draw, count)},
            dedupe=f"draw:{current.id}",
        )

    # -- the join snapshot --------------------------------------------------------------

    async def _snapshot(self, room_id: str, me: Principal | None) -> dict[str, Any]:
        current = await self._current(room_id)
        if current is None:
            return {}
        draw = await self._draw(current.id)
        peek = await self._peek(room_id, current.id, me)
        part: dict[str, Any] = {"draw": public(draw, peek["count"])}
        if me is not None:
            part["me"] = {"entered_draw": peek["entered"]}
        return part

    async def _peek(self, room_id: str, draw_id: str, me: Principal | None) -> dict[str, Any]:
        entrants = draw_keys(room_id, draw_id)["entrants"]
        found: dict[str, Any] = await self.engine.atomic(
            "draw_peek", [entrants], [me.id if me else ""]
        )
        return found
