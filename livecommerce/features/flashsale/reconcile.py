"""Start-up reconciliation of engine stock with SQL orders.

Run by every node once it is up. It first drains the order log, so SQL has caught up with
what the engine decided; then, for each sale still open:

* the engine does not know the sale (a fresh in-process engine after a restart, or a Redis
  that lost its data): the sale is rebuilt from SQL — stock = quantity minus the units in
  reserved and paid orders — and the hold timers of reserved orders are re-armed;
* the engine knows it: orders the engine has but SQL lacks (or has in an older status)
  are written, and any remaining difference in units is logged loudly.
"""

from __future__ import annotations

from typing import Any

import structlog

from livecommerce.engine.base import now_ms
from livecommerce.features.flashsale.service import FlashSaleService, sale_keys

log = structlog.get_logger(__name__)


async def reconcile(service: FlashSaleService) -> dict[str, int]:
    await service.engine.drain_logs()
    report = {"checked": 0, "rebuilt": 0, "repaired": 0}
    for sale in await service.sales.list_open(now_ms()):
        report["checked"] += 1
        terms = sale.terms()
        state = await service.engine.atomic("sale_get", sale_keys(sale.room_id, sale.id), [])
        if state is None:
            await service.restore(terms)
            report["rebuilt"] += 1
        else:
            report["repaired"] += await _repair(service, terms, state)
    if report["rebuilt"] or report["repaired"]:
        log.warning("flashsale_reconciled", **report)
    return report


async def _repair(service: FlashSaleService, terms: dict[str, Any], state: dict[str, Any]) -> int:
    keys = sale_keys(terms["room_id"], terms["id"])
    in_engine = await service.engine.atomic("sale_orders", keys, [])
    in_sql = {o.id: o.status for o in await service.sales.orders(terms["id"])}
    missing = [
        o for o in in_engine if o["status"] != "paying" and in_sql.get(o["id"]) != o["status"]
    ]
    for order in missing:
        await service.orders.upsert(order)
    engine_units = terms["quantity"] - state["left"]
    sql_units = sum((await service.sales.units_held(terms["id"])).values())
    if engine_units != sql_units:
        log.error("sale_units_differ", sale_id=terms["id"], engine=engine_units, sql=sql_units)
    if missing:
        log.warning("orders_repaired", sale_id=terms["id"], count=len(missing))
    return len(missing)
