"""Durable logs: the per-room streams atomic steps append to, consumed at least once.

``log_register`` makes a room's stream part of a named log; ``on_log`` consumes it on a
node (the engine's log loop polls; ``drain_logs`` consumes what is waiting now). A handler
that raises gets the same entries again; an entry read by a node that died before
acknowledging it goes to another node once it has been idle a while (Redis).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livecommerce import jsonutil
from livecommerce.engine import Engine, redis_logs
from tests.engine.conftest import REDIS_BACKENDS, Admin, MakeNode
from tests.engine.helpers import eventually
from tests.engine.test_sale_ops import LOG, QUIET, T0, buy, install, sale_keys, step


class Recorder:
    """A log handler: records each batch; fails the next ``fail`` batches (after mangling
    them, as a handler that got half-way might)."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    async def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.batches.append([dict(entry) for entry in batch])
        if self.fail:
            self.fail -= 1
            for entry in batch:
                entry.clear()
            raise RuntimeError("sql is down")

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [entry for batch in self.batches for entry in batch]

    def ids(self) -> list[str]:
        return [jsonutil.loads(entry["o"])["id"] for entry in self.entries]


def stream(room: str = "r1") -> str:
    return sale_keys(room, "s1")[3]


async def sell(engine: Engine, room: str, *order_ids: str) -> None:
    """Install a sale in ``room`` (once) and place one order per id: one entry each."""
    await install(engine, room=room, qty=10_000, limit=10_000)
    for order_id in order_ids:
        assert (await buy(engine, "u1", room=room, order_id=order_id))["new"]


async def test_atomic_steps_append_to_the_room_stream(make_node: MakeNode) -> None:
    engine = (await make_node("a", **QUIET)).engine
    await sell(engine, "r1", "o1", "o2")
    await step(engine, "o1", "pay_begin", T0 + 2000)  # not logged: nothing to persist
    await step(engine, "o1", "pay_ok", T0 + 2001)
    await step(engine, "o2", "cancel", T0 + 2002)
    await step(engine, "o2", "cancel", T0 + 2003)  # no change, no entry
    recorder = Recorder()
    await engine.log_register(LOG, stream())  # registering late still finds them all
    engine.on_log(LOG, recorder)
    assert await engine.drain_logs() == 4
    assert all(set(entry) == {"o"} for entry in recorder.entries)
    logged = [jsonutil.loads(entry["o"]) for entry in recorder.entries]
    assert [(o["id"], o["status"]) for o in logged] == [
        ("o1", "reserved"),
        ("o2", "reserved"),
        ("o1", "paid"),
        ("o2", "cancelled"),
    ]
    assert logged[2]["updated_at"] == T0 + 2001
    assert await engine.drain_logs() == 0  # acknowledged: gone
    await sell(engine, "r1", "o3")
    assert await engine.drain_logs() == 1
    assert recorder.ids()[-1] == "o3"


async def test_started_engine_polls_its_logs(make_node: MakeNode) -> None:
    engine = (await make_node("a")).engine  # the log loop polls every 20 ms
    recorder = Recorder()
    await engine.log_register(LOG, stream())
    engine.on_log(LOG, recorder)
    await sell(engine, "r1", "o1")
    await eventually(lambda: recorder.ids() == ["o1"])
    await sell(engine, "r1", "o2", "o3")
    await eventually(lambda: recorder.ids() == ["o1", "o2", "o3"])
    await asyncio.sleep(0.1)
    assert recorder.ids() == ["o1", "o2", "o3"]  # delivered once each
    assert await engine.drain_logs() == 0


async def test_a_busy_node_defers_its_log_writes_for_a_bounded_time(make_node: MakeNode) -> None:
    """While the node answers a burst (``busy``), durable logs wait — at most
    ``log_defer_max_s`` — then are written even if the burst goes on; in-process (no
    durable log) nothing waits."""
    engine = (await make_node("a")).engine  # the log loop polls every 20 ms
    busy = True
    engine.busy = lambda: busy
    engine.log_defer_max_s = 0.6
    recorder = Recorder()
    await engine.log_register(LOG, stream())
    engine.on_log(LOG, recorder)
    await sell(engine, "r1", "o1")
    if not engine.durable_logs:  # in-process: written at once, busy or not
        await eventually(lambda: recorder.ids() == ["o1"], timeout=0.5)
        return
    await asyncio.sleep(0.3)
    assert recorder.ids() == [], "written while the node was busy"
    await eventually(lambda: recorder.ids() == ["o1"], timeout=1.5)  # the bound, still busy
    busy = False
    await sell(engine, "r1", "o2")
    await eventually(lambda: recorder.ids() == ["o1", "o2"], timeout=0.5)


