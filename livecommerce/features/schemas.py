"""Shared payload building blocks: strict models, so ``"5"`` is not an int and ``true`` is
not 1, and unknown fields are ignored (clients may be newer than the server)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-:.]+$")]
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Url = Annotated[str, StringConstraints(max_length=2000, pattern=r"^https?://\S+$")]
EpochMs = Annotated[int, Field(ge=0, le=10**14)]


class Payload(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
