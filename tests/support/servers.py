"""Real server processes for multi-node tests: ``python -m livecommerce serve`` on free ports,
sharing one redis-server and one SQLite file, and a way to kill -9 one of them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from livecommerce.settings import loadtest_env
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]

#: Fast engine timings so that tests about expiry and failover take seconds, not minutes.
FAST_ENV = {
    "LIVECOMMERCE_ENGINE__PRESENCE_TTL_S": "2.0",
    "LIVECOMMERCE_ENGINE__PRESENCE_REFRESH_S": "0.5",
    "LIVECOMMERCE_ENGINE__ONLINE_INTERVAL_S": "0.3",
    "LIVECOMMERCE_ENGINE__TIMER_POLL_S": "0.05",
    "LIVECOMMERCE_ENGINE__TIMER_LEASE_S": "3.0",
    "LIVECOMMERCE_AUTH__SECRET": "test-secret-shared-by-all-nodes-0123456789",
    "LIVECOMMERCE_PAYMENTS__SANDBOX_DECLINE_PREFIX": "decline-",
    **loadtest_env(),  # every test client connects from 127.0.0.1
    "LIVECOMMERCE_SHUTDOWN__SPREAD_S": "0.2",
}


class ServerProcess:
    def __init__(
        self,
        node_id: str,
        database_url: str,
        redis_url: str | None,
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = env or {}
        self.node_id = node_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_path = log_dir / f"{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 20) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "livecommerce",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database",
            self.database_url,
            "--node-id",
            self.node_id,
        ]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        env.update(FAST_ENV)
        env.update(self.extra_env)
        env["PYTHONPATH"] = str(ROOT)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        await self._wait_ready(timeout)
        return self

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.node_id} exited:\n{self.log_tail()}")
                try:
                    async with session.get(self.url + "/readyz") as res:
                        if res.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.node_id} not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9: no shutdown hooks, leases and presence left to expire."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def add_user(database_url: str, username: str, role: str, password: str = "secret-pw") -> str:
    """Create a user in the nodes' shared database; return a token every node accepts."""
    from livecommerce.auth import Auth
    from livecommerce.persistence.db import Database
    from livecommerce.persistence.repositories import Users

    db = Database(database_url)
    try:
        auth = Auth(Users(db), FAST_ENV["LIVECOMMERCE_AUTH__SECRET"], 3600)
        return auth.issue(await auth.add_user(username, password, role))
    finally:
        await db.close()


def mint_token(user_id: str, name: str) -> str:
    """A viewer token every test node accepts, for load tests with many buyers (tokens are
    verified statelessly, so no database row is needed for a buyer)."""
    from livecommerce.auth import Auth, Principal, Role

    auth = Auth(None, FAST_ENV["LIVECOMMERCE_AUTH__SECRET"], 3600)  # type: ignore[arg-type]
    return auth.issue(Principal(user_id, name, Role.VIEWER))
