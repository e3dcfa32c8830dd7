"""Payloads of flash sales and orders."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from livecommerce.features.schemas import EpochMs, Id, Payload, RequestId


class SaleCreate(Payload):
    room_id: Id
    product_id: Id
    price_cents: Annotated[int, Field(gt=0, le=10**9)]
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    per_user_limit: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    starts_at: EpochMs | None = None
    duration_s: Annotated[int, Field(ge=10, le=86_400)]
    hold_s: Annotated[int, Field(ge=1, le=3_600)] = 300


class SaleBuy(Payload):
    sale_id: Id
    qty: Annotated[int, Field(ge=1, le=1_000)] = 1
    request_id: RequestId


class OrderRef(Payload):
    order_id: Id
