"""Helpers for comment tests: a live room."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import AppServer, make_user
from tests.support.client import Api


@dataclass
class LiveRoom:
    server: AppServer
    api: Api
    host: str  # token
    room_id: str


async def live_room(server: AppServer, api: Api, host_name: str = "anchor") -> LiveRoom:
    host = await make_user(server.node, host_name, "host")
    room_id = (await api.ok("POST", "/api/rooms", host, {"title": "Live"}))["id"]
    await api.ok("POST", f"/api/rooms/{room_id}/start", host)
    return LiveRoom(server, api, host, room_id)
