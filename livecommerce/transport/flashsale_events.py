"""Socket events of flash sales and orders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livecommerce.features.access import Access
from livecommerce.features.flashsale.schemas import OrderRef, SaleBuy, SaleCreate
from livecommerce.transport.dispatch import Call, Dispatcher

if TYPE_CHECKING:
    from livecommerce.app import Node


def register(on: Dispatcher, node: Node) -> None:
    @on.on("flashsale:create", SaleCreate, Access.CONTROL)
    async def create(call: Call[SaleCreate]) -> dict[str, Any]:
        return {"sale": await node.flashsales.create(call.payload)}

    @on.on("flashsale:buy", SaleBuy, Access.ACT)
    async def buy(call: Call[SaleBuy]) -> dict[str, Any]:
        p = call.payload
        return {"order": await node.flashsales.buy(call.user, p.sale_id, p.qty, p.request_id)}

    @on.on("order:pay", OrderRef, Access.ACT)
    async def pay(call: Call[OrderRef]) -> dict[str, Any]:
        return {"order": await node.flashsales.pay(call.user, call.payload.order_id)}

    @on.on("order:cancel", OrderRef, Access.ACT)
    async def cancel(call: Call[OrderRef]) -> dict[str, Any]:
        return {"order": await node.flashsales.cancel(call.user, call.payload.order_id)}
