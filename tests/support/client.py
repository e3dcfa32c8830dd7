"""Real clients for tests: a python-socketio AsyncClient that records what it receives,
and a small HTTP API wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

Predicate = Callable[[dict[str, Any]], bool]


class Client:
    """One Socket.IO connection (websocket transport only, as across nodes)."""

    def __init__(
        self, url: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.headers = headers or {}
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self._arrived.set()

    async def connect(self) -> Client:
        await self.sio.connect(
            self.url,
            auth={"token": self.token} if self.token else None,
            headers=self.headers,
            transports=["websocket"],
            wait_timeout=10,
        )
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> dict[str, Any]:
        result = await self.sio.call(event, data, timeout=timeout)
        assert isinstance(result, dict), f"{event} acked with {result!r}"
        return result

    async def ok(self, event: str, data: Any = None) -> dict[str, Any]:
        ack = await self.call(event, data)
        assert ack.get("ok") is True, f"{event} {data!r} -> {ack}"
        return ack

    def received(self, event: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event]

    async def wait_for(
        self, event: str, where: Predicate | None = None, timeout: float = 10, after: int = 0
    ) -> dict[str, Any]:
        """The first ``event`` (at index >= ``after``) matching ``where``, waiting for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = after
        while True:
            for name, data in self.events[seen:]:
                if name == event and (where is None or where(data)):
                    return data
            seen = max(seen, len(self.events))
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {event} within {timeout}s; got {self.events[-10:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


class Api:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession()

    async def request(
        self, method: str, path: str, token: str | None = None, json: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base_url + path, json=json, headers=headers
        ) as res:
            ctype = res.headers.get("Content-Type", "")
            data = await res.json() if "json" in ctype else await res.text()
            return res.status, data

    async def ok(self, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
        status, data = await self.request(method, path, token, json)
        assert status < 300, f"{method} {path} -> {status} {data}"
        return data

    async def guest(self, name: str) -> tuple[str, dict[str, Any]]:
        data = await self.ok("POST", "/api/auth/guest", json={"name": name})
        return data["token"], data["user"]

    async def login(self, username: str, password: str) -> str:
        data = await self.ok(
            "POST", "/api/auth/login", json={"username": username, "password": password}
        )
        return str(data["token"])

    async def close(self) -> None:
        await self.session.close()
