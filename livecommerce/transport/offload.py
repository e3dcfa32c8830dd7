"""A room's fan-out, and a burst's acks, written on a thread of its own outside the GIL.

A comment tick writes one frame to every viewer of the room on this node. Each write is a
``send`` syscall of ~5-10 µs (on loopback the sender also does the receiver's TCP work):
8,000 viewers × 10 ticks a second are most of a core, spent with the event loop stopped.
Here the loop only hands over the sockets and goes on serving events; a :class:`SendThread`
sends the frame to all of them in one C call (``_sendfan.send_each``) that holds no GIL, so
the kernel's work runs on another core. (A Python loop of ``socket.send`` in a thread does
not: it wants the GIL back after every send and, with a busy loop, waits for it up to the
switch interval each time: measured 4-5x slower than writing inline.) A flash sale's
stampede uses the same thread for its acks, each its own bytes (:class:`Scatter`).

Four rules keep this as correct as writing inline:

* **Order.** A connection whose bytes are in flight holds whatever else is written to it
  (``WireConn.held``: acks, pings, a close) and writes it when they have landed, after
  their unsent rest, if any. Only connections with nothing in their transport's buffer
  take off: the thread's bytes can never overtake older ones.
* **No stray bytes.** The thread sends to ``dup()``s that the loop made and the C call
  closes: a socket the loop closes meanwhile (the peer reset it) keeps its file until the
  send is done, and its number cannot be reused by a new connection that would then get
  somebody else's frame. Dups are made a chunk at a time (``CHUNK``) and at most
  ``DUP_BUDGET`` are out at once, well inside the open-file limit.
* **Slow consumers.** A short send or an error leaves the rest to the transport, so the
  connection writes inline (with the usual cut-off checks, and the transport's own error
  handling) until it drains.
* **Nothing is stuck.** Every handed-over connection is released exactly once: by the
  thread's report, or — thread gone, stopping, a callback failing — with its bytes
  written inline or, failing that, its connection aborted.

Without the C extension (no compiler where it was installed) ``available`` is False and
every write is inline, as before.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import queue
import resource
import threading
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

try:
    from livecommerce.transport import _sendfan  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - built by setuptools wherever a compiler exists
    _sendfan = None

if TYPE_CHECKING:
    from livecommerce.transport.wire import WireConn

log = structlog.get_logger(__name__)

available = _sendfan is not None
_dup_each: Any = _sendfan.dup_each if _sendfan is not None else None
#: Sockets dup'ed and handed to the thread in one job.
CHUNK = 2048
#: Dups out at once, all flights together: a third of the open-file limit (a busy loop
#: that reports late should not leave the thread idle; a node near the limit should not
#: run out of descriptors, which would also make it drop connections being accepted).
DUP_BUDGET = max(CHUNK, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 3)
#: Fewer connections than this to send to are written inline: the same bytes written to
#: connections while in flight (Flight), or a loop iteration's acks (WireServer.answer).
FOLLOW_MIN = 32

Job = tuple[bytes, "bytes | list[bytes]", Callable[[bytes], None]]


class SendThread:
    """One daemon thread that runs ``send_each`` / ``send_own`` jobs in order and reports
    each result back on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if _sendfan is None:
            raise RuntimeError("livecommerce.transport._sendfan is not built")
        self._loop = loop
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: dups handed over and not yet reported back
        self.outstanding = 0
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more dups may go out now (always, when none is out)."""
        return not self.outstanding or self.outstanding + count <= DUP_BUDGET

    def when_room(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` once dups out have come back below the budget."""
        self._waiting.append(resume)

    def submit(self, fds: bytes, data: bytes | list[bytes], done: Callable[[bytes], None]) -> None:
        """Send ``data`` to each of ``fds`` (or ``data[i]`` to ``fds[i]``; the fds are
        closed after); then, on the loop, ``done(results)``: int32 bytes sent or
        ``-errno`` per fd (negative: write it yourself)."""
        count = len(fds) // 4
        self.outstanding += count
        if not self._closed and self._thread is None:
            thread = threading.Thread(target=self._run, name="fan-out", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: the loop keeps writing inline
                log.exception("fan_out_thread_failed")
                self._closed = True
            else:
                self._thread = thread
        if self._closed:  # stopping: handed back unsent, the loop writes them itself
            self._loop.call_soon(self._report, done, self._unsent(fds), count)
            return
        self._jobs.put((fds, data, done))

    def close(self, timeout: float = 5.0) -> None:
        """Finish the jobs taken so far and stop the thread; later jobs (the rest of a
        fan-out under way) are handed back to be written inline."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    @staticmethod
    def _unsent(fds: bytes) -> bytes:
        for fd in array("i", fds):
            os.close(fd)
        return array("i", [-1] * (len(fds) // 4)).tobytes()  # nothing sent

    def _run(self) -> None:
        assert _sendfan is not None
        while (job := self._jobs.get()) is not None:
            fds, data, done = job
            try:
                if type(data) is bytes:
                    results = _sendfan.send_each(fds, data)
                else:
                    results = _sendfan.send_own(fds, data)
            except Exception:  # before any send (bad input, no memory): nothing went out
                log.exception("fan_out_send_failed")
                results = self._unsent(fds)
            try:
                self._loop.call_soon_threadsafe(self._report, done, results, len(fds) // 4)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return

    def _report(self, done: Callable[[bytes], None], results: bytes, count: int) -> None:
        self.outstanding -= count
        try:
            done(results)
        finally:
            while self._waiting and self.has_room(CHUNK):
                self._waiting.popleft()()


def _release(wire: WireConn, data: bytes, sent: int) -> None:
    """``wire``'s bytes ``data`` are back from the thread, ``sent`` of them out (negative:
    none): the rest and what it held go to its transport. A failure here aborts the
    connection rather than leave it holding its writes forever."""
    try:
        if sent == len(data):
            if wire.held:
                wire.landed(b"")
            else:
                wire.held = None  # the common case: nothing written meanwhile
        else:
            wire.landed(data[sent:] if sent > 0 else data)
    except Exception:
        log.exception("fan_out_release_failed")
        wire.held = None
        wire.transport.abort()


def _joined(held: list[bytes]) -> bytes:
    return held[0] if len(held) == 1 else b"".join(held)


def _dup_all(
    wires: list[WireConn], datas: list[bytes]
) -> tuple[list[WireConn], list[bytes], bytes]:
    """Dups of the wires' sockets (int32 bytes), with the wires and data that got one; a
    wire that gets none (out of descriptors) is released, its bytes written inline."""
    fds = array("i")
    fds.frombytes(_dup_each(array("i", [wire.fd for wire in wires]).tobytes()))
    if min(fds, default=0) >= 0:
        return wires, datas, fds.tobytes()
    kept = [i for i, fd in enumerate(fds) if fd >= 0]
    for i, fd in enumerate(fds):
        if fd < 0:
            _release(wires[i], datas[i], -1)
    return (
        [wires[i] for i in kept],
        [datas[i] for i in kept],
        array("i", [fds[i] for i in kept]).tobytes(),
    )


class Flight:
    """One frame to many lean WebSockets through a :class:`SendThread` (see the module
    docstring). ``wires`` hold their writes from now until their chunk has landed."""

    __slots__ = ("data", "parked", "pos", "sender", "wires")

    def __init__(self, sender: SendThread, wires: list[WireConn], data: bytes) -> None:
        self.sender = sender
        self.wires = wires
        self.data = data
        self.pos = 0
        self.parked = False
        for wire in wires:
            wire.held = []

    def launch(self) -> None:
        self._next()

    def _resume(self) -> None:
        self.parked = False
        self._next()

    def _next(self) -> None:
        """Hand over chunks while the dup budget allows; the rest waits for a report."""
        wires, sender = self.wires, self.sender
        while self.pos < len(wires):
            if not sender.has_room(min(CHUNK, len(wires) - self.pos)):
                if not self.parked:
                    self.parked = True
                    sender.when_room(self._resume)
                return
            part = wires[self.pos : self.pos + CHUNK]
            self.pos += len(part)
            going: list[WireConn] = []
            for wire in part:
                if wire.transport.is_closing():
                    _release(wire, self.data, -1)  # gone while it waited for its chunk
                else:
                    going.append(wire)
            if going:
                going, _, fds = _dup_all(going, [self.data] * len(going))
            if going:
                sender.submit(fds, self.data, functools.partial(self._landed, going))

    def _landed(self, going: list[WireConn], results: bytes) -> None:
        sent = array("i")
        sent.frombytes(results)
        data, size = self.data, len(self.data)
        follow: dict[bytes, list[WireConn]] = {}
        for wire, n in zip(going, sent, strict=True):
            held = wire.held
            if n != size or wire.ending:
                _release(wire, data, n)
            elif not held:
                wire.held = None  # the common case (per viewer): sent, nothing meanwhile
            else:
                # What was written to it meanwhile: a broadcast, or the next tick's frame
                # if this flight ran past it, is the same for many: it takes the thread
                # too (a personal ack stays in a small group, inline).
                follow.setdefault(_joined(held), []).append(wire)
        for more, wires in follow.items():
            if len(wires) >= FOLLOW_MIN:
                Flight(self.sender, wires, more).launch()
            else:
                for wire in wires:
                    _release(wire, data, size)
        self._next()


class Scatter:
    """Each of many lean WebSockets its own bytes — what it holds — through a
    :class:`SendThread`: the acks a burst answers in one loop iteration
    (``WireServer.answer``). The wires hold their writes until their bytes have landed."""

    __slots__ = ("sender", "wires")

    def __init__(self, sender: SendThread, wires: list[WireConn]) -> None:
        self.sender = sender
        self.wires = wires

    def launch(self) -> int:
        """Hand them to the thread (those the dup budget allows; the rest is written
        here); returns how many took off."""
        flown = 0
        sender = self.sender
        for start in range(0, len(self.wires), CHUNK):
            going: list[WireConn] = []
            datas: list[bytes] = []
            for wire in self.wires[start : start + CHUNK]:
                held = wire.held
                if (
                    not held
                    or wire.ending
                    or wire.transport.is_closing()
                    or wire.transport.get_write_buffer_size()
                    or not sender.has_room(len(going) + 1)
                ):
                    wire.landed(b"")  # writes what it holds (and closes) right here
                    continue
                going.append(wire)
                datas.append(_joined(held))
                wire.held = []
            if going:
                going, datas, fds = _dup_all(going, datas)
            if going:
                flown += len(going)
                sender.submit(fds, datas, functools.partial(_landed_own, going, datas))
        return flown


def _landed_own(going: list[WireConn], datas: list[bytes], results: bytes) -> None:
    sent = array("i")
    sent.frombytes(results)
    for wire, data, n in zip(going, datas, sent, strict=True):
        _release(wire, data, n)
