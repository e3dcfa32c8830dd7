"""Abuse limits at the edge of a node: connections and events per client IP and per user.

Token buckets held in memory, per node (see ``LimitSettings``): checking one costs a dict
lookup and a little arithmetic, never a Redis round trip, so every event can afford it.
Feature limits that must hold cluster-wide (comment and like rates per user) live in the
engine, on top of these.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from livecommerce import errors
from livecommerce.settings import LimitSettings

#: Buckets idle this long are full again and may be forgotten.
_SWEEP_EVERY_S = 30.0


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``; each take costs one."""

    rate: float
    burst: int
    tokens: float = 0.0
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when allowed (a token is spent), else the seconds until one is available."""
        tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate

    def full_at(self) -> float:
        return self.at + (self.burst - self.tokens) / self.rate


class Buckets:
    """One bucket per key (a user id, an IP), made full on first use; full ones are
    forgotten now and then so the map holds only recently active keys."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, Bucket] = {}
        self._swept = 0.0

    def take(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.rate, self.burst, self.burst, now)
        wait = bucket.take(now)
        if now - self._swept > _SWEEP_EVERY_S:
            self._sweep(now)
        return wait

    def _sweep(self, now: float) -> None:
        self._swept = now
        self._buckets = {k: b for k, b in self._buckets.items() if b.full_at() > now}

    def __len__(self) -> int:
        return len(self._buckets)


def rate_limited(wait_s: float, what: str) -> errors.DomainError:
    return errors.RateLimited(
        f"too many {what}; slow down", retry_after_ms=max(1, math.ceil(wait_s * 1000))
    )


class Limits:
    """The node's limits. ``check_*`` raise ``rate_limited`` (with ``retry_after_ms``)."""

    def __init__(self, settings: LimitSettings) -> None:
        s = settings
        self.settings = s
        self.trusted = _networks(s.trusted_proxies)
        self.connect_ip = Buckets(s.connect_per_ip_rate, s.connect_per_ip_burst)
        self.connect_user = Buckets(s.connect_per_user_rate, s.connect_per_user_burst)
        self.events_user = Buckets(s.events_per_user_rate, s.events_per_user_burst)
        self.events_ip = Buckets(s.events_per_ip_rate, s.events_per_ip_burst)
        self.auth_ip = Buckets(s.auth_per_ip_rate, s.auth_per_ip_burst)

    def conn_bucket(self) -> Bucket:
        """The per-connection event bucket (kept on the connection, gone with it)."""
        s = self.settings
        return Bucket(
            s.events_per_conn_rate,
            s.events_per_conn_burst,
            s.events_per_conn_burst,
            time.monotonic(),
        )

    def check_connect(self, ip: str, user_id: str | None, held: int) -> None:
        """A new connection from ``ip`` (signed in as ``user_id``, who holds ``held``
        connections on this node already)."""
        now = time.monotonic()
        if wait := self.connect_ip.take(ip, now):
            raise rate_limited(wait, "connections from this address")
        if user_id is None:
            return
        # the attempt costs a token even when the cap refuses it: hammering is not free
        if wait := self.connect_user.take(user_id, now):
            raise rate_limited(wait, "connections for this user")
        if held >= self.settings.conns_per_user:
            raise errors.RateLimited(
                f"at most {self.settings.conns_per_user} connections per user",
                retry_after_ms=1000,
            )

    def check_event(self, conn_bucket: Bucket, ip: str, user_id: str | None) -> None:
        now = time.monotonic()
        if wait := conn_bucket.take(now):
            raise rate_limited(wait, "events on this connection")
        if user_id is not None and (wait := self.events_user.take(user_id, now)):
            raise rate_limited(wait, "events from this user")
        if wait := self.events_ip.take(ip, now):
            raise rate_limited(wait, "events from this address")

    def check_auth(self, ip: str) -> None:
        if wait := self.auth_ip.take(ip, time.monotonic()):
            raise rate_limited(wait, "sign-in requests from this address")

    def client_ip(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy — then the
        right-most X-Forwarded-For entry that is not one (left-most ones are the client's
        to forge). Falls back to X-Real-IP, then to the peer."""
        peer = peer or ""
        if not _within(peer, self.trusted):
            return peer
        forwarded = headers.get("X-Forwarded-For", "")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _within(hop, self.trusted):
                return hop
        real = headers.get("X-Real-IP", "").strip()
        return real if real and _parse(real) is not None else peer


def _networks(entries: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in net for net in networks)
