"""Domain errors. Every code is one of PROTOCOL.md's error codes.

Features raise these; transport turns them into ``{"ok": false, "error": {...}}`` acks and
HTTP bodies. Nothing else ever reaches a client.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: HTTP status for each protocol code (used by the HTTP routes).
HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "muted": 403,
    "blocked": 422,
    "room_not_live": 409,
    "not_started": 409,
    "ended": 409,
    "sold_out": 409,
    "limit_exceeded": 409,
    "expired": 410,
    "payment_failed": 402,
    "group_full": 409,
    "already_joined": 409,
    "already_entered": 409,
    "not_eligible": 403,
    "busy": 409,
    "conflict": 409,
    "unavailable": 503,
}


class DomainError(Exception):
    """A failure with a protocol error code and a human message."""

    code: ClassVar[str] = "invalid"
    default_message: ClassVar[str] = "invalid request"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.extra = extra
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


def _make(name: str, code: str, message: str) -> type[DomainError]:
    return type(name, (DomainError,), {"code": code, "default_message": message})


Invalid = _make("Invalid", "invalid", "invalid request")
Unauthorized = _make("Unauthorized", "unauthorized", "sign in first")
Forbidden = _make("Forbidden", "forbidden", "you may not do that")
NotFound = _make("NotFound", "not_found", "not found")
RateLimited = _make("RateLimited", "rate_limited", "slow down")
Muted = _make("Muted", "muted", "you are muted in this room")
Blocked = _make("Blocked", "blocked", "that text is not allowed")
RoomNotLive = _make("RoomNotLive", "room_not_live", "the room is not live")
NotStarted = _make("NotStarted", "not_started", "not started yet")
Ended = _make("Ended", "ended", "already ended")
SoldOut = _make("SoldOut", "sold_out", "sold out")
LimitExceeded = _make("LimitExceeded", "limit_exceeded", "per-user limit reached")
Expired = _make("Expired", "expired", "expired")
PaymentFailed = _make("PaymentFailed", "payment_failed", "payment failed")
GroupFull = _make("GroupFull", "group_full", "the group is full")
AlreadyJoined = _make("AlreadyJoined", "already_joined", "already joined")
AlreadyEntered = _make("AlreadyEntered", "already_entered", "already entered")
NotEligible = _make("NotEligible", "not_eligible", "not eligible")
Busy = _make("Busy", "busy", "busy")
Conflict = _make("Conflict", "conflict", "state changed, try again")
Unavailable = _make("Unavailable", "unavailable", "a backend is unavailable; nothing was changed")
