"""Telling people: ``order:update`` to members, ``groupbuy:update`` to the room.

Called after every engine step that changed something. In-process (no durable log) the
step's log entries are written to SQL first, so an acknowledged join is already in
``/api/orders`` and the join snapshot ("direct writes", as for flash sales).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from livecommerce.engine import Engine
from livecommerce.engine.base import now_ms
from livecommerce.features.groupbuy.events import GroupEvent, UpdatePayload
from livecommerce.features.groupbuy.public import campaign_public, group_public

log = structlog.get_logger(__name__)

#: Group statuses the room may see (``forming``: the leader is paying; ``cancelled``: the
#: leader's payment was declined, so the group never existed for anyone else).
VISIBLE = frozenset({"open", "succeeded", "failed"})


class Fanout:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Called with every member order that became ``confirmed`` (its group succeeded),
        #: at the final price: a sale that counts (PK sales scores).
        self.confirmed_hooks: list[Callable[[dict[str, Any]], Awaitable[None]]] = []

    async def written(self) -> None:
        if self.engine.durable_logs:
            return
        try:
            await self.engine.drain_logs()  # one node, no Redis: SQL before the ack
        except Exception as exc:  # the log loop retries it; the step itself stands
            log.warning("groupbuy_write_deferred", error=str(exc))

    async def orders(self, orders: list[dict[str, Any]]) -> None:
        for order in orders:
            await self.engine.send_to_user(order["user_id"], GroupEvent.ORDER, {"order": order})
            if order["status"] == "confirmed":
                await self._confirmed(order)

    async def _confirmed(self, order: dict[str, Any]) -> None:
        for hook in self.confirmed_hooks:
            try:
                await hook(order)
            except Exception:
                log.exception("confirmed_hook_failed", order_id=order["id"])

    async def room(
        self, terms: dict[str, Any], counters: dict[str, Any], group: dict[str, Any] | None
    ) -> None:
        payload: UpdatePayload = {"campaign": campaign_public(terms, counters, now_ms())}
        if group is not None and group["status"] in VISIBLE:
            payload["group"] = group_public(group, terms)
        await self.engine.publish(terms["room_id"], GroupEvent.UPDATE, dict(payload))

    async def step(self, terms: dict[str, Any], result: dict[str, Any]) -> None:
        """After a seat, payment or settlement step: SQL, the members, then the room."""
        if not result.get("changed") and not result.get("new"):
            return
        await self.written()
        changed = {o["id"]: o for o in result.get("orders") or []}
        if "order" in result:
            changed.setdefault(result["order"]["id"], result["order"])
        await self.orders(list(changed.values()))
        group = result.get("group")
        seen = group is not None and group["status"] in VISIBLE and not result.get("new")
        if seen or result.get("status_changed"):
            await self.room(terms, result["campaign"], group)
