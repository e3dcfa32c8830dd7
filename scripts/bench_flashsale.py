"""Flash-sale benchmark: N buyers fire ``flashsale:buy`` at one instant for a few units.

Everything runs on 127.0.0.1 and is thrown away afterwards: its own redis-server (no
persistence), a temp SQLite file, N real ``livecommerce serve`` nodes sharing both, a host
made directly in the database, a live room, a product and a sale. Buyers are distinct
viewer users whose tokens are minted with the nodes' shared secret; they are all connected
first (scripts/loadgen.py, raw Engine.IO frames from several processes), then send their
buy at the same instant. Measured per run:

* time from the fire instant until the last buyer's ack, p50/p99 of each buyer's latency;
* acks per second, overall and per node; the ack codes (ok = one unit reserved);
* CPU used during the burst by each node, redis-server, the load generator and everything
  else on the machine (other processes on a 2-core box skew the figures: it is shown);
* a transport floor first: the same buyers send an unknown event, which the node answers
  with ``invalid`` without touching Redis or SQL;
* correctness: acks ok == units == Redis (quantity - left, holds) == SQL order rows, and no
  buyer holds more than one unit. Any oversell or mismatch makes the exit status 1.

Then, in the same redis-server, redis-benchmark evaluates the very same ``sale_buy.lua``
(EVALSHA) for the ceiling, on a sale of its own: the reserve path (huge stock; every call
reserves, with distinct users and request ids via ``__rand_int__``) and the sold-out path
(stock 0; what 90% of the buyers above get), each unpipelined and pipelined.

Usage: scripts/bench [--buyers 5000] [--units 500] [--nodes 1,2] [--workers 4] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import aiohttp  # noqa: E402
import socketio  # noqa: E402
from loadgen import ConnectStats, LoadGen, RoundResult, mint_tokens, percentile  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from livecommerce.engine.redis_common import load_script  # noqa: E402
from livecommerce.settings import loadtest_env  # noqa: E402

TARGET_LAST_ACK_S = 1.0
TARGET_ACKS_PER_NODE = 15_000.0
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:flashsale:begin -->", "<!-- bench:flashsale:end -->"
NUMBERS = re.compile(r'(?:,"[0-9.]+"){7}\s*$')
LUA = ROOT / "livecommerce" / "engine" / "lua" / "sale_buy.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child process with its log in the run's temp dir; stop() is bounded."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        self.terminate()
        self.reap(grace_s)

    def terminate(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def reap(self, grace_s: float) -> None:
        """Wait for the exit a terminate() asked for; SIGKILL after ``grace_s``."""
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


async def wait_quiet(max_wait_s: float, busy_pct: float = 30.0) -> float:
    """Wait (bounded) until the rest of the machine uses under ``busy_pct`` % of a core:
    other work on a 2-core box skews every figure here. Returns the last reading."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before, t0 = machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(1.0)
        busy = 100 * (machine_busy_seconds() - before) / (time.monotonic() - t0)
        if busy < busy_pct or time.monotonic() >= deadline - 1:
            return busy
        print(f"   machine busy with other work ({busy:.0f} % of a core), waiting…", flush=True)


@dataclass
class CpuWindow:
    """CPU used by groups of processes between two samples, in % of one core."""

    groups: dict[str, list[int]]
    started: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds used
    percent: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        sample = {g: sum(cpu_seconds(p) for p in pids) for g, pids in self.groups.items()}
        sample["machine"] = machine_busy_seconds()
        return sample

    def start(self) -> None:
        self.started, self.before = time.monotonic(), self._sample()

    def stop(self) -> None:
        wall = max(1e-6, time.monotonic() - self.started)
        after = self._sample()
        used = {g: after[g] - self.before[g] for g in after}
        ours = sum(v for g, v in used.items() if g != "machine")
        used["other processes"] = max(0.0, used["machine"] - ours)
        self.seconds = used
        self.percent = {g: 100 * v / wall for g, v in used.items()}

    def ms_per_ack(self, result: RoundResult, node: int) -> float:
        """CPU milliseconds a node spent per ack it sent: unlike acks/s, this barely
        depends on how much of the box other processes took meanwhile."""
        acks = sum(1 for r in result.acked if r.node == node)
        return 1000 * self.seconds.get(f"node{node + 1}", 0.0) / max(acks, 1)


