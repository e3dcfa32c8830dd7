"""PK battles: invite, accept, fight, punish, end — settled exactly once.

Every phase change is one engine step (``engine/lua/pk_step.lua``) that reads the phase
first and tells exactly one caller it changed it; that caller announces the change to both
rooms and, at the end of the fight, records the result in SQL. A PK spans two rooms, so its
keys carry a tag of their own (``keys.pk_key``): claiming both rooms is one step, which is
how crossed invitations leave at most one PK.

Scores: in mode ``sales`` the cents of every order paid in either room while the fight is
on (flash sales and group buys call :meth:`PkService.add_score`); in mode ``likes`` every
like sent in either room. A score counts only if ``pk_score.lua`` finds the fight on at
that moment, so nothing lands after the end that both rooms saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import structlog

from livecommerce import errors, jsonutil
from livecommerce._utils import TTLCache
from livecommerce.auth import Principal
from livecommerce.engine import Engine, keys
from livecommerce.engine.base import now_ms
from livecommerce.features.pk.events import PkEvent
from livecommerce.features.pk.schemas import PkInvite
from livecommerce.features.rooms.service import RoomService
from livecommerce.persistence.models import new_id
from livecommerce.persistence.pk import PkBattles
from livecommerce.persistence.repositories import Users
from livecommerce.settings import PkSettings

log = structlog.get_logger(__name__)

LAPSE, END, FINISH = "pk.lapse", "pk.end", "pk.finish"


def pk_keys(pk_id: str, room_a: str, room_b: str) -> list[str]:
    """KEYS of pk_invite / pk_step: hash, both contribution zsets, both room claims."""
    return [
        keys.pk_key(pk_id),
        keys.pk_key(pk_id, "top", room_a),
        keys.pk_key(pk_id, "top", room_b),
        keys.pk_room(room_a),
        keys.pk_room(room_b),
    ]


class PkService:
    def __init__(
        self,
        engine: Engine,
        rooms: RoomService,
        users: Users,
        battles: PkBattles,
        settings: PkSettings,
    ) -> None:
        self.engine = engine
        self.rooms = rooms
        self.users = users
        self.battles = battles
        self.settings = settings
        self._rooms_of: TTLCache[str, tuple[str, str, str] | None] = TTLCache(3600)
        self._names: TTLCache[str, str] = TTLCache(60)
        self._dirty: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        engine.on_timer(LAPSE, self._on_timer("lapse"))
        engine.on_timer(END, self._on_timer("end"))
        engine.on_timer(FINISH, self._on_timer("finish"))
        rooms.add_snapshot_part(self._snapshot)

    # -- who is who ---------------------------------------------------------------------

    async def hosts(self, pk_id: str) -> tuple[str, str]:
        """The hosts of the inviting and the invited room (authorization)."""
        room_a, room_b, _ = await self._meta(pk_id)
        return (await self.rooms.get(room_a)).host_id, (await self.rooms.get(room_b)).host_id

    async def _meta(self, pk_id: str) -> tuple[str, str, str]:
        """(room_a, room_b, mode): fixed for a PK's life, so cached."""

        async def load() -> tuple[str, str, str] | None:
            state = await self.engine.atomic("pk_get", pk_keys(pk_id, "-", "-")[:3], [])
            return None if "error" in state else (state["a"], state["b"], state["mode"])

        found = await self._rooms_of.get(pk_id, load)
        if found is None:
            self._rooms_of.invalidate(pk_id)
            raise errors.NotFound("no such PK", pk_id=pk_id)
        return found

    # -- inviting and answering ---------------------------------------------------------

    async def invite(self, data: PkInvite) -> dict[str, Any]:
        if data.duration_s < self.settings.min_duration_s:
            raise errors.Invalid(
                f"duration_s must be at least {self.settings.min_duration_s}",
                fields={"duration_s": f"at least {self.settings.min_duration_s}"},
            )
        if data.target_room_id == data.room_id:
            raise errors.Invalid("a room cannot PK itself", fields={"target_room_id": "same"})
        for room_id in (data.room_id, data.target_room_id):
            room = await self.rooms.get(room_id)
            if room.status != "live":
                raise errors.RoomNotLive(room_id=room_id, status=room.status)
        pk_id, now = new_id("pk"), now_ms()
        lapse_at = now + int(self.settings.invite_ttl_s * 1000)
        args = [pk_id, data.room_id, data.target_room_id, data.mode, data.duration_s * 1000,
                data.punish_s * 1000, now, lapse_at]  # fmt: skip
        state = await self.engine.atomic(
            "pk_invite", pk_keys(pk_id, data.room_id, data.target_room_id), args
        )
        if state.get("error") == "busy":
            raise errors.Busy("that room is already in a PK", room_id=state["room_id"])
        await self.engine.schedule(LAPSE, pk_id, lapse_at)
        pk = await self._announce(state)
        target_host = (await self.rooms.get(data.target_room_id)).host_id
        await self.engine.send_to_user(target_host, PkEvent.INVITED, {"pk": pk})
        log.info("pk_invited", pk_id=pk_id, room=data.room_id, target=data.target_room_id)
        return pk

    async def respond(self, pk_id: str, accept: bool) -> dict[str, Any]:
        state = await self._step(pk_id, "accept" if accept else "decline")
        if not state["changed"]:
            if state["phase"] == "lapsed":
                raise errors.Expired("the invitation lapsed", pk=await self._public(state))
            raise errors.Conflict(f"the PK is {state['phase']}", pk=await self._public(state))
        await self.engine.cancel(LAPSE, pk_id)
        if state["phase"] == "fighting":
            await self.engine.schedule(END, pk_id, state["ends_at"])
        return await self._announce(state)

    async def end(self, pk_id: str) -> dict[str, Any]:
        state = await self._step(pk_id, "end")
        if not state["changed"]:
            raise errors.Conflict(f"the PK is {state['phase']}", pk=await self._public(state))
        await self.engine.cancel(END, pk_id)
        return await self._settled(state)

    def _on_timer(self, action: str) -> Any:
        async def fire(pk_id: str, _payload: dict[str, Any]) -> None:
            state = await self._step(pk_id, action)
            if not state["changed"]:
                return  # answered, ended early, or a re-fire: nothing to do
            if action == "end":
                await self._settled(state)
            else:
                await self._announce(state)

        return fire

    async def _step(self, pk_id: str, action: str) -> dict[str, Any]:
        room_a, room_b, _ = await self._meta(pk_id)
        state: dict[str, Any] = await self.engine.atomic(
            "pk_step", pk_keys(pk_id, room_a, room_b), [action, now_ms()]
        )
        if "error" in state:
            raise errors.NotFound("no such PK", pk_id=pk_id)
        return state

    async def _settled(self, state: dict[str, Any]) -> dict[str, Any]:
        """The fight is over: record it once, announce it, punish, then end."""
        pk = await self._public(state)
        await self.battles.settle(
            id=state["id"],
            room_a=state["a"],
            room_b=state["b"],
            mode=state["mode"],
            started_at=state["started_at"],
            ended_at=state["ended_at"],
            score_a=state["score_a"],
            score_b=state["score_b"],
            winner_room_id=state["winner"] or None,
            final_json=jsonutil.dumps(pk),
        )
        await self.engine.schedule(FINISH, state["id"], state["punish_until"])
        log.info("pk_settled", pk_id=state["id"], a=state["score_a"], b=state["score_b"])
        return await self._announce(state, pk)

    # -- scores -------------------------------------------------------------------------

    async def add_scores(self, room_id: str, amounts: Mapping[str, int], kind: str) -> None:
        """Count each user's ``amount`` in ``room_id`` if the room is fighting a PK of mode
        ``kind`` right now. One lookup when it is not."""
        found = await self.engine.atomic("pk_current", [keys.pk_room(room_id)], [])
        pk_id = found["pk_id"]
        if pk_id is None or (await self._meta(pk_id))[2] != kind:
            return
        top, now = keys.pk_key(pk_id, "top", room_id), now_ms()
        for user_id, amount in amounts.items():
            if amount <= 0:
                continue
            counted = await self.engine.atomic(
                "pk_score", [keys.pk_key(pk_id), top], [room_id, user_id, amount, now]
            )
            if counted["counted"]:
                self._dirty.add(pk_id)
        if self._dirty and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        # Scores move with every purchase; the rooms see them a few times a second.
        while self._dirty:
            await asyncio.sleep(self.settings.update_ms / 1000)
            for pk_id in list(self._dirty):
                turn = keys.pk_key(pk_id, "turn")
                try:
                    if not await self.engine.kv_set_nx(turn, "1", self.settings.update_ms):
                        continue  # another node just announced; ours is next round
                    self._dirty.discard(pk_id)
                    room_a, room_b, _ = await self._meta(pk_id)
                    state = await self.engine.atomic(
                        "pk_get", pk_keys(pk_id, room_a, room_b)[:3], []
                    )
                    if state.get("phase") == "fighting":
                        await self._announce(state, ephemeral=True)
                except errors.DomainError as exc:
                    log.warning("pk_update_failed", pk_id=pk_id, error=exc.code)

    # -- what rooms see -----------------------------------------------------------------

    async def _announce(
        self, state: dict[str, Any], pk: dict[str, Any] | None = None, *, ephemeral: bool = False
    ) -> dict[str, Any]:
        pk = pk or await self._public(state)
        for room_id in (state["a"], state["b"]):
            if ephemeral:  # score ticks: not replayed, the snapshot has the latest
                total = state["score_a"] + state["score_b"]
                await self.engine.publish_if_changed(
                    room_id, PkEvent.UPDATE, "total", total, payload={"pk": pk},
                    dedupe=f"pk:{state['id']}",
                )  # fmt: skip
            else:
                await self.engine.publish(room_id, PkEvent.UPDATE, {"pk": pk})
        return pk

    async def _public(self, state: dict[str, Any]) -> dict[str, Any]:
        rooms = []
        for side in ("a", "b"):
            room = await self.rooms.get(state[side])
            top = [
                {"id": uid, "name": await self._name(uid), "score": int(score)}
                for uid, score in state[f"top_{side}"]
            ]
            rooms.append({
                "room_id": room.id,
                "host": {"id": room.host_id, "name": room.host_name},
                "score": state[f"score_{side}"],
                "top": top,
                "mvp": top[0] if top and state["phase"] in ("punishing", "ended") else None,
            })  # fmt: skip
        return {
            "id": state["id"],
            "rooms": rooms,
            "mode": state["mode"],
            "phase": state["phase"],
            "invited_at": state["invited_at"],
            "lapse_at": state["lapse_at"],
            "started_at": state["started_at"] or None,
            "ends_at": state["ends_at"] or None,
            "ended_at": state["ended_at"] or None,
            "punish_s": state["punish_ms"] // 1000,
            "punish_until": state["punish_until"] or None,
            "winner_room_id": state["winner"] or None,
        }

    async def _name(self, user_id: str) -> str:
        async def load() -> str:
            user = await self.users.get(user_id)
            return user.name if user else ""

        return await self._names.get(user_id, load)

    async def _snapshot(self, room_id: str, _me: Principal | None) -> dict[str, Any]:
        found = await self.engine.atomic("pk_current", [keys.pk_room(room_id)], [])
        if found["pk_id"] is None:
            return {}
        room_a, room_b, _ = await self._meta(found["pk_id"])
        state = await self.engine.atomic("pk_get", pk_keys(found["pk_id"], room_a, room_b)[:3], [])
        return {} if "error" in state else {"pk": await self._public(state)}

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
