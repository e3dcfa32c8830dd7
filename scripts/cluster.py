"""A local cluster in one command: a redis-server, N livecommerce nodes and nginx in front.

``scripts/cluster`` runs :func:`main`: everything lives under one directory (``var/cluster``
by default: the SQLite file, Redis's append-only file, the rendered nginx config and every
log), the nodes share one database, one Redis and one token secret, and nginx proxies
``http://127.0.0.1:<port>`` (WebSocket upgrades included) to them. Ctrl-C (or SIGTERM) stops
nginx, then the nodes (SIGTERM, so they hand their clients over and flush what they hold),
then Redis. Every child also gets SIGTERM from the kernel if this process dies.

The production tests start their clusters with the same :class:`Cluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from livecommerce.engine.redis_common import answers_ping

ROOT = Path(__file__).resolve().parents[1]
SITE_TEMPLATE = ROOT / "config" / "nginx" / "livecommerce.conf"
#: What ``sticky`` rendering swaps: WebSocket-only balancing for the per-address hash that
#: long-polling needs (the template carries the hash line commented out).
LEAST_CONN = "    least_conn;\n"
HASH_COMMENTED = "    # hash $remote_addr consistent;\n"
HASH = "    hash $remote_addr consistent;\n"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies
    (PR_SET_PDEATHSIG), so a killed orchestrator or test run leaves nothing behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


# -- nginx configuration ----------------------------------------------------------------


def render_site(
    listen: str, upstreams: Sequence[str], *, sticky: bool = False, template: Path = SITE_TEMPLATE
) -> str:
    """config/nginx/livecommerce.conf with its placeholders filled: ``listen`` (e.g.
    ``127.0.0.1:8080``) and one upstream ``server`` line per ``host:port``. ``sticky``
    balances by client address (what HTTP long-polling needs) instead of least_conn."""
    text = template.read_text()
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    for marker in ("{{ servers }}", "{{ listen }}", LEAST_CONN, HASH_COMMENTED):
        if marker not in text:
            raise ValueError(f"{template}: expected {marker.strip()!r} in the template")
    text = text.replace("{{ servers }}", servers).replace("{{ listen }}", listen)
    if sticky:
        text = text.replace(LEAST_CONN, "").replace(HASH_COMMENTED, HASH)
    return text


def render_main(prefix: Path, site: Path) -> str:
    """The nginx.conf of a private nginx: pid, logs and temp files under ``prefix``, nothing
    from /etc/nginx or /var/lib/nginx, so it runs as any user."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would switch to "nobody", which cannot enter a private temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    # Each proxied socket holds two descriptors; stay within what this user may open.
    files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 16384)
    return f"""{user}worker_processes 1;
worker_rlimit_nofile {files};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} notice;

events {{
    worker_connections {files // 2};
}}

http {{
    log_format upstream '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                        'upstream=$upstream_addr rt=$request_time';
    access_log {prefix / "access.log"} upstream;
{temp}
    include {site};
}}
"""


# -- processes --------------------------------------------------------------------------


class Process:
    """One child process: its own session (the terminal's Ctrl-C reaches only the
    orchestrator, which stops children in order), output appended to ``log_path``."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(args),
                cwd=ROOT,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> bool:
        """True once the process has exited (within ``timeout_s``)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """``sig``, then SIGKILL if it is still running after ``timeout_s``."""
        self.send(sig)
        if not self.wait(timeout_s):
            self.kill()

    def kill(self) -> None:
        """kill -9: no shutdown hooks run."""
        self.send(signal.SIGKILL)
        self.wait(10)

    def check_running(self) -> None:
        if self.proc is not None and not self.alive:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def _until(ready: Callable[[], bool], what: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        what.check_running()
        if ready():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what.name} not ready within {timeout_s}s:\n{what.log_tail()}")


async def _http_ok(url: str, what: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            what.check_running()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url) as res:
                    if res.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what.name}: {url} not 200 within {timeout_s}s:\n{what.log_tail()}")