# -- the cluster under test --------------------------------------------------------


@dataclass
class Cluster:
    tmp: Path
    secret: str
    redis_port: int
    db_path: Path
    redis: Proc | None = None
    nodes: list[Proc] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db_path}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        env["PYTHONPATH"] = str(ROOT)
        env["LIVECOMMERCE_AUTH__SECRET"] = self.secret
        env["LIVECOMMERCE_SERVER__LOG_LEVEL"] = "warning"
        return env | loadtest_env()  # every buyer connects from 127.0.0.1

    def stop_nodes(self, grace_s: float = 5.0) -> None:
        for node in self.nodes:
            node.terminate()
        deadline = time.monotonic() + grace_s
        for node in self.nodes:
            node.reap(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self.stop_nodes()
        if self.redis is not None:
            self.redis.stop()


def add_setting_option(p: argparse.ArgumentParser) -> None:
    """``--setting section.key=value`` (repeatable): livecommerce settings for a run."""
    p.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a livecommerce setting for this run, e.g. transport.fanout_thread_min=0",
    )


def setting_env(settings: list[str]) -> dict[str, str]:
    """``section.key=value`` (``--setting``) -> ``LIVECOMMERCE_SECTION__KEY=value``."""
    env = {}
    for item in settings:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--setting {item!r}: expected section.key=value")
        env[f"LIVECOMMERCE_{section.upper()}__{key.upper()}"] = value
    return env


