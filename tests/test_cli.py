"""The command line as a user runs it: serve --demo, migrate, user add."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.client import Api
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
    return subprocess.run(
        [sys.executable, "-m", "livecommerce", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_and_user_add(db_url: str) -> None:
    done = _run("migrate", "--database", db_url)
    assert done.returncode == 0, done.stderr
    added = _run(
        "user",
        "add",
        "--username",
        "anchor",
        "--password",
        "pw-123456",
        "--role",
        "host",
        "--database",
        db_url,
    )
    assert added.returncode == 0 and "added host anchor" in added.stdout, added.stderr
    again = _run(
        "user",
        "add",
        "--username",
        "anchor",
        "--password",
        "pw-123456",
        "--role",
        "host",
        "--database",
        db_url,
    )
    assert again.returncode == 2 and "conflict" in again.stderr
    bad = _run(
        "user", "add", "--username", "x", "--password", "1", "--role", "host", "--database", db_url
    )
    assert bad.returncode == 2 and "invalid" in bad.stderr


async def test_serve_demo_prints_logins_and_serves_the_room(
    tmp_path: Path, api_factory: Callable[[str], Api]
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
    env.update(
        {
            "LIVECOMMERCE_PORT": str(port),  # the environment form of --port
            "LIVECOMMERCE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livecommerce",
        "serve",
        "--demo",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("staff login" in line for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "serve exited:\n" + "".join(lines)
            lines.append(line.decode())
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}/" in text and "host / host-demo" in text
        api = api_factory(f"http://127.0.0.1:{port}")
        for _ in range(50):
            status, _ = await api.request("GET", "/readyz")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        rooms = (await api.ok("GET", "/api/rooms"))["rooms"]
        assert len(rooms) == 1 and rooms[0]["status"] == "live"
        products = (await api.ok("GET", f"/api/rooms/{rooms[0]['id']}/products"))["products"]
        assert len(products) == 3
        token = await api.login("host", "host-demo")
        assert token
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode is not None
