"""Names of the events bullet comments, likes and moderation emit."""

from __future__ import annotations

from enum import StrEnum


class CommentEvent(StrEnum):
    BATCH = "comment:batch"
    DELETED = "comment:deleted"
    LIKES = "like:total"
    SLOW_MODE = "room:slow_mode"  # {"interval_s"}: an addition to PROTOCOL.md
    MUTED = "comment:muted"  # to the muted user only: {"room_id", "until"} (0: unmuted)
