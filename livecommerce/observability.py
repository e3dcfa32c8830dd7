"""Prometheus metrics and structured logging set-up.

Each app gets its own CollectorRegistry so several apps in one test process don't clash.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _Callback(Collector):
    def __init__(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily(self.name, self.doc, value=self.read())


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        self.node_id = node_id
        self.connections = Gauge(
            "livecommerce_connections", "Open Socket.IO connections", registry=self.registry
        )
        self.events = Counter(
            "livecommerce_events",
            "Socket events handled, by name and outcome (ok or error code)",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "livecommerce_ack_seconds",
            "Time from receiving an event to its ack",
            ["event"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.frames = Counter(
            "livecommerce_frames",
            "Frames written to connections: direct (pre-encoded, straight to the socket) or "
            "queued (through Engine.IO's queue: polling, compression, or a busy writer)",
            ["path"],
            registry=self.registry,
        )
        self.slow_cut = Counter(
            "livecommerce_slow_consumers_cut",
            "Connections cut off because they stopped reading",
            registry=self.registry,
        )
        self.comment_batch_items = Histogram(
            "livecommerce_comment_batch_items",
            "Comments per room per delivery tick on this node (before sampling)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.comments_dropped = Counter(
            "livecommerce_comments_dropped",
            "Comments sampled out of the shared frame of a tick (each counted once per room)",
            registry=self.registry,
        )
        self.http = Counter(
            "livecommerce_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    def watch(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Expose a value read at scrape time (rooms held, timers fired...)."""
        self.registry.register(_Callback(name, doc, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def configure_logging(level: str = "info", json: bool = False, **bind: str) -> None:
    """structlog on top of stdlib logging: one line per event, JSON when ``json``."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(**bind)
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s %(message)s")
    for noisy in ("aiohttp.access", "engineio.server", "socketio.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
