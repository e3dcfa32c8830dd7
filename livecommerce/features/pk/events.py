"""Names of the events PK battles emit."""

from __future__ import annotations

from enum import StrEnum


class PkEvent(StrEnum):
    UPDATE = "pk:update"  # to both rooms: every phase change, scores a few times a second
    INVITED = "pk:invited"  # to the invited room's host only
