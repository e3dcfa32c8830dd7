"""A room's fan-out written on a thread of its own, outside the GIL.

A comment tick writes one frame to every viewer of the room on this node. Each write is a
``send`` syscall of ~5-10 µs (on loopback the sender also does the receiver's TCP work):
8,000 viewers × 10 ticks a second are most of a core, spent with the event loop stopped.
Here the loop only hands over the sockets and goes on serving events; a :class:`SendThread`
sends the frame to all of them in one C call (``_sendfan.send_each``) that holds no GIL, so
the kernel's work runs on another core. (A Python loop of ``socket.send`` in a thread does
not: it wants the GIL back after every send and, with a busy loop, waits for it up to the
switch interval each time: measured 4-5x slower than writing inline.)

Three rules keep this as correct as writing inline:

* **Order.** A connection whose frame is in flight holds whatever else is written to it
  (``WireConn.held``: acks, pings, a close) and writes it when the frame has landed, after
  the frame's unsent rest, if any. Only connections with nothing in their transport's
  buffer take off: the thread's bytes can never overtake older ones.
* **No stray bytes.** The thread sends to ``dup()``s that the loop made and the C call
  closes: a socket the loop closes meanwhile (the peer reset it) keeps its file until the
  send is done, and its number cannot be reused by a new connection that would then get
  somebody else's frame. Dups are made a chunk at a time (``CHUNK``, ``AHEAD`` chunks) to
  stay well inside the open-file limit.
* **Slow consumers.** A short send or ``EAGAIN`` leaves the rest in the transport's buffer,
  so the connection writes inline (with the usual cut-off checks) until it drains.

Without the C extension (no compiler where it was installed) ``available`` is False and
every write is inline, as before.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import queue
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
#: Sockets dup'ed and handed to the thread at a time, and how many such chunks are queued
#: for it at most (a busy loop that reports late should not leave the thread idle).
CHUNK = 2048
AHEAD = 4
#: Connections that were written the same bytes while in flight, from which those bytes
#: follow on the thread rather than inline.
FOLLOW_MIN = 32
_AGAIN = (-errno.EAGAIN, -errno.EWOULDBLOCK)

Job = tuple[bytes, "bytes | list[bytes]", Callable[[bytes], None]]


class SendThread:
    """One daemon thread that runs ``send_each`` jobs in order and reports each result
    back on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if _sendfan is None:
            raise RuntimeError("livecommerce.transport._sendfan is not built")
        self._loop = loop
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fds: bytes, data: bytes | list[bytes], done: Callable[[bytes], None]) -> None:
        """Send ``data`` to each of ``fds`` (or ``data[i]`` to ``fds[i]``; the thread
        closes the fds); then, on the loop, ``done(results)``: int32 bytes sent or
        ``-errno`` per fd."""
        if self._closed:  # stopping: the loop writes these itself ("nothing sent")
            for fd in array("i", fds):
                os.close(fd)
            count = len(fds) // 4
            self._loop.call_soon(self._report, done, array("i", [-errno.EAGAIN] * count).tobytes())
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fan-out", daemon=True)
            self._thread.start()
        self._jobs.put((fds, data, done))

    def close(self, timeout: float = 5.0) -> None:
        """Finish the jobs taken so far and stop the thread; later jobs (the rest of a
        fan-out under way) are handed back to be written inline."""
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        assert _sendfan is not None
        while (job := self._jobs.get()) is not None:
            fds, data, done = job
            if type(data) is bytes:
                results = _sendfan.send_each(fds, data)
            else:
                results = _sendfan.send_own(fds, data)
            try:
                self._loop.call_soon_threadsafe(self._report, done, results)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return

    def _report(self, done: Callable[[bytes], None], results: bytes) -> None:
        try:
            done(results)
        except Exception:
            log.exception("fan_out_report_failed")


