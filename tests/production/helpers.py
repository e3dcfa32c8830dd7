"""What the production tests share: viewers that survive reconnects, a host that keeps a
room busy, and the audit of what each viewer saw against the room's replayable history."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.support.client import Api, Client

Event = tuple[str, dict[str, Any]]
#: Replayable broadcasts the drills produce (ephemeral ones take a seq, are never replayed).
DURABLE = frozenset({"comment:batch", "product:pinned"})


def _seq(data: Any) -> int | None:
    return data.get("seq") if isinstance(data, dict) and isinstance(data.get("seq"), int) else None


class Viewer:
    """One audience member across reconnects, applying broadcasts by docs/protocol.md's
    client rule: while ``room:join`` is in flight buffer; at its ack apply the buffered
    ones above ``since_seq`` (a rejoin) or ``state.seq`` (a first join) in seq order; then
    apply a broadcast only if its seq is above the highest applied (a broadcast may arrive
    twice, live and replayed)."""

    def __init__(self, name: str, token: str, room_id: str) -> None:
        self.name = name
        self.token = token
        self.room_id = room_id
        self.clients: list[Client] = []
        self.start_seq = 0  # state.seq of the first join: the audit starts above it
        self.high = 0  # highest seq applied
        self.applied: list[Event] = []
        self._read = 0  # events of the current client already applied
        self.recovered: list[bool] = []
        self._shown: set[str] = set()  # comment ids applied

    @property
    def client(self) -> Client:
        return self.clients[-1]

    @property
    def connected(self) -> bool:
        return bool(self.clients) and bool(self.client.sio.connected)

    async def join(self, url: str, timeout: float = 10) -> dict[str, Any]:
        """Connect to ``url`` and join; a rejoin asks for what was missed by since_seq.
        A join answered ``unavailable`` (Redis not back yet) is tried again on a new
        connection until ``timeout``."""
        rejoin = bool(self.clients)
        if rejoin:
            self.settle()
        payload: dict[str, Any] = {"room_id": self.room_id}
        if rejoin:
            payload["since_seq"] = self.high
        deadline = time.monotonic() + timeout
        while True:
            client = Client(url, self.token)
            await client.connect()
            ack = await client.call("room:join", payload, timeout=timeout)
            if ack.get("ok") or time.monotonic() > deadline:
                break
            assert ack["error"]["code"] == "unavailable", f"{self.name}: room:join -> {ack}"
            await client.close()
            await asyncio.sleep(0.2)
        assert ack.get("ok") is True, f"{self.name}: room:join -> {ack}"
        self.clients.append(client)
        self._read = 0
        floor = self.high if rejoin else int(ack["state"]["seq"])
        if rejoin:
            self.recovered.append(bool(ack.get("recovered")))
        else:
            self.start_seq = self.high = floor
        buffered = sorted(
            (e for e in client.events if (_seq(e[1]) or 0) > floor), key=lambda e: _seq(e[1]) or 0
        )
        self._read = len(client.events)
        for event in buffered:
            self._apply(event)
        return ack

    def settle(self) -> None:
        """Apply what arrived since the last look."""
        if not self.clients:
            return
        events = self.client.events
        for event in events[self._read :]:
            self._apply(event)
        self._read = len(events)

    def _apply(self, event: Event) -> None:
        seq = _seq(event[1])
        if seq is None or seq <= self.high:
            return
        self.high = seq
        name, data = event
        if name == "comment:batch":
            # docs/protocol.md: a rejoining client may get a comment live and replayed;
            # it drops the ones it has shown, by id.
            items = [i for i in data["items"] if i["id"] not in self._shown]
            self._shown.update(i["id"] for i in items)
            event = (name, {**data, "items": items})
        self.applied.append(event)

    def durable(self, up_to: int) -> list[Event]:
        self.settle()
        return [(e, d) for e, d in self.applied if e in DURABLE and d["seq"] <= up_to]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


async def room_history(url: str, room_id: str) -> tuple[int, list[Event]]:
    """(state.seq, every durable broadcast of the room): a fresh client joins with
    since_seq 0 and gets the whole replayable history."""
    auditor = Client(url)
    await auditor.connect()
    try:
        ack = await auditor.ok("room:join", {"room_id": room_id, "since_seq": 0})
        assert ack["recovered"] is True, "the room's history was trimmed: raise history_size"
        top = int(ack["state"]["seq"])
        return top, [(e, d) for e, d in auditor.events if e in DURABLE and d["seq"] <= top]
    finally:
        await auditor.close()


def comment_ids(events: list[Event]) -> list[str]:
    return [item["id"] for e, d in events if e == "comment:batch" for item in d["items"]]


def pin_seqs(events: list[Event]) -> list[int]:
    return [d["seq"] for e, d in events if e == "product:pinned"]


def assert_saw_everything(viewer: Viewer, top: int, history: list[Event]) -> None:
    """Every durable broadcast above the viewer's first join, once each, in seq order."""
    want = [(e, d) for e, d in history if d["seq"] > viewer.start_seq]
    got = viewer.durable(top)
    raw = [_seq(d) for c in viewer.clients for _, d in c.events]
    assert pin_seqs(got) == pin_seqs(want), (
        f"{viewer.name}: pins {pin_seqs(got)} != {pin_seqs(want)}; received seqs {raw}"
    )
    got_ids, want_ids = comment_ids(got), comment_ids(want)
    missing = [i for i in want_ids if i not in set(got_ids)]
    assert not missing, f"{viewer.name} missed {len(missing)} comments: {missing[:5]}"
    if got_ids != want_ids:
        pairs = enumerate(zip(got_ids, want_ids, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(got_ids), len(want_ids)))
        frames = [(d["seq"], len(d["items"])) for e, d in got if e == "comment:batch"]
        raise AssertionError(
            f"{viewer.name}: comments duplicated or out of order from #{at}: got "
            f"{got_ids[at - 1 : at + 3]}, want {want_ids[at - 1 : at + 3]}; "
            f"{len(got_ids)} vs {len(want_ids)}; frames (seq, items) {frames}; "
            f"recovered {viewer.recovered}"
        )


