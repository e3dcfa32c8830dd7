"""One typed Settings object: config/default.toml < --config FILE < environment < flags."""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"
ENV_PREFIX = "LIVECOMMERCE_"
#: The short environment names PROTOCOL.md promises, mapped to (section, key).
ENV_SHORT: dict[str, tuple[str, str]] = {
    "PORT": ("server", "port"),
    "HOST": ("server", "host"),
    "NODE_ID": ("server", "node_id"),
    "REDIS_URL": ("redis", "url"),
    "DATABASE_URL": ("database", "url"),
    "SECRET": ("auth", "secret"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    node_id: str = ""
    log_level: str = "info"
    log_json: bool = False


class RedisSettings(_Section):
    #: One server (``redis://host:6379/0``); with ``cluster``, Redis Cluster seed nodes,
    #: comma-separated (``redis://h1:6379,redis://h2:6379``). Empty: in-process engine.
    url: str = ""
    #: A Redis Cluster (>= 7.0): commands by hash slot, sharded pub/sub per room.
    cluster: bool = False


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/livecommerce.db"
    sqlite_busy_timeout_ms: int = 5000


class AuthSettings(_Section):
    secret: str = ""
    token_ttl_s: int = Field(604800, gt=0)


class EngineSettings(_Section):
    history_size: int = Field(500, ge=1)
    presence_ttl_s: float = Field(6.0, gt=0)
    presence_refresh_s: float = Field(1.5, gt=0)
    online_interval_s: float = Field(1.0, gt=0)
    timer_poll_s: float = Field(0.1, gt=0)
    timer_lease_s: float = Field(30.0, gt=0)


class PaymentSettings(_Section):
    provider: str = Field("sandbox", pattern="^sandbox$")
    #: The sandbox declines buyers whose display name starts with this (empty: never).
    sandbox_decline_prefix: str = ""
    sandbox_latency_ms: int = Field(0, ge=0)
    #: Simulated latency of a refund (failure drills: a node killed mid-settlement).
    sandbox_refund_latency_ms: int = Field(0, ge=0)


class CommentSettings(_Section):
    #: Delivery tick: each viewer gets at most one comment:batch frame per tick.
    tick_ms: int = Field(100, ge=10, le=1000)
    #: Comments sent on this node cross the engine together at most this often.
    publish_ms: int = Field(20, ge=1, le=500)
    #: Most comments a viewer receives per second; above it the node samples.
    viewer_rate: int = Field(30, ge=1, le=10_000)
    #: Per-user send rate (host and staff are exempt) and its burst.
    rate_per_s: float = Field(1.0, gt=0)
    burst: int = Field(3, ge=1)
    max_len: int = Field(100, ge=1, le=1000)
    #: Global banned words (each room adds its own with mod:banned_words).
    banned_words: list[str] = []
    recent: int = Field(50, ge=0, le=500)
    #: Rolling window of the keyword counts, in minutes.
    keyword_window_min: int = Field(5, ge=1, le=60)


class LikeSettings(_Section):
    #: like:send events per second per connection (each carries up to 100 taps).
    rate_per_s: float = Field(10.0, gt=0)
    burst: int = Field(20, ge=1)
    #: like:total is broadcast at most this often (cluster-wide, roughly).
    broadcast_ms: int = Field(250, ge=50)


class TransportSettings(_Section):
    #: Frames queued for a connection (Engine.IO queue) before it is cut off as too slow.
    out_queue_max: int = Field(256, ge=4)
    #: Bytes waiting in a connection's socket buffer before it is cut off as too slow.
    out_buffer_max: int = Field(1 << 20, ge=4096)
    #: SO_SNDBUF for WebSocket connections (0: the kernel's default, which autotunes).
    ws_sndbuf: int = Field(0, ge=0)
    #: permessage-deflate. Off: frames are encoded once and written as-is to every viewer.
    ws_compression: bool = False
    #: WebSocket clients (``transports: ["websocket"]``) served by livecommerce's own
    #: Engine.IO path (transport/wire.py: a protocol object per connection, no tasks)
    #: rather than python-socketio's. Long-polling is python-socketio's either way; with
    #: compression on, so is WebSocket.
    lean_websocket: bool = True
    #: A fan-out (a comment tick, a room broadcast) to at least this many lean WebSockets
    #: is sent by a thread of its own outside the GIL (transport/offload.py), so the loop
    #: goes on serving events meanwhile. 0: always inline.
    fanout_thread_min: int = Field(256, ge=0)


class LimitSettings(_Section):
    """Abuse limits, enforced per node (token buckets in memory: no Redis round trip on the
    hot path). With N nodes behind a balancer a client spread over them gets up to N× these;
    the edge (nginx ``limit_req``/``limit_conn``) is where a cluster-wide cap belongs."""

    #: Peers whose X-Forwarded-For is believed (the balancer). Anyone else's address is
    #: taken as is. Per-IP limits are per *client* address, found through these proxies.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]
    #: New Socket.IO connections per client IP (carrier-grade NAT puts many viewers
    #: behind one address: keep these generous).
    connect_per_ip_rate: float = Field(50.0, gt=0)
    connect_per_ip_burst: int = Field(500, ge=1)
    #: New connections per signed-in user, and how many they may hold at once on a node.
    connect_per_user_rate: float = Field(2.0, gt=0)
    connect_per_user_burst: int = Field(20, ge=1)
    conns_per_user: int = Field(20, ge=1)
    #: Events (any name) per connection, per user (all their connections on a node) and
    #: per client IP. Feature limits (comments, likes) apply on top of these.
    events_per_conn_rate: float = Field(30.0, gt=0)
    events_per_conn_burst: int = Field(60, ge=1)
    events_per_user_rate: float = Field(60.0, gt=0)
    events_per_user_burst: int = Field(120, ge=1)
    events_per_ip_rate: float = Field(2000.0, gt=0)
    events_per_ip_burst: int = Field(10_000, ge=1)
    #: Sign-in and guest-account requests per client IP (password guessing, guest spam).
    auth_per_ip_rate: float = Field(2.0, gt=0)
    auth_per_ip_burst: int = Field(20, ge=1)


#: Limits for load tests and the test suite, where thousands of clients share 127.0.0.1
#: and a scripted client sends far faster than a person. ``loadtest_env()`` gives them as
#: environment variables for a ``livecommerce serve`` process.
LOADTEST_LIMITS: dict[str, float] = {
    f"{what}_{unit}": 1e6
    for what in (
        "connect_per_ip",
        "connect_per_user",
        "events_per_conn",
        "events_per_user",
        "events_per_ip",
        "auth_per_ip",
    )
    for unit in ("rate", "burst")
} | {"conns_per_user": 1e6}


def loadtest_env() -> dict[str, str]:
    return {f"{ENV_PREFIX}LIMITS__{k.upper()}": str(int(v)) for k, v in LOADTEST_LIMITS.items()}


class ShutdownSettings(_Section):
    """SIGTERM: how long a node waits for what it has started before it lets go."""

    #: In-flight events (their acks) and running timer handlers get this long.
    grace_s: float = Field(10.0, ge=0)
    #: Clients are told to reconnect (``server:draining``) and their sockets closed in
    #: waves over this long, so the other nodes are not hit by everyone in one instant.
    spread_s: float = Field(1.0, ge=0)


class DrawSettings(_Section):
    #: Shortest draw window accepted (PROTOCOL.md: 10 s; tests lower it).
    min_duration_s: int = Field(10, ge=1)


class PkSettings(_Section):
    #: Shortest fight accepted (PROTOCOL.md: 30 s; tests lower it).
    min_duration_s: int = Field(30, ge=1)
    #: An invitation nobody answers lapses after this.
    invite_ttl_s: float = Field(30.0, gt=0)
    #: pk:update for score changes at most this often (cluster-wide, roughly).
    update_ms: int = Field(250, ge=50)


class GroupBuySettings(_Section):
    #: Shortest group_ttl_s accepted (PROTOCOL.md: 60 s; tests lower it).
    min_ttl_s: int = Field(60, ge=1)
    #: Compensation coupon credited to each member of a failed group (0: none).
    coupon_cents: int = Field(500, ge=0)


class MetricsSettings(_Section):
    #: metrics:tick to subscribed staff this often.
    tick_ms: int = Field(1000, ge=100, le=60_000)
    #: Rollup period of the persisted history (a minute; tests shorten it).
    rollup_s: int = Field(60, ge=1, le=3600)
    #: sales:notice at most this often per room (cluster-wide).
    notice_ms: int = Field(3000, ge=100)
    #: Each node reports its connection count this often (GET /api/cluster).
    cluster_report_s: float = Field(3.0, gt=0)


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    engine: EngineSettings = EngineSettings()
    payments: PaymentSettings = PaymentSettings()
    comments: CommentSettings = CommentSettings()
    likes: LikeSettings = LikeSettings()
    transport: TransportSettings = TransportSettings()
    limits: LimitSettings = LimitSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    draws: DrawSettings = DrawSettings()
    pk: PkSettings = PkSettings()
    groupbuy: GroupBuySettings = GroupBuySettings()
    metrics: MetricsSettings = MetricsSettings()
    demo: bool = False

    @property
    def node_id(self) -> str:
        return self.server.node_id or f"{socket.gethostname()}-{self.server.port}"

    @property
    def redis_url(self) -> str | None:
        return self.redis.url or None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in ENV_SHORT:
            section, key = ENV_SHORT[rest]
        elif "__" in rest:
            section, key = (part.lower() for part in rest.split("__", 1))
        else:
            continue
        found.setdefault(section, {})[key] = value
    return found


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings: defaults file, then ``config_file``, then ``env``, then ``overrides``.

    ``overrides`` is nested like the TOML file (``{"server": {"port": 9000}}``); ``None``
    values in it are ignored so unset command-line flags do not mask the environment.
    """
    data: dict[str, Any] = {}
    if DEFAULT_CONFIG.exists():
        data = tomllib.loads(DEFAULT_CONFIG.read_text())
    if config_file is not None:
        data = _merge(data, tomllib.loads(Path(config_file).read_text()))
    data = _merge(data, _from_env(os.environ if env is None else env))
    if overrides:
        clean = {
            section: {k: v for k, v in values.items() if v is not None}
            if isinstance(values, Mapping)
            else values
            for section, values in overrides.items()
            if values is not None
        }
        data = _merge(data, clean)
    return Settings.model_validate(data)