class Flight:
    """One frame to many lean WebSockets through a :class:`SendThread` (see the module
    docstring). ``wires`` hold their writes from now until their chunk has landed."""

    __slots__ = ("data", "pos", "sender", "wires")

    def __init__(self, sender: SendThread, wires: list[WireConn], data: bytes) -> None:
        self.sender = sender
        self.wires = wires
        self.data = data
        self.pos = 0
        for wire in wires:
            wire.held = []

    def launch(self) -> None:
        for _ in range(AHEAD):
            self._next()

    def _next(self) -> None:
        data, wires = self.data, self.wires
        while self.pos < len(wires):
            part = wires[self.pos : self.pos + CHUNK]
            self.pos += len(part)
            going: list[WireConn] = []
            for wire in part:
                if wire.transport.is_closing():
                    wire.landed(b"")  # gone while it waited for its chunk
                else:
                    going.append(wire)
            if not going:
                continue
            fds = array("i")
            fds.frombytes(_dup_each(array("i", [wire.fd for wire in going]).tobytes()))
            if min(fds) < 0:  # out of file descriptors: those are written inline
                for wire, fd in zip(going, fds, strict=True):
                    if fd < 0:
                        wire.landed(data)
                going = [wire for wire, fd in zip(going, fds, strict=True) if fd >= 0]
                fds = array("i", [fd for fd in fds if fd >= 0])
                if not going:
                    continue
            self.sender.submit(fds.tobytes(), data, functools.partial(self._landed, going))
            return

    def _landed(self, going: list[WireConn], results: bytes) -> None:
        sent = array("i")
        sent.frombytes(results)
        data, size = self.data, len(self.data)
        follow: dict[bytes, list[WireConn]] = {}
        for wire, n in zip(going, sent, strict=True):
            if n == size:
                held = wire.held
                if not held:  # the common case: sent whole, nothing written meanwhile
                    wire.held = None
                    continue
                if not wire.ending:
                    # What was written to it meanwhile: a broadcast, or the next tick's
                    # frame if this flight ran past it, is the same for many: it takes
                    # the thread too (a personal ack stays in a small group, inline).
                    follow.setdefault(held[0] if len(held) == 1 else b"".join(held), []).append(
                        wire
                    )
                    continue
                wire.landed(b"")
            elif n >= 0:
                wire.landed(data[n:])  # the socket buffer filled: the rest waits in the transport
            elif n in _AGAIN:
                wire.landed(data)
            else:  # the peer is gone (EPIPE, ECONNRESET): its reader will see the close
                wire.landed(b"")
        for more, wires in follow.items():
            if len(wires) >= FOLLOW_MIN:
                Flight(self.sender, wires, more).launch()
            else:
                for wire in wires:
                    wire.landed(b"")
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
        """Hand them to the thread; returns how many took off."""
        flown = 0
        for start in range(0, len(self.wires), CHUNK):
            going: list[WireConn] = []
            datas: list[bytes] = []
            for wire in self.wires[start : start + CHUNK]:
                held = wire.held
                if wire.ending or not held or wire.transport.is_closing():
                    wire.landed(b"")  # writes what it holds (and closes) right here
                    continue
                going.append(wire)
                datas.append(held[0] if len(held) == 1 else b"".join(held))
                wire.held = []
            if not going:
                continue
            fds = array("i")
            fds.frombytes(_dup_each(array("i", [wire.fd for wire in going]).tobytes()))
            if min(fds) < 0:  # out of file descriptors: those are written inline
                kept = [i for i, fd in enumerate(fds) if fd >= 0]
                for i, fd in enumerate(fds):
                    if fd < 0:
                        going[i].landed(datas[i])
                going = [going[i] for i in kept]
                datas = [datas[i] for i in kept]
                fds = array("i", [fds[i] for i in kept])
                if not going:
                    continue
            flown += len(going)
            self.sender.submit(fds.tobytes(), datas, functools.partial(_landed_own, going, datas))
        return flown


def _landed_own(going: list[WireConn], datas: list[bytes], results: bytes) -> None:
    sent = array("i")
    sent.frombytes(results)
    for wire, data, n in zip(going, datas, sent, strict=True):
        if n == len(data):
            if wire.held:
                wire.landed(b"")
            else:
                wire.held = None
        elif n >= 0:
            wire.landed(data[n:])
        elif n in _AGAIN:
            wire.landed(data)
        else:  # the peer is gone
            wire.landed(b"")