async def test_failing_handler_gets_the_same_entries_again(make_node: MakeNode) -> None:
    engine = (await make_node("a", **QUIET)).engine
    recorder = Recorder(fail=2)
    await engine.log_register(LOG, stream())
    engine.on_log(LOG, recorder)
    await sell(engine, "r1", "o1", "o2")
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await engine.drain_logs()
    assert await engine.drain_logs() == 2
    # The same entries every time (not the handler's mangled copies), in the same order.
    assert [[jsonutil.loads(e["o"])["id"] for e in b] for b in recorder.batches] == [
        ["o1", "o2"],
        ["o1", "o2"],
        ["o1", "o2"],
    ]
    assert recorder.batches[0] == recorder.batches[1] == recorder.batches[2]
    assert await engine.drain_logs() == 0  # after success: never again
    # A failed batch comes back first, ahead of what was written since.
    recorder.fail = 1
    await sell(engine, "r1", "o3")
    with pytest.raises(RuntimeError):
        await engine.drain_logs()
    await sell(engine, "r1", "o4")
    assert await engine.drain_logs() == 2
    assert recorder.ids()[-3:] == ["o3", "o3", "o4"]
    assert await engine.drain_logs() == 0


async def test_two_rooms_streams_under_one_log(make_node: MakeNode) -> None:
    engine = (await make_node("a", **QUIET)).engine
    recorder = Recorder()
    for room in ("r1", "r2"):
        await engine.log_register(LOG, stream(room))
        await engine.log_register(LOG, stream(room))  # registering twice is harmless
    engine.on_log(LOG, recorder)
    await sell(engine, "r1", "a1", "a2")
    await sell(engine, "r2", "b1")
    await sell(engine, "r3", "c1")  # not registered: not part of the log
    assert await engine.drain_logs() == 3
    assert sorted(recorder.ids()) == ["a1", "a2", "b1"]
    other = Recorder()
    await engine.log_register("elsewhere", stream("r3"))
    engine.on_log("elsewhere", other)
    assert await engine.drain_logs() == 1
    assert other.ids() == ["c1"]
    assert sorted(recorder.ids()) == ["a1", "a2", "b1"]


async def test_nodes_share_the_work_each_entry_once(make_node: MakeNode) -> None:
    a = (await make_node("a", **QUIET)).engine
    b = (await make_node("b", **QUIET)).engine
    got_a, got_b = Recorder(), Recorder()
    for engine, recorder in ((a, got_a), (b, got_b)):
        await engine.log_register(LOG, stream())
        engine.on_log(LOG, recorder)
    ids = [f"o{i}" for i in range(30)]
    for chunk in (ids[:10], ids[10:20], ids[20:]):
        await sell(a, "r1", *chunk)
        await asyncio.gather(a.drain_logs(), b.drain_logs())
    assert sorted(got_a.ids() + got_b.ids()) == sorted(ids)


# ---------------------------------------------------------------------- redis: crashes


