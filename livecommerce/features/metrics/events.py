"""Names of the events staff metrics emit."""

from __future__ import annotations

from enum import StrEnum


class MetricsEvent(StrEnum):
    TICK = "metrics:tick"  # to each subscribed connection, once per second
    NOTICE = "sales:notice"  # to the room: {"items": [{"product_id", "title", "count"}]}
