"""Names of the events lucky draws emit."""

from __future__ import annotations

from enum import StrEnum


class DrawEvent(StrEnum):
    UPDATE = "draw:update"  # {"draw"}: created, and the entrant count as it grows
    RESULT = "draw:result"
    WON = "draw:won"  # to each winner only: {"room_id", "draw_id", "prize"}