@contextlib.asynccontextmanager
async def cluster(
    nodes: int, launcher: str = "", keep: bool = False, settings: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-"))
    c = Cluster(tmp, "bench-" + secrets.token_hex(24), free_port(), tmp / "bench.db")
    try:
        await start_redis(c)
        migrate = [sys.executable, "-m", "livecommerce", "migrate", "--database", c.db_url]
        done = await asyncio.to_thread(
            subprocess.run, migrate, cwd=ROOT, env=c.env(), capture_output=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{done.stderr.decode(errors='replace')}")
        for i in range(nodes):
            port = free_port()
            entry = [launcher] if launcher else ["-m", "livecommerce"]
            args = [sys.executable, *entry, "serve", "--host", "127.0.0.1"]
            args += ["--port", str(port), "--redis", c.redis_url, "--database", c.db_url]
            args += ["--node-id", f"bench-n{i + 1}"]
            c.nodes.append(Proc(f"node{i + 1}", args, tmp, c.env() | (settings or {})))
            c.urls.append(f"http://127.0.0.1:{port}")
        for node, url in zip(c.nodes, c.urls, strict=True):
            await wait_ready(node, url)
        yield c
    finally:
        await asyncio.to_thread(c.stop)
        if keep:
            print(f"   kept {tmp} (node and redis logs, the SQLite file)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def start_redis(c: Cluster) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    args = [binary, "--port", str(c.redis_port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "no", "--dir", str(c.tmp)]
    c.redis = Proc("redis", args, c.tmp, dict(os.environ))
    deadline = time.monotonic() + 10
    client = Redis(host="127.0.0.1", port=c.redis_port)
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # not up yet
                if await client.ping():
                    return
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise RuntimeError(f"redis-server did not start:\n{c.redis.tail()}")


async def wait_ready(node: Proc, url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited:\n{node.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url + "/readyz") as res:
                    if res.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{node.name} not ready within {timeout_s}s:\n{node.tail()}")


# -- setting up the sale -----------------------------------------------------------


@dataclass(frozen=True)
class Sale:
    room_id: str
    sale_id: str
    quantity: int


async def host_token(c: Cluster) -> str:
    from livecommerce.auth import Auth
    from livecommerce.persistence.db import Database
    from livecommerce.persistence.repositories import Users

    db = Database(c.db_url)
    try:
        auth = Auth(Users(db), c.secret, 3600)
        return auth.issue(await auth.add_user("benchhost", "bench-host-pw", "host"))
    finally:
        await db.close()


async def create_sale(c: Cluster, units: int) -> Sale:
    token = await host_token(c)
    headers = {"Authorization": f"Bearer {token}"}
    url = c.urls[0]
    async with aiohttp.ClientSession(headers=headers) as http:
        room = await _post(http, f"{url}/api/rooms", {"title": "Flash sale bench"})
        room_id = str(room["id"])
        product = await _post(
            http,
            f"{url}/api/rooms/{room_id}/products",
            {"title": "Bench gadget", "price_cents": 1999, "stock": units},
        )
        await _post(http, f"{url}/api/rooms/{room_id}/start", {})
    host = socketio.AsyncClient(reconnection=False)
    await host.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        terms = {
            "room_id": room_id,
            "product_id": product["id"],
            "price_cents": 999,
            "quantity": units,
            "per_user_limit": 1,
            "duration_s": 600,
        }
        ack = await host.call("flashsale:create", terms, timeout=15)
    finally:
        await host.disconnect()
    if not ack.get("ok"):
        raise RuntimeError(f"flashsale:create failed: {ack}")
    return Sale(room_id, str(ack["sale"]["id"]), units)


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=15)) as res:
        data: dict[str, Any] = await res.json()
        if res.status >= 300:
            raise RuntimeError(f"POST {url} -> {res.status} {data}")
        return data


# -- checking the outcome ----------------------------------------------------------


@dataclass
class Books:
    """What the stores say after the burst."""

    redis_left: int
    redis_status: str
    redis_orders: int
    redis_held: int
    redis_max_held: int
    sql_orders: int
    sql_units: int
    sql_over_limit: int
    sql_wait_s: float


async def read_books(c: Cluster, sale: Sale, expected: int, wait_s: float) -> Books:
    from livecommerce.features.flashsale.service import sale_keys

    sale_key, holds_key, orders_key, _ = sale_keys(sale.room_id, sale.sale_id)
    client = Redis(host="127.0.0.1", port=c.redis_port, decode_responses=True)
    try:
        left, status = await client.hmget(sale_key, ["left", "status"])
        holds = [int(v) for v in (await client.hgetall(holds_key)).values()]
        redis_orders = int(await client.hlen(orders_key))
    finally:
        await client.aclose()
    started = time.monotonic()
    sql = sql_counts(c.db_path, sale.sale_id)
    while sql[0] < expected and time.monotonic() - started < wait_s:
        await asyncio.sleep(0.25)
        sql = sql_counts(c.db_path, sale.sale_id)
    await asyncio.sleep(0.5)  # anything more on its way would show now
    sql = sql_counts(c.db_path, sale.sale_id)
    return Books(
        redis_left=int(left if left is not None else -1),
        redis_status=str(status),
        redis_orders=redis_orders,
        redis_held=sum(holds),
        redis_max_held=max(holds, default=0),
        sql_orders=sql[0],
        sql_units=sql[1],
        sql_over_limit=sql[2],
        sql_wait_s=time.monotonic() - started,
    )


def sql_counts(db_path: Path, sale_id: str) -> tuple[int, int, int]:
    """(order rows, units, users holding more than one unit) of a sale, from SQLite."""
    where = "kind = 'flashsale' AND ref_id = ? AND status IN ('reserved', 'paying', 'paid')"
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 5000")
        rows, units = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(qty), 0) FROM orders WHERE {where}", (sale_id,)
        ).fetchone()
        (over,) = db.execute(
            f"SELECT COUNT(*) FROM (SELECT user_id FROM orders WHERE {where} "
            "GROUP BY user_id HAVING SUM(qty) > 1)",
            (sale_id,),
        ).fetchone()
    return int(rows), int(units), int(over)


# -- the ceiling: redis-benchmark on the same Lua script --------------------------


@dataclass
class Ceiling:
    path: str  # "reserve" or "sold_out"
    pipeline: int
    rps: float
    p50_ms: float
    p99_ms: float
    other_pct: float = 0.0  # CPU other processes used meanwhile, % of one core


