"""Payloads of staff metrics."""

from __future__ import annotations

from livecommerce.features.schemas import Id, Payload


class MetricsRoom(Payload):
    room_id: Id
