"""The send thread (transport/offload.py): its C call against real sockets, then real nodes
whose room fan-outs all take the thread — every frame whole and in order, acks and closes
written behind it, and connections that come and go meanwhile never get a stray frame."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import socket
import struct
import threading
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livecommerce import jsonutil
from livecommerce.app import GATEWAY
from livecommerce.transport import offload
from livecommerce.transport import websocket as ws
from tests.conftest import AppServer
from tests.features.comments.conftest import live_room
from tests.features.comments.test_service import joined
from tests.support.client import Api, Client
from tests.support.rawws import StalledClient, client_frame
from tests.transport.test_wire import Raw

ClientFactory = Callable[..., Awaitable[Client]]
ApiFactory = Callable[[str], Api]
NodeFactory = Callable[..., Awaitable[AppServer]]


def send_each(fds: list[int], data: bytes) -> list[int]:
    from livecommerce.transport import _sendfan  # type: ignore[attr-defined]

    results = array("i")
    results.frombytes(_sendfan.send_each(array("i", fds).tobytes(), data))
    return list(results)


def test_the_extension_is_built() -> None:
    """scripts/test installs with a compiler: the fast path must not fall back silently."""
    assert offload.available


def test_send_each_sends_to_every_socket_and_closes_the_fds_it_was_given() -> None:
    pairs = [socket.socketpair() for _ in range(5)]
    fds = [os.dup(a.fileno()) for a, _ in pairs]
    data = b"frame " * 20
    assert send_each(fds, data) == [len(data)] * 5
    for a, b in pairs:
        assert b.recv(1000) == data
        a.send(b"still open")  # the original stays open: only the dup was closed
        assert b.recv(100) == b"still open"
        a.close()
        b.close()
    for fd in fds:
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


def test_send_each_reports_a_full_buffer_a_gone_peer_and_a_bad_fd() -> None:
    full, reader = socket.socketpair()
    full.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:
            full.send(b"x" * 4096)
    gone, peer = socket.socketpair()
    peer.close()
    fine, other = socket.socketpair()
    with socket.socket() as unused:
        bad = unused.fileno()  # a number that will be closed when it is used
    results = send_each(
        [os.dup(full.fileno()), os.dup(gone.fileno()), bad, os.dup(fine.fileno())], b"x" * 100
    )
    assert results[0] in (-errno.EAGAIN, -errno.EWOULDBLOCK)
    assert results[1] == -errno.EPIPE
    assert results[2] == -errno.EBADF
    assert results[3] == 100 and other.recv(200) == b"x" * 100
    for s in (full, reader, gone, fine, other):
        s.close()
    from livecommerce.transport import _sendfan  # type: ignore[attr-defined]

    with pytest.raises(ValueError):
        _sendfan.send_each(b"\x01\x02\x03", b"x")


def test_send_own_sends_each_fd_its_own_bytes() -> None:
    from livecommerce.transport import _sendfan  # type: ignore[attr-defined]

    pairs = [socket.socketpair() for _ in range(4)]
    datas = [f"ack {i} ".encode() * (i + 1) for i in range(4)]
    fds = array("i", [os.dup(a.fileno()) for a, _ in pairs])
    results = array("i")
    results.frombytes(_sendfan.send_own(fds.tobytes(), datas))
    assert list(results) == [len(d) for d in datas]
    for (a, b), data in zip(pairs, datas, strict=True):
        assert b.recv(1000) == data
        a.close()
        b.close()
    with pytest.raises(ValueError):  # one data per fd
        _sendfan.send_own(array("i", [1, 2]).tobytes(), [b"x"])
    with pytest.raises(TypeError):
        _sendfan.send_own(array("i", [-1]).tobytes(), ["not bytes"])


async def test_a_stopped_send_thread_hands_jobs_back_unsent_and_closes_their_fds() -> None:
    """The rest of a fan-out under way when the node stops is written inline instead."""
    loop = asyncio.get_running_loop()
    sender = offload.SendThread(loop)
    a, b = socket.socketpair()
    got: asyncio.Future[bytes] = loop.create_future()
    sender.submit(array("i", [os.dup(a.fileno())]).tobytes(), b"sent", got.set_result)
    assert list(array("i", await got)) == [4] and b.recv(10) == b"sent"
    sender.close()
    later: asyncio.Future[bytes] = loop.create_future()
    dup = os.dup(a.fileno())
    sender.submit(array("i", [dup]).tobytes(), b"late", later.set_result)
    [result] = array("i", await later)
    assert result < 0  # nothing sent: written inline instead
    with pytest.raises(OSError):
        os.fstat(dup)
    a.close()
    b.close()


def thread_frames(server: AppServer) -> float:
    registry = server.node.metrics.registry
    return registry.get_sample_value("livecommerce_frames_total", {"path": "thread"}) or 0.0


async def connected_raw(server: AppServer, n: int) -> list[Raw]:
    """``n`` bare WebSocket clients, Socket.IO-connected (not signed in)."""
    raws = [await Raw.open(server.url) for _ in range(n)]
    for raw in raws:
        await raw.handshake()  # asserts the 101 and the open packet come first
        raw.send(b"40")
        assert (await raw.text()).startswith(b"40{")
    return raws


async def in_room(raws: list[Raw], room_id: str) -> None:
    """Each joins the room; only whole events may come before its ack."""
    for raw in raws:
        raw.send(b'421["room:join",' + jsonutil.dumpb({"room_id": room_id}) + b"]")
        while not (text := await raw.text()).startswith(b"431["):
            assert text.startswith(b'42["'), text


async def raw_room(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory, n: int
) -> tuple[AppServer, Any, Client, list[Raw]]:
    """A node whose every fan-out takes the send thread, a live room, its host (a
    Socket.IO client) and ``n`` bare clients in it."""
    server = await node_factory(transport={"fanout_thread_min": 1})
    room = await live_room(server, api_factory(server.url))
    host = await joined(client_factory, room, room.host)
    raws = await connected_raw(server, n)
    await in_room(raws, room.room_id)
    return server, room, host, raws


@pytest.mark.parametrize("seed", [1, 2])
async def test_ticks_on_the_send_thread_arrive_whole_in_order_with_acks_between(
    seed: int, node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """Viewers' acks are written while their tick frames are in flight: held, then
    written after them. Every host comment reaches every viewer, in order, in frames
    whose room seq only grows, and every ack comes back."""
    rng = random.Random(seed)
    server = await node_factory(
        transport={"fanout_thread_min": 1}, likes={"rate_per_s": 1000, "burst": 1000}
    )
    room = await live_room(server, api_factory(server.url))
    host = await joined(client_factory, room, room.host)
    viewers = [
        await joined(client_factory, room, (await room.api.guest(f"v{i}"))[0]) for i in range(12)
    ]

    async def host_talks() -> list[str]:
        ids = []
        for burst in range(12):
            acks = await asyncio.gather(*(
                host.ok("comment:send", {"room_id": room.room_id, "text": f"h{burst}-{i}"})
                for i in range(rng.randint(5, 25))
            ))  # fmt: skip
            ids += [a["id"] for a in acks]
            await asyncio.sleep(rng.random() * 0.05)
        return ids

    async def viewer_likes(viewer: Client) -> int:
        answered = 0
        for _ in range(25):
            ack = await viewer.call("like:send", {"room_id": room.room_id, "count": 1})
            answered += ack["ok"] is True
            await asyncio.sleep(rng.random() * 0.02)
        return answered

    sent, *likes = await asyncio.gather(host_talks(), *(viewer_likes(v) for v in viewers))
    assert likes == [25] * len(viewers)
    for viewer in viewers:
        for _ in range(100):
            got = [
                i["id"] for b in viewer.received("comment:batch") for i in b["items"]
                if i["user"]["role"] == "host"
            ]  # fmt: skip
            if len(got) >= len(sent):
                break
            await asyncio.sleep(0.05)
        assert got == sent  # all, once, in send order
        seqs = [b["seq"] for b in viewer.received("comment:batch")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert thread_frames(server) > 0


async def test_connections_that_come_and_go_during_fan_outs_never_get_anothers_frame(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """Viewers join and reset their connections while the room's ticks are in flight.
    The thread sends to dups, so a reset socket's number, reused at once by the next
    connection, never receives a frame meant for the old one: every new connection's
    first bytes are its own 101 and Engine.IO open, and everyone else still gets all."""
    server = await node_factory(transport={"fanout_thread_min": 1})
    room = await live_room(server, api_factory(server.url))
    host = await joined(client_factory, room, room.host)
    watcher = await joined(client_factory, room, None)
    stop = asyncio.Event()

    async def flood() -> list[str]:
        ids = []
        while not stop.is_set():
            acks = await asyncio.gather(*(
                host.ok("comment:send", {"room_id": room.room_id, "text": f"t{len(ids)}-{i}"})
                for i in range(10)
            ))  # fmt: skip
            ids += [a["id"] for a in acks]
            await asyncio.sleep(0.01)
        return ids

    async def churn(n: int) -> None:
        for _ in range(n):
            [raw] = await connected_raw(server, 1)
            await in_room([raw], room.room_id)
            for _ in range(random.randint(0, 3)):
                assert (await raw.text()).startswith(b'42["'), "a broken frame"
            sock = raw.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.writer.transport.abort()  # a reset, not a close handshake

    flooding = asyncio.create_task(flood())
    await asyncio.gather(*(churn(15) for _ in range(4)))
    stop.set()
    sent = await flooding
    for _ in range(100):
        got = [i["id"] for b in watcher.received("comment:batch") for i in b["items"]]
        if len(got) >= len(sent):
            break
        await asyncio.sleep(0.05)
    assert got == sent
    assert thread_frames(server) > 0


async def test_a_close_while_a_frame_is_in_flight_follows_it(
    node_factory: NodeFactory, api_factory: ApiFactory, client_factory: ClientFactory
) -> None:
    """Clients close (WebSocket close frame) while the room's ticks are on the thread:
    each gets its close answered after whole frames, never in the middle of one."""
    server, room, host, raws = await raw_room(node_factory, api_factory, client_factory, 20)
    talking = asyncio.gather(*(
        host.ok("comment:send", {"room_id": room.room_id, "text": f"bye {i}"}) for i in range(60)
    ))  # fmt: skip
    for raw in raws:
        await asyncio.sleep(random.random() * 0.02)
        raw.send(struct.pack("!H", 1000), ws.CLOSE)
    await talking
    for raw in raws:
        while True:
            opcode, payload = await raw.frame()  # whole frames, then the close's answer
            if opcode == ws.CLOSE:
                assert payload == struct.pack("!H", 1000)
                break
            assert opcode == ws.TEXT and payload.startswith(b'42["'), payload
        assert await raw.closed()
    assert thread_frames(server) > 0


class Gated:
    """The real ``_sendfan`` behind a gate: the send thread takes its job and waits, so a
    frame stays in flight for as long as the test wants (the sends are still real)."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.gate = threading.Event()
        self.taken = threading.Event()
        self.frames: list[bytes] = []  # what send_each was given, in order

    def send_each(self, fds: bytes, data: bytes) -> bytes:
        self.frames.append(data)
        self.taken.set()
        self.gate.wait(10)
        return self.real.send_each(fds, data)  # type: ignore[attr-defined, no-any-return]

    def send_own(self, fds: bytes, datas: list[bytes]) -> bytes:
        self.taken.set()
        self.gate.wait(10)
        return self.real.send_own(fds, datas)  # type: ignore[attr-defined, no-any-return]