@pytest.fixture
def fast_claim(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(redis_logs, "CLAIM_IDLE_MS", 300)
    return 300


@pytest.mark.parametrize("make_node", REDIS_BACKENDS, indirect=True)
async def test_entry_a_dead_node_read_goes_to_another(make_node: MakeNode, fast_claim: int) -> None:
    a = (await make_node("a", **QUIET)).engine
    b = (await make_node("b", **QUIET)).engine
    await a.log_register(LOG, stream())
    await sell(a, "r1", "o1", "o2")
    taken = await a._log_read(LOG, 200)  # a reads ... and dies before acknowledging
    assert [jsonutil.loads(e.data["o"])["id"] for e in taken] == ["o1", "o2"]
    recorder = Recorder()
    b.on_log(LOG, recorder)
    await sell(a, "r1", "o3")
    assert await b.drain_logs() == 1  # only what nobody read yet
    assert recorder.ids() == ["o3"]
    await asyncio.sleep(fast_claim / 1000 + 0.1)
    assert await b.drain_logs() == 2  # idle long enough: b takes over a's entries
    assert recorder.ids() == ["o3", "o1", "o2"]
    assert await b.drain_logs() == 0
    await asyncio.sleep(fast_claim / 1000 + 0.1)
    assert await b.drain_logs() == 0  # acknowledged by b: a's claim is over
    a.on_log(LOG, Recorder())
    assert await a.drain_logs() == 0


@pytest.mark.parametrize("make_node", REDIS_BACKENDS, indirect=True)
async def test_busy_entries_are_not_taken_before_the_idle_time(
    make_node: MakeNode, fast_claim: int
) -> None:
    a = (await make_node("a", **QUIET)).engine
    b = (await make_node("b", **QUIET)).engine
    await a.log_register(LOG, stream())
    await sell(a, "r1", "o1")
    assert len(await a._log_read(LOG, 200)) == 1  # a's handler is still at it
    recorder = Recorder()
    b.on_log(LOG, recorder)
    for _ in range(3):  # a keeps polling: its batch stays a's and is not handed out twice
        await asyncio.sleep(fast_claim / 1000 / 2)
        assert await a._log_read(LOG, 200) == []
        assert await b.drain_logs() == 0
    assert recorder.ids() == []


@pytest.mark.parametrize("make_node", REDIS_BACKENDS, indirect=True)
async def test_log_survives_redis_losing_its_data(make_node: MakeNode, admin: Admin) -> None:
    """Redis restarted empty; the service installs the sale again (registering its stream
    first, as ``install`` does) and buyers carry on: their orders still reach the log."""
    engine = (await make_node("a", **QUIET)).engine
    recorder = Recorder()
    engine.on_log(LOG, recorder)
    await engine.log_register(LOG, stream())
    await sell(engine, "r1", "o1")
    assert await engine.drain_logs() == 1
    admin.flushall()
    await engine.log_register(LOG, stream())
    await sell(engine, "r1", "o2")
    assert await engine.drain_logs() == 1
    assert recorder.ids() == ["o1", "o2"]
    # Only the stream lost (the registry kept): the group is made again on reading.
    admin.delete(stream())
    await sell(engine, "r1", "o3")
    assert await engine.drain_logs() == 1
    assert recorder.ids() == ["o1", "o2", "o3"]


@pytest.mark.parametrize("make_node", REDIS_BACKENDS, indirect=True)
async def test_pending_entry_trimmed_from_the_stream_is_dropped(
    make_node: MakeNode, admin: Admin
) -> None:
    engine = (await make_node("a", **QUIET)).engine
    await engine.log_register(LOG, stream())
    await sell(engine, "r1", "o1", "o2")
    batch = await engine._log_read(LOG, 200)
    await engine._log_release(LOG, batch)  # its handler failed: pending, to be read again
    admin.xdel(stream(), batch[0].id)  # trimmed (MAXLEN) while pending
    again = await engine._log_read(LOG, 200)
    assert [jsonutil.loads(e.data["o"])["id"] for e in again] == ["o2"]
    assert admin.xpending(stream(), redis_logs.GROUP)["pending"] == 1  # o1 is gone


async def test_concurrent_failed_batches_are_all_retried(make_node: MakeNode) -> None:
    """Several consumers of one node fail at once (SQL down during a burst): every entry
    of every failed batch is delivered again, none lost."""
    engine = (await make_node("a", **QUIET)).engine
    await engine.log_register(LOG, stream())
    ids = [f"o{i}" for i in range(450)]  # more than one read's worth (200)
    await sell(engine, "r1", *ids)
    release = asyncio.Event()
    seen: list[str] = []

    async def down(batch: list[dict[str, Any]]) -> None:
        seen.extend(jsonutil.loads(entry["o"])["id"] for entry in batch)
        await release.wait()
        raise RuntimeError("sql is down")

    engine.on_log(LOG, down)
    # drain_logs() calls run one at a time; the poll loop's reads run beside them.
    consumers = [asyncio.create_task(engine._consume_logs()) for _ in range(3)]
    await eventually(lambda: len(seen) == 450)
    assert sorted(seen) == sorted(ids)  # three batches, each entry in one of them
    release.set()
    for consumer in consumers:
        with pytest.raises(RuntimeError):
            await consumer
    recorder = Recorder()
    engine.on_log(LOG, recorder)
    assert await engine.drain_logs() == 450
    assert sorted(recorder.ids()) == sorted(ids)
    assert await engine.drain_logs() == 0


@pytest.mark.parametrize("make_node", REDIS_BACKENDS, indirect=True)
async def test_node_restarted_under_its_id_finishes_its_batch_at_once(
    make_node: MakeNode,
) -> None:
    first = (await make_node("a", **QUIET)).engine
    await first.log_register(LOG, stream())
    await sell(first, "r1", "o1", "o2")
    assert len(await first._log_read(LOG, 200)) == 2
    await first.close()  # died mid-write
    again = (await make_node("a", **QUIET)).engine
    recorder = Recorder()
    again.on_log(LOG, recorder)
    assert await again.drain_logs() == 2  # no waiting for the idle time
    assert recorder.ids() == ["o1", "o2"]
