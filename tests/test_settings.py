"""Settings precedence: config/default.toml < --config FILE < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from livecommerce.settings import load_settings


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.server.port == 8080 and s.redis_url is None
    assert s.database.url.startswith("sqlite+aiosqlite:///")
    assert s.node_id.endswith("-8080")


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9000\nnode_id = "from-file"\n[engine]\nhistory_size = 7\n')
    s = load_settings(cfg, env={})
    assert (s.server.port, s.node_id, s.engine.history_size) == (9000, "from-file", 7)
    env = {
        "LIVECOMMERCE_PORT": "9100",
        "LIVECOMMERCE_REDIS_URL": "redis://h:1/0",
        "LIVECOMMERCE_NODE_ID": "from-env",
        "LIVECOMMERCE_ENGINE__HISTORY_SIZE": "9",
        "LIVECOMMERCE_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "OTHER": "ignored",
    }
    s = load_settings(cfg, env=env)
    assert (s.server.port, s.node_id, s.engine.history_size) == (9100, "from-env", 9)
    assert s.redis_url == "redis://h:1/0" and s.database.url == "sqlite+aiosqlite:///x.db"
    s = load_settings(cfg, env=env, overrides={"server": {"port": 9200, "node_id": None}})
    assert s.server.port == 9200 and s.node_id == "from-env"  # an unset flag masks nothing


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_settings(env={"LIVECOMMERCE_PORT": "not-a-port"})
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValidationError):
        load_settings(cfg, env={})