async def test_what_is_written_while_a_frame_is_in_flight_waits_and_follows_it(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gated = Gated(offload._sendfan)
    monkeypatch.setattr(offload, "_sendfan", gated)
    _, room, host, raws = await raw_room(node_factory, api_factory, client_factory, 3)
    acker, closer, pinger = raws
    # not awaited yet: the host is in the room, its ack may be held behind the gate
    sending = asyncio.create_task(
        host.ok("comment:send", {"room_id": room.room_id, "text": "in flight"})
    )
    assert await asyncio.to_thread(gated.taken.wait, 5)  # the tick's frame is on the thread
    acker.send(b'422["like:send",' + jsonutil.dumpb({"room_id": room.room_id, "count": 1}) + b"]")
    closer.send(struct.pack("!H", 1000), ws.CLOSE)
    pinger.send(b"hello", ws.PING)
    for raw in raws:  # all held: nothing overtakes the frame in flight
        early = await frames_within(raw, 0.3)  # (presence written before it may be there)
        assert all(p.startswith(b'42["online:count"') for _, p in early), early
    gated.gate.set()
    await sending
    for raw, after in ((acker, None), (closer, ws.CLOSE), (pinger, ws.PONG)):
        opcode, payload = await raw.frame()
        assert opcode == ws.TEXT and payload.startswith(b'42["comment:batch"'), payload
        assert b"in flight" in payload
        if after is None:  # the ack (a refusal: raw clients are not signed in)
            while not (text := await raw.text()).startswith(b"432["):
                assert text.startswith(b'42["online:count"'), text  # the closer left
            [ack] = jsonutil.loads(text[3:])
            assert ack["error"]["code"] == "unauthorized"
        else:  # whole events written before it (presence) may come first
            while (frame := await raw.frame())[0] == ws.TEXT:
                assert frame[1].startswith(b'42["'), frame
            opcode, payload = frame
            assert opcode == after
            assert payload == (struct.pack("!H", 1000) if after == ws.CLOSE else b"hello")
    assert await closer.closed()  # and the close came last
    assert not await acker.closed(0.2) and not await pinger.closed(0.2)


async def test_in_a_burst_each_connection_gets_its_own_acks_from_the_send_thread(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the node answers a burst (>= 256 events in flight: forced here) the acks of
    one loop iteration leave together through the send thread, each to its connection."""
    server = await node_factory(transport={"fanout_thread_min": 1})
    gateway = server.server.app[GATEWAY]
    monkeypatch.setattr(gateway, "busy", lambda: True)
    monkeypatch.setattr(offload, "FOLLOW_MIN", 2)
    raws = await connected_raw(server, 60)
    before = thread_frames(server)
    for n, raw in enumerate(raws):
        for k in range(4):
            raw.send(f'42{n * 10 + k}["no:such:event",{{}}]'.encode())
    for n, raw in enumerate(raws):
        ids = []
        for _ in range(4):
            text = await raw.text()
            head, _, body = text.partition(b"[")
            assert head.startswith(b"43"), text
            ids.append(int(head[2:]))
            assert jsonutil.loads(b"[" + body)[0]["error"]["code"] == "invalid"
        assert sorted(ids) == [n * 10 + k for k in range(4)]  # its own, each once
    assert thread_frames(server) - before >= 2


async def test_a_bursts_ack_in_flight_comes_before_what_follows_it(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = Gated(offload._sendfan)
    monkeypatch.setattr(offload, "_sendfan", gated)
    monkeypatch.setattr(offload, "FOLLOW_MIN", 1)
    server = await node_factory(transport={"fanout_thread_min": 1})
    monkeypatch.setattr(server.server.app[GATEWAY], "busy", lambda: True)
    [raw] = await connected_raw(server, 1)
    raw.send(b'427["no:such:event",{}]')
    assert await asyncio.to_thread(gated.taken.wait, 5)  # the ack is on the thread
    raw.send(b"after", ws.PING)
    with pytest.raises(TimeoutError):  # the pong is held behind it
        await raw.frame(timeout=0.3)
    gated.gate.set()
    assert (await raw.text()).startswith(b"437[")
    assert await raw.frame() == (ws.PONG, b"after")


async def frames_within(raw: Raw, seconds: float) -> list[tuple[int, bytes]]:
    """The frames that arrive within ``seconds``."""
    got: list[tuple[int, bytes]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                got.append(await raw.frame(timeout=seconds))
    return got


def wire_of(server: AppServer, raw: Raw) -> Any:
    """The server's WireConn of a bare client (matched by the two ends' ports)."""
    port = raw.writer.get_extra_info("sockname")[1]
    for wire in server.server.app[GATEWAY].wire.conns:
        if wire.transport.get_extra_info("peername")[1] == port:
            return wire
    raise AssertionError("no such connection")


async def test_what_is_written_the_same_to_many_in_flight_follows_on_the_thread(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The next tick's frame, written while the last one is still in flight, is held by
    each connection and then sent to them all by the thread, in order."""
    gated = Gated(offload._sendfan)
    monkeypatch.setattr(offload, "_sendfan", gated)
    monkeypatch.setattr(offload, "FOLLOW_MIN", 2)
    server, room, host, raws = await raw_room(node_factory, api_factory, client_factory, 3)
    # not awaited yet: the host is in the room, its ack may be held behind the gate
    sending = asyncio.create_task(
        host.ok("comment:send", {"room_id": room.room_id, "text": "first tick"})
    )
    assert await asyncio.to_thread(gated.taken.wait, 5)
    # the host is in flight too: its ack is held like the rest
    second = asyncio.create_task(
        host.ok("comment:send", {"room_id": room.room_id, "text": "second tick"})
    )
    for _ in range(100):  # its tick comes and goes: the raws hold it
        if all(wire_of(server, raw).held for raw in raws):
            break
        await asyncio.sleep(0.05)
    assert all(wire_of(server, raw).held for raw in raws)
    gated.gate.set()
    await sending
    await second
    for raw in raws:  # (presence broadcasts may come between: skipped)
        got = b""
        while b"second tick" not in got:
            got += await raw.text()
        assert got.index(b"first tick") < got.index(b"second tick"), got
    assert any(b"second tick" in frame for frame in gated.frames[1:])  # the follow-up


async def test_a_socket_reset_while_its_frame_waits_never_passes_it_to_the_next_comer(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A viewer resets its connection while the room's frame for it is on the held
    thread; a new client then gets the very same descriptor number on the server. The
    frame goes to the old socket's dup (and nowhere), never to the new client."""
    gated = Gated(offload._sendfan)
    monkeypatch.setattr(offload, "_sendfan", gated)
    server, room, host, [leaver] = await raw_room(node_factory, api_factory, client_factory, 1)
    number = wire_of(server, leaver).fd
    # not awaited yet: the host is in the room, its ack may be held behind the gate
    sending = asyncio.create_task(
        host.ok("comment:send", {"room_id": room.room_id, "text": "not for you"})
    )
    assert await asyncio.to_thread(gated.taken.wait, 5)
    sock = leaver.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    leaver.writer.transport.abort()
    for _ in range(100):  # the server lets go of the socket (its number is free again)
        if not any(w.fd == number for w in server.server.app[GATEWAY].wire.conns):
            break
        await asyncio.sleep(0.02)
    comers = []
    for _ in range(10):
        [comer] = await connected_raw(server, 1)
        comers.append(comer)
        if wire_of(server, comer).fd == number:
            break
    else:
        raise AssertionError(f"no new connection got descriptor {number}")
    gated.gate.set()
    await sending
    await asyncio.sleep(0.3)
    for comer in comers:  # nothing but what they ask for
        comer.send(b'429["no:such:event",{}]')
        assert (await comer.text()).startswith(b"439[")


async def test_out_of_descriptors_the_frame_is_written_inline(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_dups(fds: bytes) -> bytes:
        return array("i", [-errno.EMFILE] * (len(fds) // 4)).tobytes()

    monkeypatch.setattr(offload, "_dup_each", no_dups)
    server, room, host, raws = await raw_room(node_factory, api_factory, client_factory, 3)
    await host.ok("comment:send", {"room_id": room.room_id, "text": "inline after all"})
    for raw in raws:
        assert b"inline after all" in await raw.text()
        assert wire_of(server, raw).held is None


async def test_an_ack_behind_bytes_still_in_the_transport_is_written_behind_them(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a burst, a connection whose transport still buffers older bytes (a slow
    reader) gets its ack through the transport, behind them — not from the thread."""
    server = await node_factory(
        transport={"fanout_thread_min": 1, "ws_sndbuf": 8192, "out_buffer_max": 1 << 22}
    )
    gateway = server.server.app[GATEWAY]
    room = await live_room(server, api_factory(server.url))
    host = await joined(client_factory, room, room.host)
    slow = StalledClient(server.url)
    await slow.connect_and_join(room.room_id)
    wire = next(w for w in gateway.wire.conns if w.transport.get_extra_info("peername")[1]
                == slow.sock.getsockname()[1])  # fmt: skip
    for i in range(100):
        if wire.transport.get_write_buffer_size():
            break
        await asyncio.gather(*(
            host.ok("comment:send", {"room_id": room.room_id, "text": f"{i}-{k} " + "x" * 90})
            for k in range(20)
        ))  # fmt: skip
    assert wire.transport.get_write_buffer_size(), "the slow reader's transport never filled"
    scattered: list[Any] = []
    real_launch = offload.Scatter.launch
    monkeypatch.setattr(
        offload.Scatter, "launch", lambda self: scattered.extend(self.wires) or real_launch(self)
    )
    monkeypatch.setattr(gateway, "busy", lambda: True)
    monkeypatch.setattr(offload, "FOLLOW_MIN", 1)
    slow.sock.send(client_frame(b'4277["no:such:event",{}]'))
    await asyncio.sleep(0.3)
    assert wire not in scattered and wire.held is None
    assert wire.transport.get_write_buffer_size()  # the ack waits in there, behind the rest
    slow.close()


async def test_a_fan_out_larger_than_the_dup_budget_goes_out_chunk_by_chunk(
    node_factory: NodeFactory,
    api_factory: ApiFactory,
    client_factory: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With room for 2 dups at a time, a room of 8 takes four reports to go out: the
    flight waits for each and resumes; everyone gets every frame, whole and in order."""
    monkeypatch.setattr(offload, "CHUNK", 2)
    monkeypatch.setattr(offload, "DUP_BUDGET", 2)
    server, room, host, raws = await raw_room(node_factory, api_factory, client_factory, 7)
    before = thread_frames(server)
    for i in range(5):
        await host.ok("comment:send", {"room_id": room.room_id, "text": f"chunked {i}"})
        await asyncio.sleep(0.12)  # a tick each
    for raw in raws:
        got = b""
        while b"chunked 4" not in got:
            got += await raw.text()
        assert [int(x) for x in re.findall(rb"chunked (\d)", got)] == list(range(5))
        assert wire_of(server, raw).held is None
    assert thread_frames(server) - before >= 5 * 7
