"""Payloads of lucky draws."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from livecommerce.features.schemas import Id, Payload


class CommentEntry(Payload):
    type: Literal["comment"]
    keyword: Annotated[str, StringConstraints(min_length=1, max_length=30)]


class AnyoneEntry(Payload):
    type: Literal["anyone"]


class DrawCreate(Payload):
    room_id: Id
    prize: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    winners: Annotated[int, Field(ge=1, le=1000)]
    duration_s: Annotated[int, Field(ge=1, le=3600)]  # >= draws.min_duration_s (10)
    entry: Annotated[CommentEntry | AnyoneEntry, Field(discriminator="type")]


class DrawRef(Payload):
    draw_id: Id
