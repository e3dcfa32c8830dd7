"""Socket events of lucky draws."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.draws.schemas import DrawCreate, DrawRef
from livecommerce.transport.dispatch import Call, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, node: Node) -> None:
    @on.on("draw:create", DrawCreate, Access.CONTROL)
    async def create(call: Call[DrawCreate]) -> dict[str, Any]:
        return {"draw": await node.draws.create(call.payload)}

    @on.on("draw:enter", DrawRef, Access.ACT)
    async def enter(call: Call[DrawRef]) -> dict[str, Any]:
        return await node.draws.enter(call.user, call.payload.draw_id)
