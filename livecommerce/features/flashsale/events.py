"""Names the flash-sale feature emits."""

from __future__ import annotations

from enum import StrEnum


class SaleEvent(StrEnum):
    UPDATE = "flashsale:update"  # room broadcast {sale}
    ORDER = "order:update"  # to the buyer only {order}