async def redis_ceiling(c: Cluster, requests: int, clients: int) -> list[Ceiling]:
    """EVALSHA sale_buy.lua via redis-benchmark, on sales nobody else touches (their own
    hash tag, a log stream no node consumes)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        print("redis-benchmark not found: no ceiling", file=sys.stderr)
        return []
    client = Redis(host="127.0.0.1", port=c.redis_port, decode_responses=True)
    try:
        sha = await client.script_load(load_script(LUA))  # its --#include lines inlined
        base = "lc:{room:bench-ceiling}"
        far = 10**15
        await client.hset(
            f"{base}:sale:reserve",
            mapping={
                "left": 10**12,
                "status": "live",
                "starts_at": 0,
                "ends_at": far,
                "limit": 10**12,
            },
        )
        await client.hset(
            f"{base}:sale:sold_out",
            mapping={"left": 0, "status": "sold_out", "starts_at": 0, "ends_at": far, "limit": 1},
        )
    finally:
        await client.aclose()
    now = str(int(time.time() * 1000))
    results = []
    for path in ("reserve", "sold_out"):
        sale = f"{base}:sale:{path}"
        keys = [sale, f"{sale}:holds", f"{sale}:orders", f"{base}:log:orders"]
        keys.append(f"{base}:idem:buy:{path}:u__rand_int__:r__rand_int__")
        order = (
            '{"id":"o__rand_int__","user_id":"u__rand_int__","kind":"flashsale","qty":1,'
            '"status":"reserved","unit_price_cents":999,"amount_cents":999}'
        )
        args = [now, "u__rand_int__", "1", order, "60000"]
        for pipeline in (1, 16):
            cmd = [binary, "-h", "127.0.0.1", "-p", str(c.redis_port), "-n", str(requests)]
            cmd += ["-c", str(clients), "-P", str(pipeline), "-r", "100000000", "--csv"]
            cmd += ["EVALSHA", sha, "5", *keys, *args]
            assert c.redis is not None
            started = (time.monotonic(), machine_busy_seconds(), cpu_seconds(c.redis.pid))
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = await asyncio.to_thread(
                subprocess.run, cmd, capture_output=True, text=True, timeout=90
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            ours = cpu_seconds(c.redis.pid) - started[2]  # redis-server + redis-benchmark
            ours += after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
            other = machine_busy_seconds() - started[1] - ours
            ceiling = _parse_csv(path, pipeline, done.stdout)
            ceiling.other_pct = max(0.0, 100 * other / (time.monotonic() - started[0]))
            results.append(ceiling)
    return results


def _parse_csv(path: str, pipeline: int, text: str) -> Ceiling:
    # The test name echoes the arguments unescaped (JSON quotes and commas), so read the
    # seven numbers off the end of the line: rps, avg, min, p50, p95, p99, max.
    for line in reversed(text.splitlines()):
        numbers = NUMBERS.search(line)
        if numbers:
            values = [float(v) for v in re.findall(r"[0-9.]+", numbers.group(0))]
            return Ceiling(path, pipeline, values[0], values[3], values[5])
    raise RuntimeError(f"redis-benchmark printed nothing usable:\n{text}")


# -- one run -----------------------------------------------------------------------


@dataclass
class Run:
    nodes: int
    buyers: int
    units: int
    workers: int
    connect: ConnectStats
    floor: RoundResult | None
    buy: RoundResult
    cpu: CpuWindow
    floor_cpu: CpuWindow | None
    books: Books
    ceiling: list[Ceiling]
    busy_before: float  # % of a core other processes used just before the run
    problems: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return min(self.units, self.buyers)

    def node_rates(self, result: RoundResult) -> list[float]:
        return [result.acks_per_s(n) for n in range(self.nodes)]


async def one_run(args: argparse.Namespace, nodes: int, ceiling: bool) -> Run:
    print(f"\n== {nodes} node(s): {args.buyers} buyers, {args.units} units", flush=True)
    busy = await wait_quiet(args.quiet_wait)
    print(f"   other work on the machine before the run: {busy:.0f} % of a core")
    async with cluster(nodes, args.node_launcher, args.keep, setting_env(args.setting)) as c:
        sale = await create_sale(c, args.units)
        print(f"   sale {sale.sale_id} in room {sale.room_id} on {', '.join(c.urls)}")
        tokens: list[str | None] = list(mint_tokens(c.secret, args.buyers, prefix="buyer"))
        gen = LoadGen(c.urls, tokens, workers=args.workers, connect_concurrency=args.concurrency)
        try:
            connect = await gen.start()
            print(
                f"   connected {connect.connected}/{args.buyers} in {connect.seconds:.1f}s"
                + (
                    f" ({connect.failed} failed: {connect.errors.most_common(2)})"
                    if connect.failed
                    else ""
                )
            )
            groups = {f"node{i + 1}": [n.pid] for i, n in enumerate(c.nodes)}
            assert c.redis is not None
            groups |= {"redis-server": [c.redis.pid], "loadgen": gen.pids}
            profiler = Profiler(args.profile, args.profile_native, args.profile_s)
            floor, floor_cpu = None, None
            if not args.no_floor:
                floor, floor_cpu = await measured_round(
                    gen, groups, "bench:noop", {}, None, profiler, f"{nodes}n-floor", args.deadline
                )
                print(f"   floor: unknown event acked by all in {floor.last_ack_s():.2f}s")
                await asyncio.sleep(args.settle)
            buy_payload = {"sale_id": sale.sale_id, "qty": 1}
            buy, cpu = await measured_round(
                gen,
                groups,
                "flashsale:buy",
                buy_payload,
                "request_id",
                profiler,
                f"{nodes}n-buy",
                args.deadline,
            )
            print(f"   buy: last ack after {buy.last_ack_s():.2f}s, codes {dict(buy.codes())}")
            for code, example in buy.examples.items():
                print(f"      e.g. {code}: {example}")
            books = await read_books(c, sale, min(args.units, args.buyers), args.sql_wait)
        finally:
            # Nodes first: closing thousands of sockets costs a node far more than dying.
            await asyncio.to_thread(c.stop_nodes, 3.0)
            await gen.close()
        limits = await redis_ceiling(c, args.ceiling_n, 50) if ceiling else []
    run = Run(
        nodes=nodes,
        buyers=args.buyers,
        units=args.units,
        workers=args.workers,
        connect=connect,
        floor=floor,
        buy=buy,
        cpu=cpu,
        floor_cpu=floor_cpu,
        books=books,
        ceiling=limits,
        busy_before=busy,
    )
    run.problems = check(run)
    return run


async def measured_round(
    gen: LoadGen,
    groups: dict[str, list[int]],
    event: str,
    payload: dict[str, Any],
    unique: str | None,
    profiler: Profiler,
    tag: str,
    deadline_s: float,
) -> tuple[RoundResult, CpuWindow]:
    window = CpuWindow(groups)
    lead = 0.6
    profiler.start([p for g, pids in groups.items() if g.startswith("node") for p in pids], tag)
    sampler = asyncio.create_task(_start_at(window, time.monotonic() + lead))
    result = await gen.fire(event, payload, unique=unique, lead_s=lead, deadline_s=deadline_s)
    await sampler
    window.stop()
    await asyncio.to_thread(profiler.finish)
    return result, window


async def _start_at(window: CpuWindow, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    window.start()


class Profiler:
    """py-spy on every node during a round (for "what limits it"); optional."""

    def __init__(self, out: Path | None, native: bool, duration_s: int) -> None:
        self.out = out
        self.native = native
        self.duration_s = duration_s
        spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        self.spy = spy if out is not None else None
        if out is not None and spy is None:
            print("   (py-spy not on PATH: no profile)")
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, pids: Sequence[int], tag: str) -> None:
        if self.spy is None or self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for i, pid in enumerate(pids):
            path = self.out / f"{tag}-node{i + 1}.folded"
            cmd = [self.spy, "record", "--pid", str(pid), "--duration", str(self.duration_s)]
            rate = os.environ.get("PYSPY_RATE", "250")  # samples/s; a short burst wants more
            cmd += ["--rate", rate, "--format", "raw", "--output", str(path)]
            # --native must pause the process to unwind it; otherwise sample without pausing
            cmd += ["--native"] if self.native else ["--nonblocking"]
            with path.with_suffix(".log").open("wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            self.running.append((proc, path))

    def finish(self) -> None:
        for proc, path in self.running:
            try:
                proc.wait(self.duration_s + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if not path.exists():
                log = path.with_suffix(".log").read_text(errors="replace").strip()
                print(f"   py-spy failed for {path.name}: {log[-300:]}")
                continue
            print(f"   profile {path} (share of samples: self | inclusive)")
            for line in top_frames(path):
                print(f"      {line}")
        self.running = []


def top_frames(path: Path, n: int = 12) -> list[str]:
    """The hottest frames: by own samples, and by inclusive samples (entry points cut)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    skip = ("runpy", "Runner.run", "cli.py", "__main__", "uvloop/__init__", "_run_module")
    hot = [(f, v) for f, v in inclusive.most_common(200) if not any(s in f for s in skip)]
    total = max(total, 1)
    mine = [(f, v) for f, v in hot if "livecommerce/" in f]
    lines = [f"self {100 * v / total:5.1f}%  {f}" for f, v in own.most_common(n)]
    lines += [f"incl {100 * v / total:5.1f}%  {f}" for f, v in hot[:n]]
    lines += [f"incl {100 * v / total:5.1f}%  {f}" for f, v in mine[:n] if (f, v) not in hot[:n]]
    return lines


