"""Socket events of group buys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.groupbuy.schemas import GroupCreate, GroupJoin, GroupOpen
from livecommerce.transport.dispatch import Call, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, node: Node) -> None:
    @on.on("groupbuy:create", GroupCreate, Access.CONTROL)
    async def create(call: Call[GroupCreate]) -> dict[str, Any]:
        return {"campaign": await node.groupbuys.create(call.payload)}

    @on.on("groupbuy:open", GroupOpen, Access.ACT)
    async def open_group(call: Call[GroupOpen]) -> dict[str, Any]:
        p = call.payload
        return await node.groupbuys.open(call.user, p.campaign_id, p.request_id)

    @on.on("groupbuy:join", GroupJoin, Access.ACT)
    async def join(call: Call[GroupJoin]) -> dict[str, Any]:
        return await node.groupbuys.join(call.user, call.payload)
