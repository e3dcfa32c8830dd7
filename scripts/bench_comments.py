"""Bullet comments benchmark: a plain python-socketio baseline and livecommerce, same load.

Both servers run in turn on 127.0.0.1 under the same load from scripts/comment_loadgen.py
(raw Engine.IO frames from several processes; plain viewers only count bytes, probes parse
every frame and time every comment). The baseline is scripts/baseline_server.py: one
python-socketio ``emit`` per comment to the room. Scenarios (each server fresh, its own
temp dir, SQLite, and redis-server when it has two nodes):

* **idle memory**: N viewers connect and join a quiet room; (RSS after - RSS before) / N;
* **rates**: 1,000 viewers at 20, 100 and 1,000 comments/s on one node;
* **two nodes**: 1,000 viewers at 100 comments/s split over two nodes sharing a
  redis-server (viewers and senders on both), to compare with one node;
* **capacity**: one node, 1,000 comments/s + 5,000 likes/s, viewers added step by step
  until a step misses p99 <= 300 ms, loses a connection or falls behind.

Each measured window reports comment deliveries per second (comment items received by
viewers), p50/p99 end-to-end latency (receive time - the send time in the comment's text),
server CPU (process CPU seconds / wall time), RSS, disconnects, and the load generator's
own CPU. Results go to docs/benchmarks.md between the ``bench:comments`` markers.

Usage: scripts/bench comments [--quick] [--only memory,rates,nodes,capacity] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import aiohttp  # noqa: E402
from bench_flashsale import (  # noqa: E402
    Cluster,
    CpuWindow,
    Proc,
    _post,
    add_setting_option,
    free_port,
    host_token,
    machine,
    setting_env,
    start_redis,
    verdict,
    wait_quiet,
    wait_ready,
)
from comment_loadgen import (  # noqa: E402
    CommentLoad,
    Plan,
    Tally,
    Viewer,
    quantile,
    raise_fd_limit,
)
from loadgen import ConnectStats, mint_tokens  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:comments:begin -->", "<!-- bench:comments:end -->"
SERVERS = ("baseline", "livecommerce")
VIEWER_RATE = 30  # livecommerce's per-viewer cap (comments shown per second), set explicitly
TARGET_P99_MS = 250.0  # 1,000 viewers x 100 comments/s, one node
CAPACITY_P99_MS = 300.0
TARGET_VIEWERS = 10_000
TARGET_IDLE_KB = 15.0
BUSY_PCT = 25.0  # other processes' CPU (% of a core) that makes a missed step worth a retry


# -- servers -----------------------------------------------------------------------------


def server_env(c: Cluster, overrides: dict[str, str]) -> dict[str, str]:
    env = c.env()
    env["LIVECOMMERCE_COMMENTS__VIEWER_RATE"] = str(VIEWER_RATE)
    return env | overrides


def server_args(kind: str, c: Cluster, port: int, index: int, redis: bool) -> list[str]:
    if kind == "baseline":
        args = [sys.executable, str(ROOT / "scripts" / "baseline_server.py"), "--port", str(port)]
        return args + (["--redis", c.redis_url] if redis else [])
    args = [sys.executable, "-m", "livecommerce", "serve", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--database", c.db_url, "--node-id", f"bench-n{index + 1}"]
    return args + (["--redis", c.redis_url] if redis else [])


@contextlib.asynccontextmanager
async def servers(
    kind: str, nodes: int, redis: bool, env: dict[str, str], keep: bool
) -> AsyncIterator[Cluster]:
    """``nodes`` server processes of one kind (and a redis-server for them if ``redis``)."""
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"lc-comments-{kind}-"))
        stack.callback(tidy, tmp, keep)
        c = Cluster(tmp, "bench-" + secrets.token_hex(24), free_port(), tmp / "bench.db")
        stack.push_async_callback(asyncio.to_thread, c.stop)  # runs before tidy()
        if redis:
            await start_redis(c)
        if kind == "livecommerce":  # once, before the nodes race each other to it
            await run_migrate(c)
        ports = [free_port() for _ in range(nodes)]
        c.urls = [f"http://127.0.0.1:{port}" for port in ports]
        c.nodes = [
            Proc(f"{kind}{i + 1}", server_args(kind, c, port, i, redis), tmp, server_env(c, env))
            for i, port in enumerate(ports)
        ]
        await asyncio.gather(*map(wait_ready, c.nodes, c.urls))
        yield c


def tidy(tmp: Path, keep: bool) -> None:
    if keep:
        print(f"   kept {tmp} (server logs)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


async def run_migrate(c: Cluster) -> None:
    cmd = [sys.executable, "-m", "livecommerce", "migrate", "--database", c.db_url]
    run = await asyncio.to_thread(
        subprocess.run, cmd, cwd=ROOT, env=c.env(), capture_output=True, timeout=60
    )
    if run.returncode:
        raise RuntimeError("migrate failed:\n" + run.stderr.decode(errors="replace"))


async def open_room(kind: str, c: Cluster) -> str:
    """A live room: the baseline takes any name; livecommerce needs a host to make one."""
    if kind == "baseline":
        return "bench-room"
    headers = {"Authorization": f"Bearer {await host_token(c)}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        room = await _post(http, f"{c.urls[0]}/api/rooms", {"title": "Comments bench"})
        await _post(http, f"{c.urls[0]}/api/rooms/{room['id']}/start", {})
    return str(room["id"])


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dead_nodes(c: Cluster) -> list[str]:
    return [f"{n.name} exited:\n{n.tail(15)}" for n in c.nodes if not n.alive()]


# -- load shapes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A room's load: viewers, comments/s and likes/s, and how many viewers send them."""

    viewers: int
    comments: float
    likes: float
    senders: int

    @classmethod
    def of(cls, viewers: int, comments: float, likes: float = 0.0) -> Shape:
        # One comment per second per sender when there are viewers enough: livecommerce's
        # default per-user limit (1/s, burst 3) then never bites, and no sender is special.
        return cls(viewers, comments, likes, max(1, min(viewers, math.ceil(comments))))

    def plan(self, until_s: float) -> Plan:
        like_events = math.ceil(self.likes / self.senders / 100) if self.likes else 0
        count = round(self.likes / (self.senders * like_events)) if like_events else 1
        return Plan(self.senders, self.comments / self.senders, like_events, count, until_s)

    def env(self, kind: str) -> dict[str, str]:
        """livecommerce's per-user comment limit, raised only if a sender must exceed it."""
        per_sender = self.comments / self.senders
        if kind == "baseline" or per_sender <= 1:
            return {}
        rate = f"{math.ceil(per_sender * 1.5)}"
        return {"LIVECOMMERCE_COMMENTS__RATE_PER_S": rate, "LIVECOMMERCE_COMMENTS__BURST": rate}