def check(run: Run) -> list[str]:
    """Correctness problems (each one fails the benchmark)."""
    b, buy = run.books, run.buy
    ok = buy.codes()["ok"]
    sold_redis = run.units - b.redis_left
    problems = []
    if max(ok, sold_redis, b.redis_held, b.sql_units) > run.units:
        problems.append(
            f"OVERSELL: {run.units} units, acks ok {ok}, Redis sold {sold_redis} "
            f"(holds {b.redis_held}), SQL units {b.sql_units}"
        )
    if not ok == sold_redis == b.redis_held == b.redis_orders == b.sql_units == run.expected:
        problems.append(
            f"books disagree: expected {run.expected}, acks ok {ok}, Redis sold {sold_redis}, "
            f"holds {b.redis_held}, orders {b.redis_orders}, SQL {b.sql_orders} rows / "
            f"{b.sql_units} units"
        )
    if b.redis_max_held > 1 or b.sql_over_limit:
        problems.append(
            f"per-user limit broken: max held {b.redis_max_held} in Redis, "
            f"{b.sql_over_limit} users over it in SQL"
        )
    unanswered = len(buy.replies) - len(buy.acked)
    if unanswered or run.connect.failed:
        problems.append(f"{unanswered} buyers got no ack, {run.connect.failed} never connected")
    return problems


