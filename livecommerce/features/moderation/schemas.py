"""Payloads of moderation events (host of the room or staff)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from livecommerce.features.schemas import Id, Payload

Reason = Annotated[str, StringConstraints(max_length=200)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Mute(Payload):
    room_id: Id
    user_id: Id
    duration_s: Annotated[int, Field(ge=1, le=30 * 86_400)]
    reason: Reason | None = None


class Unmute(Payload):
    room_id: Id
    user_id: Id
    reason: Reason | None = None


class DeleteComment(Payload):
    room_id: Id
    comment_id: Id
    reason: Reason | None = None


class BannedWordsEdit(Payload):
    room_id: Id
    add: Annotated[list[Word], Field(max_length=200, default_factory=list)]
    remove: Annotated[list[Word], Field(max_length=200, default_factory=list)]
    reason: Reason | None = None


class SlowMode(Payload):
    room_id: Id
    interval_s: Annotated[int, Field(ge=0, le=3600)]
    reason: Reason | None = None
