"""Fixtures for comment tests: a node whose limits a test can tune, and a live room."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import AppServer, make_user, start_app
from tests.support.client import Api


@dataclass
class LiveRoom:
    server: AppServer
    api: Api
    host: str  # token
    room_id: str


@pytest.fixture
async def node_factory(db_url: str) -> AsyncIterator[Callable[..., Awaitable[AppServer]]]:
    servers: list[AppServer] = []

    async def make(**overrides: dict[str, Any]) -> AppServer:
        servers.append(await start_app(db_url, **overrides))
        return servers[-1]

    yield make
    for server in servers:
        await server.server.close()


async def live_room(server: AppServer, api: Api, host_name: str = "anchor") -> LiveRoom:
    host = await make_user(server.node, host_name, "host")
    room_id = (await api.ok("POST", "/api/rooms", host, {"title": "Live"}))["id"]
    await api.ok("POST", f"/api/rooms/{room_id}/start", host)
    return LiveRoom(server, api, host, room_id)