class HostLoad:
    """The host keeps the room busy: a comment every ``every_s``, every fifth step a pin
    instead (cycling the products). Counts each outcome; a call never answered is a
    "timeout"."""

    def __init__(
        self, client: Client, room_id: str, product_ids: list[str], every_s: float = 0.04
    ) -> None:
        self.client = client
        self.room_id = room_id
        self.product_ids = product_ids
        self.every_s = every_s
        self.outcomes: Counter[str] = Counter()
        self.comment_ids: list[str] = []
        self.slowest_s = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        step = 0
        while not self._stop.is_set():
            step += 1
            if step % 5 == 0:
                pid = self.product_ids[(step // 5) % len(self.product_ids)]
                await self._call("product:pin", {"room_id": self.room_id, "product_id": pid})
            else:
                text = f"host says {step}"
                ack = await self._call(
                    "comment:send", {"room_id": self.room_id, "text": text, "request_id": text}
                )
                if ack and ack.get("ok"):
                    self.comment_ids.append(ack["id"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)

    async def _call(self, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        started = time.monotonic()
        try:
            ack = await self.client.call(event, data, timeout=5)
        except TimeoutError:
            self.outcomes["timeout"] += 1
            return None
        finally:
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
        self.outcomes["ok" if ack.get("ok") else ack["error"]["code"]] += 1
        return ack


async def live_room(
    api: Api, host: str, products: int = 3, nodes: Sequence[str] = ()
) -> tuple[str, list[str]]:
    """A started room with ``products`` products, created through ``api``. Each node caches
    a room for up to a second (features/rooms/service.py), so this waits until every node
    in ``nodes`` (their URLs) sees it live: the tests are about what comes after."""
    rid = str((await api.ok("POST", "/api/rooms", host, {"title": "Production drill"}))["id"])
    pids = [
        str(
            (
                await api.ok(
                    "POST",
                    f"/api/rooms/{rid}/products",
                    host,
                    {"title": f"P{i}", "price_cents": 1000 + i, "stock": 1000},
                )
            )["id"]
        )
        for i in range(products)
    ]
    await api.ok("POST", f"/api/rooms/{rid}/start", host)
    for url in nodes:
        direct = Api(url)
        try:

            async def live(direct: Api = direct) -> bool:
                return bool((await direct.ok("GET", f"/api/rooms/{rid}"))["status"] == "live")

            await eventually(live, timeout=5)
        finally:
            await direct.close()
    return rid, pids


async def eventually(check: Any, timeout: float = 10, every: float = 0.1) -> None:
    """Wait until ``check()`` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {check}")
        await asyncio.sleep(every)
