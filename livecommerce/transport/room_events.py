"""Socket events of the rooms feature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.rooms.schemas import ProductPin, RoomJoin, RoomLeave
from livecommerce.transport.dispatch import Call, Dispatcher
from livecommerce.transport.socket import SocketGateway

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, gateway: SocketGateway, node: Node) -> None:
    @on.on("room:join", RoomJoin, Access.WATCH)
    async def join(call: Call[RoomJoin]) -> dict[str, Any]:
        room_id = call.payload.room_id
        await node.rooms.get(room_id)  # not_found before subscribing to anything
        await gateway.join(call.conn, room_id)
        state = await node.rooms.snapshot(room_id, call.principal)
        since = call.payload.since_seq
        if since is None:
            return {"state": state}
        missed = await node.engine.replay(room_id, since)
        if missed is None:
            return {"state": state, "recovered": False}
        # Replayed broadcasts go out before the ack, in seq order; later ones arrive live.
        for message in missed:
            if message.seq <= state["seq"]:
                await gateway.emit_to(call.conn, message.event, message.payload)
        return {"state": state, "recovered": True}

    @on.on("room:leave", RoomLeave, Access.WATCH)
    async def leave(call: Call[RoomLeave]) -> dict[str, Any]:
        await gateway.leave(call.conn, call.payload.room_id)
        return {}

    @on.on("product:pin", ProductPin, Access.CONTROL)
    async def pin(call: Call[ProductPin]) -> dict[str, Any]:
        product = await node.rooms.pin(call.payload.room_id, call.payload.product_id)
        return {"product": product}