class RedisProcess(Process):
    """redis-server on loopback with an append-only file: stock, holds and orders not yet
    written to SQL live in Redis, so it keeps them across a restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        super().__init__("redis-server", directory / "redis.log")
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        self._spawn(
            [binary, *where, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        )
        await _until(self._pong, self, timeout_s)

    def _pong(self) -> bool:
        return answers_ping(self.port)


class NodeProcess(Process):
    """``python -m livecommerce serve`` on loopback; may be started again after a kill."""

    def __init__(
        self,
        node_id: str,
        port: int,
        database_url: str,
        redis_url: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        demo: bool = False,
    ) -> None:
        super().__init__(node_id, log_dir / f"{node_id}.log")
        self.node_id = node_id
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.database_url = database_url
        self.redis_url = redis_url
        self.env = env
        self.demo = demo

    def spawn(self) -> None:
        args = [sys.executable, "-m", "livecommerce", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--node-id", self.node_id]
        args += ["--database", self.database_url, "--redis", self.redis_url]
        self._spawn(args + (["--demo"] if self.demo else []), self.env)

    async def ready(self, timeout_s: float = 30.0) -> None:
        await _http_ok(self.url + "/readyz", self, timeout_s)

    async def start(self, timeout_s: float = 30.0) -> None:
        self.spawn()
        await self.ready(timeout_s)


class Nginx(Process):
    """A private nginx in the foreground (``daemon off``) with its own prefix directory."""

    def __init__(
        self, prefix: Path, port: int, upstreams: Sequence[str], *, sticky: bool = False
    ) -> None:
        super().__init__("nginx", prefix / "nginx.out")
        self.prefix = prefix
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.upstreams = list(upstreams)
        self.sticky = sticky
        self.site = prefix / "livecommerce.conf"
        self.conf = prefix / "nginx.conf"

    def write_config(self) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.site.write_text(
            render_site(f"127.0.0.1:{self.port}", self.upstreams, sticky=self.sticky)
        )
        self.conf.write_text(render_main(self.prefix, self.site))

    def command(self) -> list[str]:
        """nginx with this prefix and config (Debian keeps it in /usr/sbin, which a normal
        user's PATH may lack)."""
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        base = [binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log")]
        return [*base, "-c", str(self.conf)]

    def check_config(self) -> None:
        """Write the config and have nginx test it (``nginx -t``)."""
        self.write_config()
        test = subprocess.run(
            [*self.command(), "-t", "-q"], capture_output=True, text=True, check=False
        )
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected {self.conf}:\n{test.stderr}")

    async def start(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self.check_config)
        self._spawn([*self.command(), "-g", "daemon off;"])
        await _http_ok(self.url + "/healthz", self, timeout_s)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        # SIGTERM is nginx's fast shutdown; SIGQUIT (graceful) would wait for every open
        # WebSocket to finish.
        super().stop(sig, timeout_s)


# -- the cluster ------------------------------------------------------------------------


class Cluster:
    """redis-server (unless ``redis_url`` names one), ``nodes`` nodes and nginx, all under
    ``workdir``. ``await start()``; ``stop()`` undoes whatever was started."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 3,
        port: int | None = None,
        node_ports: Sequence[int] | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
        sticky: bool = False,
        env: Mapping[str, str] | None = None,
        demo: bool = False,
        log: Log = _quiet,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.workdir = workdir.resolve()
        self.log = log
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.workdir / 'cluster.db'}"
        self.redis = None if redis_url else RedisProcess(self.workdir / "redis")
        self.redis_url = redis_url or (self.redis.url if self.redis else "")
        ports = list(node_ports) if node_ports else [free_port() for _ in range(nodes)]
        if len(ports) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes} ports, got {ports}")
        node_env = self._node_env(env if env is not None else os.environ)
        self.nodes = [
            NodeProcess(
                f"n{i + 1}",
                p,
                self.database_url,
                self.redis_url,
                node_env,
                self.workdir / "logs",
                demo=demo and i == 0,
            )
            for i, p in enumerate(ports)
        ]
        self.nginx = Nginx(
            self.workdir / "nginx",
            port or free_port(),
            [f"127.0.0.1:{p}" for p in ports],
            sticky=sticky,
        )

    @property
    def url(self) -> str:
        """Where clients connect: nginx."""
        return self.nginx.url

    def _node_env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if not env.get("LIVECOMMERCE_AUTH__SECRET"):
            # One secret for every node, kept with the cluster's data so tokens outlive a
            # restart (nodes left to generate their own could race on a fresh database).
            path = self.workdir / "auth-secret"
            if not path.exists():
                self.workdir.mkdir(parents=True, exist_ok=True)
                path.write_text(secrets.token_urlsafe(48))
                path.chmod(0o600)
            env["LIVECOMMERCE_AUTH__SECRET"] = path.read_text().strip()
        return env

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            self.stop()
            raise

    async def _start(self) -> None:
        from livecommerce.persistence.migrate import migrate

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.redis is not None:
            self.log(f"starting redis-server on 127.0.0.1:{self.redis.port} (append-only)")
            await self.redis.start()
        self.log(f"migrating {self.database_url}")
        await migrate(self.database_url)
        ports = ", ".join(str(n.port) for n in self.nodes)
        self.log(f"starting {len(self.nodes)} nodes on 127.0.0.1:{{{ports}}}")
        for node in self.nodes:
            node.spawn()
        await asyncio.gather(*(node.ready() for node in self.nodes))
        self.log(f"starting nginx on {self.nginx.url} ({self.nginx.conf})")
        await self.nginx.start()

    def stop(self) -> None:
        """nginx, then every node (SIGTERM together; SIGKILL after 15 s), then Redis."""
        self.nginx.stop()
        for node in self.nodes:
            node.send(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()

    async def demo_lines(self, timeout_s: float = 10.0) -> list[str]:
        """What ``serve --demo`` printed on the first node, with nginx's address."""
        first = self.nodes[0]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = first.log_path.read_text(errors="replace")
            if "demo ready" in text:
                lines = text[text.rindex("livecommerce demo ready") :].splitlines()[:5]
                return [line.replace(first.url, self.url) for line in lines]
            await asyncio.sleep(0.1)
        return []


# -- command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    parser.add_argument(
        "--dir", type=Path, default=ROOT / "var" / "cluster", help="data and logs (var/cluster)"
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("LIVECOMMERCE_DATABASE_URL") or None,
        help="shared database URL (default: $LIVECOMMERCE_DATABASE_URL, else a SQLite file)",
    )
    parser.add_argument(
        "--sticky",
        action="store_true",
        help="balance by client address (needed for HTTP long-polling clients)",
    )
    return parser


def _progress(line: str) -> None:
    print(f"» {line}", flush=True)


async def run(args: argparse.Namespace) -> int:
    node_ports = [args.port + 1 + i for i in range(args.nodes)]
    cluster = Cluster(
        args.dir,
        nodes=args.nodes,
        port=args.port,
        node_ports=node_ports,
        database_url=args.database,
        sticky=args.sticky,
        demo=True,
        log=_progress,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(cluster.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 130
        starting.result()
        lines = await cluster.demo_lines()
        print("\n".join(lines or [f"livecommerce cluster ready on {cluster.url}"]))
        for node in cluster.nodes:
            print(f"  node {node.node_id}:     {node.url}  (log: {node.log_path})")
        print(f"  data and logs: {cluster.workdir}\nCtrl-C stops everything.", flush=True)
        gone: set[str] = set()
        while not stop.is_set():
            # nginx or Redis gone ends the cluster; a node gone is news (killing one to
            # watch its clients move to the others is a fair thing to try).
            for process in (cluster.nginx, *([cluster.redis] if cluster.redis else [])):
                process.check_running()
            for node in cluster.nodes:
                if not node.alive and node.node_id not in gone:
                    gone.add(node.node_id)
                    code = node.proc.returncode if node.proc else None
                    _progress(f"{node.node_id} exited ({code}); see {node.log_path}")
            if len(gone) == len(cluster.nodes):
                raise RuntimeError("every node has exited")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), 1.0)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stopping.cancel()
        _progress("stopping nginx, the nodes, redis-server")
        cluster.stop()
        _progress("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.nodes < 1:
        raise SystemExit("--nodes must be at least 1")
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