# -- reporting ---------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    redis_version = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        redis_version = next(
            (w.split("=")[1] for w in out.stdout.split() if w.startswith("v=")), "?"
        )
    from importlib.metadata import version

    libs = ", ".join(
        f"{name} {version(name)}" for name in ("aiohttp", "python-socketio", "python-engineio")
    )
    return {
        "cpus": f"{os.cpu_count()} × {model}",
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": redis_version,
        "libs": libs,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(runs: Sequence[Run], command: str) -> str:
    info = machine()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ceiling = next((r.ceiling for r in runs if r.ceiling), [])
    limit = {(c.path, c.pipeline): c for c in ceiling}
    reserve1, sold1 = limit.get(("reserve", 1)), limit.get(("sold_out", 1))

    def rate(c: Ceiling | None) -> str:
        return f"{c.rps:,.0f}" if c else "—"

    head = [f"{r.nodes} node{'s' if r.nodes > 1 else ''}" for r in runs]
    rows: list[tuple[str, list[str], str, str]] = []  # what, per run, ceiling, target

    def row(what: str, cells: list[str], ceil: str = "", target: str = "") -> None:
        rows.append((what, cells, ceil, target))

    row("buyers → units", [f"{r.buyers:,} → {r.units:,}" for r in runs])
    row("connect all buyers", [f"{r.connect.seconds:.1f} s" for r in runs])
    row(
        "all buy frames written within",
        [f"{1000 * max(r.buy.send_spread_s):.0f} ms ({r.workers} procs)" for r in runs],
    )
    row(
        "**every buyer acked after**",
        [f"**{r.buy.last_ack_s():.2f} s**" for r in runs],
        "",
        f"≤ {TARGET_LAST_ACK_S:g} s",
    )
    row(
        "ack latency p50 / p99",
        [lat_cell(r.buy) for r in runs],
        f"{ceiling_lat(sold1)} (sold_out) · {ceiling_lat(reserve1)} (reserve)" if ceiling else "",
    )
    row(
        "**acks/s per node** (script: ops/s, 1 Redis)",
        [" · ".join(f"**{x:,.0f}**" for x in r.node_rates(r.buy)) for r in runs],
        f"{rate(sold1)} sold_out · {rate(reserve1)} reserve" if ceiling else "",
        f"≥ {TARGET_ACKS_PER_NODE:,.0f}",
    )
    row(
        "acks/s all nodes (script: pipelined ×16)",
        [f"{r.buy.acks_per_s():,.0f}" for r in runs],
        f"{rate(limit.get(('sold_out', 16)))} sold_out · {rate(limit.get(('reserve', 16)))} reserve"
        if ceiling
        else "",
    )
    row(
        "floor: unknown event, acks/s per node",
        [" · ".join(f"{x:,.0f}" for x in r.node_rates(r.floor)) if r.floor else "—" for r in runs],
    )
    row("ok acks = units reserved", [f"{r.buy.codes()['ok']:,}" for r in runs], "", "exactly units")
    row("other acks", [other_codes(r.buy) for r in runs])
    row(
        "Redis: left · held · orders",
        [f"{r.books.redis_left} · {r.books.redis_held} · {r.books.redis_orders}" for r in runs],
    )
    row("SQL: order rows (units)", [f"{r.books.sql_orders} ({r.books.sql_units})" for r in runs])
    row("**oversell**", [oversell_cell(r) for r in runs], "", "0")
    row(
        "node CPU per ack",
        [cpu_per_ack_cell(r) for r in runs],
        "",
        f"≤ {1000 / TARGET_ACKS_PER_NODE:.3f} ms",
    )
    for group in cpu_columns(runs):
        row(f"CPU in the burst: {group}", [cpu_cell(r, group) for r in runs])
    row("other work just before the run", [f"{r.busy_before:.0f} %" for r in runs])

    lines = [
        f"Measured {when} with `{command}`.",
        "",
        f"Machine: {info['cpus']}, {info['ram']} RAM, {info['os']}; Python {info['python']}, "
        f"redis-server {info['redis']}; {info['libs']}. Load average at the end: "
        f"{info['load']}.",
        "",
        "| | " + " | ".join(head) + " | sale_buy.lua in redis-benchmark | target |",
        "| --- |" + " ---: |" * len(head) + " ---: | ---: |",
    ]
    for what, cells, ceil, target in rows:
        lines.append(f"| {what} | " + " | ".join(cells) + f" | {ceil} | {target} |")
    lines += [
        "",
        "CPU is % of one core from the fire instant to the last ack (200 % = the whole box).",
        "acks/s = acks ÷ (last ack − fire instant). Latency = each buyer's ack − its own send.",
    ]
    for r in runs:
        verdicts = [
            f"all acked ≤ {TARGET_LAST_ACK_S:g} s: "
            f"{verdict(r.buy.last_ack_s() <= TARGET_LAST_ACK_S)}",
            f"≥ {TARGET_ACKS_PER_NODE:,.0f} acks/s/node: "
            f"{verdict(min(r.node_rates(r.buy)) >= TARGET_ACKS_PER_NODE)}",
            "zero oversell, books agree: "
            + ("**yes**" if not r.problems else "**NO** — " + "; ".join(r.problems)),
        ]
        lines.append(f"{r.nodes} node{'s' if r.nodes > 1 else ''}: " + "; ".join(verdicts) + ".")
    if ceiling:
        lines += [
            "",
            "redis-benchmark, 50 clients, `EVALSHA sale_buy 5 …` (reserve = every call reserves "
            "a unit for a new user and request id; sold_out = stock 0, the path 90 % of the "
            "buyers take):",
            "",
            "| path | pipeline | ops/s | p50 | p99 | other work meanwhile |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c in ceiling:
            lines.append(
                f"| {c.path} | {c.pipeline} | {c.rps:,.0f} | {c.p50_ms:.3f} ms "
                f"| {c.p99_ms:.3f} ms | {c.other_pct:.0f} % |"
            )
    return "\n".join(lines)


def lat_cell(result: RoundResult) -> str:
    lat = result.latencies_ms()
    return f"{ms(percentile(lat, 50))} / {ms(percentile(lat, 99))} ms"


def ceiling_lat(c: Ceiling | None) -> str:
    return f"{c.p50_ms:.2f} / {c.p99_ms:.2f} ms" if c else "—"


def other_codes(result: RoundResult) -> str:
    codes = result.codes()
    codes.pop("ok", None)
    return ", ".join(f"{k} {v:,}" for k, v in codes.most_common()) or "—"


def oversell_cell(r: Run) -> str:
    b = r.books
    over = max(r.buy.codes()["ok"], r.units - b.redis_left, b.redis_held, b.sql_units) - r.units
    return "none" if over <= 0 else f"**{over} units**"


def cpu_cell(r: Run, group: str) -> str:
    pct = r.cpu.percent
    if group == "nodes":
        return " · ".join(f"{pct[g]:.0f} %" for g in pct if g.startswith("node"))
    return f"{pct[group]:.0f} %" if group in pct else "—"


def cpu_per_ack_cell(r: Run) -> str:
    buy = " · ".join(f"{r.cpu.ms_per_ack(r.buy, n):.2f}" for n in range(r.nodes))
    if r.floor is None or r.floor_cpu is None:
        return f"{buy} ms"
    floor = " · ".join(f"{r.floor_cpu.ms_per_ack(r.floor, n):.2f}" for n in range(r.nodes))
    return f"{buy} ms (floor {floor})"


def cpu_columns(runs: Sequence[Run]) -> list[str]:
    return ["nodes", "redis-server", "loadgen", "other processes"] if runs else []


def write_doc(text: str) -> None:
    block = f"{BEGIN}\n{text}\n{END}"
    if DOC.exists():
        current = DOC.read_text()
        if BEGIN in current and END in current:
            head, rest = current.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            DOC.write_text(head + block + tail)
            return
        DOC.write_text(current.rstrip() + "\n\n## Latest results\n\n" + block + "\n")
        return
    DOC.write_text("# Benchmarks\n\n## Latest results\n\n" + block + "\n")


# -- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--buyers", type=int, default=5000)
    p.add_argument("--units", type=int, default=500)
    p.add_argument("--nodes", default="1,2", help="comma list: one run per count (1,2)")
    p.add_argument("--workers", type=int, default=4, help="load generator processes")
    p.add_argument("--concurrency", type=int, default=64, help="connects in flight per worker")
    p.add_argument("--ceiling-n", type=int, default=200_000, help="redis-benchmark -n")
    p.add_argument("--no-ceiling", action="store_true", help="skip redis-benchmark")
    p.add_argument("--no-floor", action="store_true", help="skip the unknown-event round")
    p.add_argument("--deadline", type=float, default=40.0, help="max s to wait for acks")
    p.add_argument("--settle", type=float, default=1.0, help="pause after the floor round")
    p.add_argument("--sql-wait", type=float, default=15.0, help="max wait for SQL rows")
    p.add_argument("--profile", type=Path, help="py-spy each node into this dir")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native")
    p.add_argument("--profile-s", type=int, default=4, help="py-spy seconds per round")
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max s to wait for an idle box")
    p.add_argument(
        "--node-launcher",
        default="",
        help="experiments: run nodes as `python FILE serve ...` instead of -m livecommerce",
    )
    add_setting_option(p)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    p.add_argument("--timeout", type=float, default=170.0, help="give up after this many s")
    args = p.parse_args(argv)
    args.node_counts = [int(n) for n in str(args.nodes).split(",") if n.strip()]
    if args.buyers < 1 or args.units < 1 or not args.node_counts or min(args.node_counts) < 1:
        p.error("--buyers, --units and --nodes must be positive")
    return args


async def amain(args: argparse.Namespace, command: str) -> int:
    runs: list[Run] = []
    problems: list[str] = []
    try:
        async with asyncio.timeout(args.timeout):
            for i, nodes in enumerate(args.node_counts):
                # The ceiling is a property of redis-server and the script: measure it once.
                runs.append(await one_run(args, nodes, ceiling=i == 0 and not args.no_ceiling))
    except TimeoutError:
        problems.append(f"did not finish within {args.timeout:.0f}s (--timeout)")
    if runs:
        text = report(runs, command)
        print("\n" + text + "\n")
        if not args.no_docs:
            write_doc(text)
            print(f"updated {DOC.relative_to(ROOT)}")
    problems += [p for r in runs for p in r.problems]
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    missed = any(
        r.buy.last_ack_s() > TARGET_LAST_ACK_S
        or min(r.node_rates(r.buy), default=0) < TARGET_ACKS_PER_NODE
        for r in runs
    )
    return 2 if args.strict and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = os.environ.get("BENCH_COMMAND") or " ".join(
        ["scripts/bench", *(sys.argv[1:] if argv is None else argv)]
    )

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        return asyncio.run(amain(args, command))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
