"""Turning untrusted payloads into typed ones, or an ``invalid`` error with fields."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from livecommerce import errors

M = TypeVar("M", bound=BaseModel)


def validate(schema: type[M], data: Any) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise errors.Invalid("payload must be an object", fields={"": "expected an object"})
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        fields = {
            ".".join(str(part) for part in err["loc"]) or "": err["msg"]
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        }
        raise errors.Invalid("invalid payload", fields=fields) from None
