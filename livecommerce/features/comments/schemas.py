"""Payloads of bullet comments and likes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from livecommerce.features.schemas import Id, Payload, RequestId

#: Generous at the edge (the service trims and counts characters against the setting).
RawText = Annotated[str, StringConstraints(max_length=2000)]


class CommentSend(Payload):
    room_id: Id
    text: RawText
    request_id: RequestId | None = None


class LikeSend(Payload):
    room_id: Id
    count: Annotated[int, Field(ge=1, le=100)]
