"""Socket events of PK battles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.pk.schemas import PkInvite, PkRef, PkRespond
from livecommerce.transport.dispatch import Call, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, node: Node) -> None:
    async def invited_host(payload: PkRespond) -> str:
        return (await node.pk.hosts(payload.pk_id))[1]

    async def either_host(payload: PkRef) -> set[str]:
        return set(await node.pk.hosts(payload.pk_id))

    @on.on("pk:invite", PkInvite, Access.CONTROL)
    async def invite(call: Call[PkInvite]) -> dict[str, Any]:
        return {"pk": await node.pk.invite(call.payload)}

    @on.on("pk:respond", PkRespond, Access.CONTROL, host_of=invited_host)
    async def respond(call: Call[PkRespond]) -> dict[str, Any]:
        return {"pk": await node.pk.respond(call.payload.pk_id, call.payload.accept)}

    @on.on("pk:end", PkRef, Access.CONTROL, host_of=either_host)
    async def end(call: Call[PkRef]) -> dict[str, Any]:
        return {"pk": await node.pk.end(call.payload.pk_id)}
