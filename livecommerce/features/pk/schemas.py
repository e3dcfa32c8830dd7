"""Payloads of PK battles."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool

from livecommerce.features.schemas import Id, Payload


class PkInvite(Payload):
    room_id: Id
    target_room_id: Id
    duration_s: Annotated[int, Field(ge=1, le=3600)] = 300  # >= pk.min_duration_s (30)
    punish_s: Annotated[int, Field(ge=0, le=600)] = 60
    mode: Literal["sales", "likes"] = "sales"


class PkRespond(Payload):
    pk_id: Id
    accept: StrictBool


class PkRef(Payload):
    pk_id: Id
