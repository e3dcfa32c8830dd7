"""Names and payload shapes the rooms feature broadcasts."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypedDict


class RoomEvent(StrEnum):
    STATUS = "room:status"
    ONLINE = "online:count"
    PINNED = "product:pinned"


class RoomStatusPayload(TypedDict):
    status: str


class ProductPinnedPayload(TypedDict):
    product: dict[str, Any] | None
