"""Names and payload shapes the group-buy feature emits."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class GroupEvent(StrEnum):
    UPDATE = "groupbuy:update"  # room broadcast {campaign, group?}
    ORDER = "order:update"  # to the member only {order}
    COUPON = "groupbuy:coupon"  # to the member only {coupon}, when a group failed


class UpdatePayload(TypedDict):
    campaign: dict[str, Any]
    group: NotRequired[dict[str, Any]]


class OrderPayload(TypedDict):
    order: dict[str, Any]


class CouponPayload(TypedDict):
    coupon: dict[str, Any]
