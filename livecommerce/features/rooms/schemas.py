"""Payloads of the rooms feature (socket events and HTTP bodies)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from livecommerce.features.schemas import EpochMs, Id, Payload, Url

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class RoomJoin(Payload):
    room_id: Id
    since_seq: Annotated[int, Field(ge=0)] | None = None


class RoomLeave(Payload):
    room_id: Id


class ProductPin(Payload):
    room_id: Id
    product_id: Id | None


class RoomCreate(Payload):
    title: Title
    stream_url: Url | None = None
    #: Optional scheduled start: the room goes live by itself at this time.
    starts_at: EpochMs | None = None


class ProductCreate(Payload):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    price_cents: Annotated[int, Field(gt=0, le=10**9)]
    stock: Annotated[int, Field(ge=0, le=10**7)]
    image_url: Url | None = None
