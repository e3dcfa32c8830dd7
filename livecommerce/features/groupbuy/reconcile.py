"""Start-up settlement of groups the engine lost.

The engine holds live groups and their expiry timers. If it loses them (the in-process
engine after a restart, a Redis that lost its data), SQL still knows every group that was
forming or open, and every member order: such a group cannot go on, so it fails here,
from SQL — each paid member refunded and compensated exactly once (the same
idempotency keys as the timer's settlement), a seat still paying settled from the
provider's record. Groups the engine still has are left to their timers.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce.engine.base import now_ms
from livecommerce.features.groupbuy.public import group_keys
from livecommerce.features.groupbuy.service import GroupBuyService
from livecommerce.persistence.groupbuy_models import GroupBuy

log = structlog.get_logger(__name__)


async def reconcile(service: GroupBuyService) -> int:
    """Fail every group SQL sees unsettled and the engine does not have; returns how many."""
    await service.engine.drain_logs()  # SQL first catches up with what the engine decided
    closed = 0
    for row in await service.records.unsettled():
        keys = group_keys(row.room_id, row.campaign_id)
        if await service.engine.atomic("group_read", keys, [row.id]) is None:
            closed += await _close_lost(service, row)
    if closed:
        log.warning("groupbuy_lost_groups_failed", count=closed)
    return closed


async def _close_lost(service: GroupBuyService, row: GroupBuy) -> int:
    terms = await service.terms(row.campaign_id)
    now, moved = now_ms(), []
    for order in await service.records.member_orders(row.id):
        if order.status not in ("paying", "paid"):
            continue
        paid = order.status == "paid" or await service.provider.charged(order.id)
        record: dict[str, Any] = {
            **order.to_public(),
            "refund_cents": order.amount_cents if paid else 0,
            "status": "refunded" if paid else "declined",
            "updated_at": now,
        }
        if paid:  # money back first, then the coupon, then the record: a re-run repeats
            await service.settlement.refund(record, "group_failed")
            await service.settlement.coupon(terms, record)
        moved.append(record)
    await service.records.write(moved, [])
    refunded = any(o["status"] == "refunded" for o in moved)
    return int(await service.records.close_lost(row.id, "failed" if refunded else "cancelled", now))
