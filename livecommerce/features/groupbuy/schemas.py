"""Payloads of group buys."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from livecommerce import errors
from livecommerce.features.schemas import Id, Payload, RequestId

MAX_GROUP = 50
MAX_TIER_SIZE = 100
Price = Annotated[int, Field(gt=0, le=10**9)]


class Tier(Payload):
    size: Annotated[int, Field(ge=3, le=MAX_TIER_SIZE)]
    price_cents: Price


class GroupCreate(Payload):
    room_id: Id
    product_id: Id
    group_size: Annotated[int, Field(ge=2, le=MAX_GROUP)]
    price_cents: Price
    #: The lower bound is a setting (``groupbuy.min_ttl_s``), checked by the service.
    group_ttl_s: Annotated[int, Field(ge=1, le=86_400)]
    duration_s: Annotated[int, Field(ge=10, le=7 * 86_400)]
    tiers: Annotated[list[Tier], Field(max_length=10, default_factory=list)]
    quantity: Annotated[int, Field(ge=2, le=1_000_000)] | None = None

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend(cls, tiers: list[Tier], info: ValidationInfo) -> list[Tier]:
        # More members, lower price: each tier is larger and cheaper than the one before,
        # starting from (group_size, price_cents).
        size, price = info.data.get("group_size"), info.data.get("price_cents")
        if size is None or price is None:
            return tiers  # reported on those fields already
        for tier in tiers:
            if tier.size <= size:
                raise ValueError("tier sizes must increase, above group_size")
            if tier.price_cents >= price:
                raise ValueError("tier prices must decrease, below price_cents")
            size, price = tier.size, tier.price_cents
        return tiers

    @field_validator("quantity")
    @classmethod
    def _room_for_a_group(cls, quantity: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("group_size")
        if quantity is not None and size is not None and quantity < size:
            raise ValueError("quantity must be at least group_size")
        return quantity

    @property
    def max_size(self) -> int:
        return self.tiers[-1].size if self.tiers else self.group_size


class GroupOpen(Payload):
    campaign_id: Id
    request_id: RequestId


class GroupJoin(Payload):
    """``{"group_id"}`` joins that group; ``{"campaign_id", "auto": true}`` the open group
    closest to completion (or opens one)."""

    group_id: Id | None = None
    campaign_id: Id | None = None
    auto: bool = False
    request_id: RequestId

    def target(self) -> tuple[str, str]:
        """``("join", group_id)`` or ``("auto", campaign_id)``; ``invalid`` otherwise."""
        if self.group_id is not None and self.campaign_id is None and not self.auto:
            return "join", self.group_id
        if self.group_id is None and self.campaign_id is not None and self.auto:
            return "auto", self.campaign_id
        if self.group_id is not None:
            raise errors.Invalid(
                "give group_id, or campaign_id with auto",
                fields={"group_id": "not with campaign_id or auto"},
            )
        if self.campaign_id is not None:
            raise errors.Invalid(
                "campaign_id needs auto: true", fields={"auto": "must be true with campaign_id"}
            )
        raise errors.Invalid(
            "give group_id, or campaign_id with auto", fields={"group_id": "required"}
        )