def viewers(
    secret: str, start: int, stop: int, probes: int, senders: int, nodes: int
) -> list[Viewer]:
    """Viewers ``start..stop-1``: the first ``senders`` of all send; ``probes`` of these,
    spread evenly, parse and time everything; nodes alternate. Each is a user of its own
    (a token minted with the servers' secret; the baseline ignores it)."""
    tokens = mint_tokens(secret, stop - start, prefix=f"v{start}")
    stride = max(1, (stop - start) // probes) if probes else 0
    return [
        Viewer(
            index=i,
            node=i % nodes,
            token=tokens[i - start],
            probe=bool(stride) and (i - start) % stride == 0,
            sender=i if i < senders else -1,
        )
        for i in range(start, stop)
    ]


# -- measured windows --------------------------------------------------------------------


@dataclass
class Step:
    """One measured window of one server under one load."""

    server: str
    nodes: int
    shape: Shape
    connect: ConnectStats
    tally: Tally
    seconds: float
    cpu: CpuWindow
    rss: list[float]  # MB per node at the end of the window
    probes: int
    disconnects: int  # since this step began connecting
    problems: list[str] = field(default_factory=list)  # the run broke (a server died)
    remeasured: bool = False  # the first window was spoilt by other work on the box

    def per_s(self, value: float) -> float:
        return value / self.seconds

    @property
    def deliveries(self) -> float:
        return self.per_s(self.tally.items)

    @property
    def extrapolated(self) -> float:
        """Deliveries/s from the probes alone: per-probe deliveries x viewers."""
        return self.per_s(self.tally.probe_items) / max(1, self.probes) * self.shape.viewers

    def likes_per_s(self) -> float:
        """Likes acked per second (each acked like:send carries the plan's count)."""
        return self.per_s(self.tally.likes_ok) * self.shape.plan(0).like_count

    def p(self, q: float) -> float:
        return quantile(self.tally.latency, q)

    def node_cpu(self) -> list[float]:
        return [v for g, v in self.cpu.percent.items() if g.startswith("node")]

    def shown_target(self) -> float:
        """Comments a viewer should see per second (livecommerce samples above its cap)."""
        accepted = self.per_s(self.tally.comments_ok)
        return accepted if self.server == "baseline" else min(accepted, VIEWER_RATE)

    def failures(self, p99_ms: float) -> list[str]:
        """Why this step does not count as held (empty: it does)."""
        t, out = self.tally, list(self.problems)
        if self.connect.failed or self.disconnects:
            out.append(f"{self.connect.failed} connects failed, {self.disconnects} dropped")
        if self.p(99) > p99_ms or not t.latency:
            out.append(f"p99 {self.p(99):,.0f} ms" if t.latency else "no comment arrived")
        if t.comments_ok < 0.95 * t.comments_sent or t.likes_ok < 0.95 * t.likes_sent:
            out.append(
                f"acked {t.comments_ok:,}/{t.comments_sent:,} comments, "
                f"{t.likes_ok:,}/{t.likes_sent:,} likes"
            )
        shown = self.deliveries / self.shape.viewers
        if shown < 0.9 * self.shown_target():
            out.append(f"{shown:.1f} of {self.shown_target():.0f} comments/viewer/s shown")
        return out


@dataclass
class Idle:
    server: str
    connect: ConnectStats
    before_mb: float
    after_mb: float
    problems: list[str]

    @property
    def kb_each(self) -> float:
        return 1024 * (self.after_mb - self.before_mb) / max(1, self.connect.connected)


@dataclass
class Results:
    idle: list[Idle] = field(default_factory=list)
    rates: list[Step] = field(default_factory=list)
    nodes: list[Step] = field(default_factory=list)
    capacity: dict[str, list[Step]] = field(default_factory=dict)


class Bench:
    """The scenarios; every one starts fresh servers and stops them again."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Results()
        self.broken: list[str] = []

    async def quiet(self) -> None:
        """Waits (bounded) for other work on this 2-core box to calm down."""
        if self.args.quiet_wait > 0:
            await wait_quiet(self.args.quiet_wait)

    @contextlib.asynccontextmanager
    async def room(
        self, kind: str, nodes: int, env: dict[str, str]
    ) -> AsyncIterator[tuple[Cluster, CommentLoad]]:
        """Fresh servers (two share a redis-server), a live room, load generator workers."""
        if kind != "baseline":
            env = env | setting_env(self.args.setting)
        async with servers(kind, nodes, nodes > 1, env, self.args.keep) as c:
            load = CommentLoad(
                c.urls, await open_room(kind, c), workers=self.args.workers, lifetime_s=900
            )
            await load.start()
            try:
                yield c, load
            finally:
                # Servers first: closing thousands of sockets costs them more than dying.
                await asyncio.to_thread(c.stop_nodes, 3.0)
                await load.close()

    async def connect(self, load: CommentLoad, crowd: list[Viewer], lowat: int) -> ConnectStats:
        stats = await load.connect(crowd, concurrency=self.args.concurrency, lowat=lowat)
        errors = f" ({stats.errors.most_common(2)})" if stats.failed else ""
        if not stats.connected:
            raise RuntimeError(f"no viewer could connect{errors}")
        print(
            f"   {stats.connected:,} connected, {stats.failed} failed "
            f"in {stats.seconds:.1f}s{errors}",
            flush=True,
        )
        return stats

    async def measure(
        self, kind: str, c: Cluster, load: CommentLoad, shape: Shape, probes: int, **kw: Any
    ) -> Step:
        """Warm up, then one window: counts, CPU of every process, RSS at the end."""
        await asyncio.sleep(self.args.warm)
        warm = await load.mark()
        groups = {f"node{i + 1}": [n.pid] for i, n in enumerate(c.nodes)}
        groups |= {"redis-server": [c.redis.pid] if c.redis else [], "loadgen": load.pids}
        cpu = CpuWindow(groups)
        cpu.start()
        tally = await load.mark(lead_s=self.args.measure)
        cpu.stop()
        step = Step(
            server=kind,
            nodes=len(c.nodes),
            shape=shape,
            tally=tally,
            seconds=self.args.measure,
            cpu=cpu,
            rss=[rss_mb(n.pid) for n in c.nodes],
            probes=probes,
            disconnects=warm.disconnects + tally.disconnects,
            problems=dead_nodes(c),
            **kw,
        )
        self.broken += step.problems
        print("   " + step_line(step), flush=True)
        return step

    async def rate(self, kind: str, nodes: int, shape: Shape) -> Step:
        print(f"\n== {kind}, {nodes} node(s): {describe(shape)}", flush=True)
        await self.quiet()
        async with self.room(kind, nodes, shape.env(kind)) as (c, load):
            crowd = viewers(c.secret, 0, shape.viewers, self.args.probes, shape.senders, nodes)
            connect = await self.connect(load, crowd, self.args.lowat)
            await load.run(shape.plan(until_s=self.args.timeout))
            probes = sum(v.probe for v in crowd)
            return await self.measure(kind, c, load, shape, probes, connect=connect)

    async def capacity(self, kind: str, steps: Sequence[int]) -> list[Step]:
        """One node; viewers added step by step under the same load, to the first miss."""
        shape = Shape.of(steps[0], self.args.cap_comments, self.args.cap_likes)
        print(f"\n== {kind} capacity: {describe(shape)}, viewers {steps}", flush=True)
        await self.quiet()
        out: list[Step] = []
        async with self.room(kind, 1, shape.env(kind)) as (c, load):
            have, probes = 0, 0
            for n in steps:
                if have and not self.args.connect_under_load:
                    # Connecting thousands costs the node far more than holding them: paused,
                    # the search takes a minute rather than several (see --connect-under-load).
                    await load.run(None)
                await load.mark()  # the step's disconnects count from here
                fresh = max(min(n - have, 10), round(self.args.probes * (n - have) / steps[-1]))
                crowd = viewers(c.secret, have, n, fresh, shape.senders, 1)
                connect = await self.connect(load, crowd, self.args.lowat)
                if not have or not self.args.connect_under_load:
                    await load.run(shape.plan(until_s=self.args.timeout))
                have, probes = n, probes + sum(v.probe for v in crowd)
                step_shape = Shape(n, shape.comments, shape.likes, shape.senders)
                step = await self.measure(kind, c, load, step_shape, probes, connect=connect)
                if self.box_was_busy(step):
                    print("   other work took the CPU meanwhile: measuring this step again")
                    again = await self.measure(kind, c, load, step_shape, probes, connect=connect)
                    again.disconnects += step.disconnects
                    again.remeasured = True
                    step = again
                out.append(step)
                if why := step.failures(CAPACITY_P99_MS):
                    print("   not held: " + "; ".join(why), flush=True)
                    break
        return out

    def box_was_busy(self, step: Step) -> bool:
        """A step missed only on latency or throughput while other processes took a good
        share of this 2-core box: worth one more window before calling it."""
        other = step.cpu.percent.get("other processes", 0.0)
        lost = step.disconnects or step.connect.failed or step.problems
        return bool(step.failures(CAPACITY_P99_MS)) and other > BUSY_PCT and not lost

    async def idle(self, kind: str, n: int) -> Idle:
        print(f"\n== {kind}: memory of {n:,} idle viewers", flush=True)
        await self.quiet()
        async with self.room(kind, 1, {}) as (c, load):
            await asyncio.sleep(1.0)  # let start-up garbage settle
            pid = c.nodes[0].pid
            before = rss_mb(pid)
            connect = await self.connect(load, viewers(c.secret, 0, n, 0, 0, 1), 0)
            await asyncio.sleep(self.args.settle)
            idle = Idle(kind, connect, before, rss_mb(pid), dead_nodes(c))
        print(f"   RSS {idle.before_mb:.0f} -> {idle.after_mb:.0f} MB: {idle.kb_each:.1f} KB each")
        self.broken += idle.problems
        return idle

    async def run(self) -> None:
        a = self.args
        kinds = [k for k in SERVERS if k in a.servers]
        # In this order: the cheap, short runs first, the capacity search (longest) last.
        scenarios: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            *(("memory", partial(self._idle, k)) for k in kinds),
            *(("rates", partial(self._rate, k, x)) for x in a.rates for k in kinds),
            *(("nodes", partial(self._two_nodes, k)) for k in kinds),
            *(("capacity", partial(self._capacity, k)) for k in kinds),
        ]
        for name, scenario in scenarios:
            if name not in a.only:
                continue
            try:
                await scenario()
            except (RuntimeError, OSError, EOFError, TimeoutError, aiohttp.ClientError) as exc:
                self.broken.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"   BROKE: {exc}", file=sys.stderr, flush=True)

    async def _idle(self, kind: str) -> None:
        self.results.idle.append(await self.idle(kind, self.args.idle))

    async def _rate(self, kind: str, rate: float) -> None:
        self.results.rates.append(await self.rate(kind, 1, Shape.of(self.args.viewers, rate)))

    async def _two_nodes(self, kind: str) -> None:
        shape = Shape.of(self.args.viewers, self.args.nodes_rate)
        self.results.nodes.append(await self.rate(kind, 2, shape))

    async def _capacity(self, kind: str) -> None:
        steps = self.args.lc_steps if kind == "livecommerce" else self.args.baseline_steps
        self.results.capacity[kind] = await self.capacity(kind, steps)


def describe(shape: Shape) -> str:
    likes = f" + {shape.likes:,.0f} likes/s" if shape.likes else ""
    return (
        f"{shape.viewers:,} viewers, {shape.comments:,.0f} comments/s{likes} "
        f"from {shape.senders:,} senders"
    )


def step_line(s: Step) -> str:
    t = s.tally
    return (
        f"{s.shape.viewers:,} viewers: {s.deliveries:,.0f} deliveries/s in "
        f"{s.per_s(t.events) / s.shape.viewers:.1f} frames/viewer/s "
        f"(probes x viewers {s.extrapolated:,.0f}), p50 {s.p(50):,.0f} / p99 {s.p(99):,.0f} ms, "
        f"acked {t.comments_ok:,}/{t.comments_sent:,} comments {t.likes_ok:,}/{t.likes_sent:,} "
        f"likes, errors {dict(t.errors)}, dropped conns {s.disconnects} {dict(t.down)}, "
        f"CPU nodes {' · '.join(f'{v:.0f}' for v in s.node_cpu())} % "
        f"loadgen {s.cpu.percent.get('loadgen', 0):.0f} % "
        f"other {s.cpu.percent.get('other processes', 0):.0f} %, RSS {sum(s.rss):,.0f} MB"
    )


# -- reporting ---------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:,.0f}"


def dropped_per_viewer(s: Step) -> float:
    return s.per_s(s.tally.probe_dropped) / max(1, s.probes)


def cpu_cell(s: Step) -> str:
    return " · ".join(f"{v:.0f} %" for v in s.node_cpu())


ROWS: list[tuple[str, Callable[[Step], str]]] = [
    (
        "comments acked/s (sent/s)",
        lambda s: f"{s.per_s(s.tally.comments_ok):,.0f} ({s.per_s(s.tally.comments_sent):,.0f})",
    ),
    (
        "**deliveries/s** counted (probes × viewers)",
        lambda s: f"**{s.deliveries:,.0f}** ({s.extrapolated:,.0f})",
    ),
    (
        "shown · dropped per viewer/s",
        lambda s: f"{s.deliveries / s.shape.viewers:.1f} · {dropped_per_viewer(s):.1f}",
    ),
    (
        "frames · KB per viewer/s (all events)",
        lambda s: (
            f"{s.per_s(s.tally.events) / s.shape.viewers:.1f} · "
            f"{s.per_s(s.tally.bytes) / s.shape.viewers / 1024:.1f}"
        ),
    ),
    ("**latency p50 / p99**", lambda s: f"{ms(s.p(50))} / **{ms(s.p(99))}** ms"),
    ("comment:send ack p99", lambda s: f"{ms(quantile(s.tally.ack_latency, 99))} ms"),
    ("**server CPU**", lambda s: f"**{cpu_cell(s)}**"),
    ("server RSS", lambda s: " · ".join(f"{v:,.0f} MB" for v in s.rss)),
    ("disconnects", lambda s: f"{s.disconnects}"),
    (
        "load generator CPU (send lag p99)",
        lambda s: (
            f"{s.cpu.percent.get('loadgen', 0):.0f} % ({ms(quantile(s.tally.send_lag, 99))} ms)"
        ),
    ),
    ("other processes CPU", lambda s: f"{s.cpu.percent.get('other processes', 0):.0f} %"),
]


def table(
    head: Sequence[str],
    steps: Sequence[Step],
    extra: Sequence[tuple[str, Callable[[Step], str]]] = (),
) -> list[str]:
    lines = ["| | " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(head)]
    for label, cell in [*ROWS, *extra]:
        lines.append(f"| {label} | " + " | ".join(cell(s) for s in steps) + " |")
    return lines


def idle_lines(idle: Sequence[Idle]) -> list[str]:
    if not idle:
        return []
    lines = [
        "**Memory per idle connection**: a fresh node, a live room; RSS (VmRSS) read before "
        "the viewers connect and after they all joined and settled, nothing sent:",
        "",
        "| | " + " | ".join(i.server for i in idle) + " | target |",
        "| --- |" + " ---: |" * len(idle) + " ---: |",
        "| connections | " + " | ".join(f"{i.connect.connected:,}" for i in idle) + " | |",
        "| RSS before → after | "
        + " | ".join(f"{i.before_mb:.0f} → {i.after_mb:.0f} MB" for i in idle)
        + " | |",
        "| **per connection** | "
        + " | ".join(f"**{i.kb_each:.1f} KB**" for i in idle)
        + f" | ≤ {TARGET_IDLE_KB:g} KB |",
    ]
    return [*lines, ""]


def rates_lines(rates: Sequence[Step]) -> list[str]:
    if not rates:
        return []
    head = [f"{s.shape.comments:,.0f}/s {s.server}" for s in rates]
    v = rates[0].shape.viewers
    return [f"**{v:,} viewers, one node** (comments/s × server):", "", *table(head, rates), ""]


def nodes_lines(rates: Sequence[Step], two: Sequence[Step]) -> list[str]:
    if not two:
        return []
    cols: list[Step] = []
    for s in two:
        one = [r for r in rates if r.server == s.server and r.shape.comments == s.shape.comments]
        cols += [*one[:1], s]
    head = [f"{s.server}, {s.nodes} node{'s' if s.nodes > 1 else ''}" for s in cols]
    extra = [("redis-server CPU", lambda s: f"{s.cpu.percent.get('redis-server', 0):.0f} %")]
    lines = [
        f"**{two[0].shape.viewers:,} viewers × {two[0].shape.comments:,.0f} comments/s, one node "
        "vs two nodes sharing a redis-server** (viewers and senders alternate over the nodes; "
        "the baseline's two nodes use python-socketio's `AsyncRedisManager`):",
        "",
        *table(head, cols, extra),
        "",
    ]
    return lines


def capacity_lines(capacity: dict[str, list[Step]]) -> list[str]:
    if not capacity:
        return []
    first = next(iter(capacity.values()))[0].shape
    senders = ", ".join(f"{k} {v[0].shape.senders:,}" for k, v in capacity.items())
    lines = [
        f"**Capacity, one node**: {first.comments:,.0f} comments/s + {first.likes:,.0f} likes/s "
        f"from a fixed set of senders among the first step's viewers ({senders}), viewers "
        f"added step by step; a step is held with p99 ≤ {CAPACITY_P99_MS:g} ms, no disconnect, "
        "≥ 95 % of the sends acked ok and each viewer shown ≥ 90 % of what it should see:",
        "",
        "| server | viewers | comments · likes acked/s | deliveries/s | p50 / p99 "
        "| disconnects | CPU: server · loadgen · other | RSS | held |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind, steps in capacity.items():
        for s in steps:
            why = s.failures(CAPACITY_P99_MS)
            t = s.tally
            lines.append(
                f"| {kind} | {s.shape.viewers:,} | {s.per_s(t.comments_ok):,.0f} · "
                f"{s.likes_per_s():,.0f} | "
                f"{s.deliveries:,.0f} | {ms(s.p(50))} / {ms(s.p(99))} ms | {s.disconnects} | "
                f"{cpu_cell(s)} · {s.cpu.percent.get('loadgen', 0):.0f} % · "
                f"{s.cpu.percent.get('other processes', 0):.0f} % | {sum(s.rss):,.0f} MB | "
                + ("yes" if not why else "**no**: " + "; ".join(why))
                + (" (2nd window: box busy)" if s.remeasured else "")
                + " |"
            )
    return [*lines, ""]


def held(steps: Sequence[Step]) -> int:
    ok = [s.shape.viewers for s in steps if not s.failures(CAPACITY_P99_MS)]
    return max(ok, default=0)


def first_miss(steps: Sequence[Step]) -> str:
    for s in steps:
        if why := s.failures(CAPACITY_P99_MS):
            return f" (first miss at {s.shape.viewers:,}: {'; '.join(why)})"
    return ""


def verdict_lines(r: Results) -> list[str]:
    out = []
    lc = [s for s in r.rates if s.server == "livecommerce" and s.shape.comments == 100]
    base = [s for s in r.rates if s.server == "baseline" and s.shape.comments == 100]
    if lc:
        other = f" (baseline {ms(base[0].p(99))} ms)" if base else ""
        why = lc[0].failures(TARGET_P99_MS)
        out.append(
            f"* p99 ≤ {TARGET_P99_MS:g} ms at {lc[0].shape.viewers:,} viewers × 100 comments/s, "
            f"one node: {ms(lc[0].p(99))} ms{other} — {verdict(not why)}"
            + (f" ({'; '.join(why)})." if why else ".")
        )
    for s in r.nodes:
        one = [x for x in r.rates if x.server == s.server and x.shape.comments == s.shape.comments]
        if one:
            out.append(
                f"* {s.server}, two nodes with Redis: p99 {ms(s.p(99))} ms vs {ms(one[0].p(99))} "
                f"ms on one node ({s.p(99) - one[0].p(99):+,.0f} ms)."
            )
    if "livecommerce" in r.capacity:
        steps = r.capacity["livecommerce"]
        most = held(steps)
        base_most = held(r.capacity.get("baseline", []))
        out.append(
            f"* Viewers one node holds at {steps[0].shape.comments:,.0f} comments/s + "
            f"{steps[0].shape.likes:,.0f} likes/s: {most:,} (baseline {base_most:,}); target "
            f"≥ {TARGET_VIEWERS:,} — {verdict(most >= TARGET_VIEWERS)}{first_miss(steps)}."
        )
    for i in r.idle:
        if i.server == "livecommerce":
            base_kb = [x.kb_each for x in r.idle if x.server == "baseline"]
            other = f" (baseline {base_kb[0]:.1f} KB)" if base_kb else ""
            out.append(
                f"* Memory per idle connection: {i.kb_each:.1f} KB{other}; target ≤ "
                f"{TARGET_IDLE_KB:g} KB — {verdict(i.kb_each <= TARGET_IDLE_KB)}."
            )
    return out


def report(r: Results, args: argparse.Namespace, command: str) -> str:
    m = machine()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {when} with `{command}` on {m['cpus']} ({m['ram']} RAM, {m['os']}): "
        f"Python {m['python']}, redis-server {m['redis']}, {m['libs']}; load average at the "
        f"end {m['load']}.",
        "",
        f"Each window: {args.warm:g} s warm-up, then {args.measure:g} s measured. Load generator: "
        f"{args.workers} processes, ≤ {args.probes} probes, plain viewers read with "
        f"SO_RCVLOWAT {args.lowat}. livecommerce: default per-user limits (comments 1/s burst "
        f"3, likes 10/s), `LIVECOMMERCE_COMMENTS__VIEWER_RATE={VIEWER_RATE}`.",
        "",
        *verdict_lines(r),
        "",
        *idle_lines(r.idle),
        *rates_lines(r.rates),
        *nodes_lines(r.rates, r.nodes),
        *capacity_lines(r.capacity),
    ]
    return "\n".join(lines).rstrip()


def write_doc(text: str) -> None:
    block = f"{BEGIN}\n{text}\n{END}"
    current = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(current):
        DOC.write_text(pattern.sub(lambda _: block, current))
    else:
        heading = "\n\n## Bullet comments: baseline vs livecommerce\n\n### Latest results\n\n"
        DOC.write_text(current.rstrip() + heading + block + "\n")


# -- main --------------------------------------------------------------------------------


def numbers(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


QUICK = {
    "idle": 500,
    "rates": "100",
    "lc_steps": "1000",
    "baseline_steps": "10,20",
    "warm": 1.0,
    "measure": 2.0,
    "timeout": 150.0,
    "quiet_wait": 0.0,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench comments", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run (no doc update)")
    p.add_argument("--only", default="memory,rates,nodes,capacity", help="scenarios to run")
    p.add_argument("--servers", default=",".join(SERVERS), help="baseline,livecommerce")
    p.add_argument("--viewers", type=int, default=1000, help="viewers in rates and nodes")
    p.add_argument("--rates", default="20,100,1000", help="comments/s, one run each")
    p.add_argument("--nodes-rate", type=float, default=100, help="comments/s on two nodes")
    p.add_argument("--cap-comments", type=float, default=1000)
    p.add_argument("--cap-likes", type=float, default=5000)
    p.add_argument("--lc-steps", default="1000,2000,4000,6000,8000,10000")
    p.add_argument("--baseline-steps", default="10,20,50,100,200,500,1000")
    p.add_argument(
        "--connect-under-load",
        action="store_true",
        help="capacity: keep sending while a step's viewers connect (default: pause)",
    )
    p.add_argument("--idle", type=int, default=4000, help="idle viewers for the memory figure")
    p.add_argument("--settle", type=float, default=3.0, help="s before the idle RSS reading")
    p.add_argument("--warm", type=float, default=3.0, help="s of warm-up before a window")
    p.add_argument("--measure", type=float, default=8.0, help="s measured per window")
    p.add_argument("--workers", type=int, default=4, help="load generator processes")
    p.add_argument("--probes", type=int, default=200, help="viewers that time every comment")
    p.add_argument("--concurrency", type=int, default=32, help="connects in flight per worker")
    p.add_argument("--lowat", type=int, default=4096, help="SO_RCVLOWAT of plain viewers")
    p.add_argument("--quiet-wait", type=float, default=5.0, help="max s to wait for an idle box")
    add_setting_option(p)
    p.add_argument("--keep", action="store_true", help="keep temp dirs (server logs)")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--timeout", type=float, default=480.0, help="give up after this many s")
    explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv or sys.argv[1:])}
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
        args.no_docs = args.no_docs or "docs" not in explicit
    args.rates = numbers(str(args.rates))
    args.lc_steps = numbers(str(args.lc_steps))
    args.baseline_steps = numbers(str(args.baseline_steps))
    args.only = {s.strip() for s in args.only.split(",")}
    args.servers = {s.strip() for s in args.servers.split(",")}
    return args


async def amain(args: argparse.Namespace, command: str) -> int:
    bench = Bench(args)
    try:
        async with asyncio.timeout(args.timeout):
            await bench.run()
    except TimeoutError:
        bench.broken.append(f"did not finish within {args.timeout:.0f}s (--timeout)")
    r = bench.results
    if r.idle or r.rates or r.nodes or r.capacity:
        text = report(r, args, command)
        print("\n" + text + "\n")
        if not args.no_docs:
            write_doc(text)
            print(f"updated {DOC.relative_to(ROOT)}")
    for problem in bench.broken:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if bench.broken else 0


def interrupted(signum: int, _frame: Any) -> None:
    """SIGTERM (scripts/bench stopping its group) unwinds like Ctrl-C: servers get stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()  # servers and workers inherit it: one fd per connection each
    shown = sys.argv[1:] if argv is None else list(argv)
    command = os.environ.get("BENCH_COMMAND") or "scripts/bench comments " + " ".join(shown)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(amain(args, command.strip()))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
