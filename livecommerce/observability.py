"""Prometheus metrics and structured logging set-up.

Each app gets its own CollectorRegistry so several apps in one test process don't clash.
Every exported series carries a ``node`` label, added at scrape time, so scrapes of several
nodes (or one scrape through the balancer) say which node they came from.

Hot paths hold label children bound once (``labels()`` is a locked dict lookup: as dear as
the write it counts); the values nobody needs between scrapes (connections, queue depths)
are read when Prometheus asks, never maintained on the way.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from livecommerce.features.payments.provider import PaymentProvider, PaymentResult

log = structlog.get_logger(__name__)

# ``*_created`` series double the scrape and nothing here alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Socket events whose outcomes are buys: event -> ``kind`` label of livecommerce_buys_total.
BUY_EVENTS = {
    "flashsale:buy": "flashsale",
    "groupbuy:open": "groupbuy",
    "groupbuy:join": "groupbuy",
}
#: A refused ``comment:send`` is a dropped comment, its ack code the reason.
COMMENT_SEND = "comment:send"
#: A value read at scrape time: one number, or label value -> number.
Reading = float | Mapping[str, float]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_ITEMS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class _Watched(Collector):
    """A gauge whose value(s) are read when scraped."""

    def __init__(self, name: str, doc: str, read: Callable[[], Reading], label: str | None):
        self.name, self.doc, self.read, self.label = name, doc, read, label

    def collect(self) -> Iterable[Metric]:
        try:
            value = self.read()
        except Exception as exc:  # one bad reading must not take the whole scrape down
            log.warning("metric_read_failed", metric=self.name, error=repr(exc))
            return
        if self.label is None:
            assert not isinstance(value, Mapping)
            yield GaugeMetricFamily(self.name, self.doc, value=float(value))
            return
        assert isinstance(value, Mapping)
        family = GaugeMetricFamily(self.name, self.doc, labels=[self.label])
        for key, number in sorted(value.items()):
            family.add_metric([key], float(number))
        yield family


class _NodeLabelled(Collector):
    """The registry as scraped: every sample with ``node`` first among its labels."""

    def __init__(self, registry: CollectorRegistry, node_id: str) -> None:
        self.registry, self.node_id = registry, node_id

    def collect(self) -> Iterable[Metric]:
        node = self.node_id
        for metric in self.registry.collect():  # fresh Metric objects on every collect
            metric.samples = [
                sample._replace(labels={"node": node, **sample.labels}) for sample in metric.samples
            ]
            yield metric


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = r = CollectorRegistry()
        self.node_id = node_id
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        self._scraped = _NodeLabelled(r, node_id)
        self.node_info = Info("livecommerce_node", "This node: its engine", registry=r)
        self.disconnects = Counter(
            "livecommerce_disconnects",
            "Socket.IO connections closed, by Socket.IO's reason",
            ["reason"],
            registry=r,
        )
        self.events = Counter(
            "livecommerce_events",
            "Socket events handled, by name and outcome (ok, an error code, or internal)",
            ["event", "outcome"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "livecommerce_ack_seconds",
            "Time from receiving an event to its ack",
            ["event"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.buys = Counter(
            "livecommerce_buys",
            "Flash-sale buys and group-buy seats (open, join) by outcome: ok or the error code",
            ["kind", "outcome"],
            registry=r,
        )
        self.payments = Counter(
            "livecommerce_payments",
            "Payment provider calls by operation (charge, refund) and outcome "
            "(ok, declined, error)",
            ["op", "outcome"],
            registry=r,
        )
        self.payment_latency = Histogram(
            "livecommerce_payment_seconds",
            "Time the payment provider took to answer",
            ["op"],
            buckets=_SECONDS,
            registry=r,
        )
        self.frames = Counter(
            "livecommerce_frames",
            "Frames written to connections: direct (pre-encoded, straight to the socket), "
            "thread (a fan-out sent by the send thread outside the GIL) or queued (through "
            "Engine.IO's queue: polling, compression, or a busy writer)",
            ["path"],
            registry=r,
        )
        self.slow_cut = Counter(
            "livecommerce_slow_consumers_cut",
            "Connections cut off because they stopped reading",
            registry=r,
        )
        self.comment_publish_items = Histogram(
            "livecommerce_comment_publish_items",
            "Comments per batch published by this node (what its senders sent in one "
            "publish_ms window of a room)",
            buckets=_ITEMS,
            registry=r,
        )
        self.comment_batch_items = Histogram(
            "livecommerce_comment_batch_items",
            "Comments per room per delivery tick on this node (before sampling)",
            buckets=_ITEMS,
            registry=r,
        )
        self.comment_frames = Counter(
            "livecommerce_comment_frames",
            "comment:batch frames handed to this node's connections (one per viewer per tick)",
            registry=r,
        )
        self.comments_dropped = Counter(
            "livecommerce_comments_dropped",
            "Comments not delivered, by reason: sampled (left out of a tick's shared frame, "
            "once per room per node), slow_consumer (in a frame for a connection being cut "
            "off), or the code a refused comment:send was answered with (rate_limited, "
            "muted, blocked, ...)",
            ["reason"],
            registry=r,
        )
        self.timer_lag = Histogram(
            "livecommerce_timer_lag_seconds",
            "How late a durable timer fired: handler start minus due time",
            ["kind"],
            buckets=_LAG,
            registry=r,
        )
        self.timer_runs = Counter(
            "livecommerce_timer_runs",
            "Durable timer handler runs on this node by kind and outcome (ok, failed)",
            ["kind", "outcome"],
            registry=r,
        )
        self.log_entries = Counter(
            "livecommerce_log_entries",
            "Durable-log entries (orders, comments, group buys) written to SQL by this node, "
            "by log and outcome (written, failed: handed back and retried)",
            ["log", "outcome"],
            registry=r,
        )
        self.log_write_latency = Histogram(
            "livecommerce_log_write_seconds",
            "Time to write one batch of a durable log to SQL",
            ["log"],
            buckets=_SECONDS,
            registry=r,
        )
        self.http = Counter(
            "livecommerce_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        # Series that rates and alerts divide by exist from the start, at 0.
        for kind in ("flashsale", "groupbuy"):
            for outcome in ("ok", "sold_out", "unavailable", "internal"):
                self.buys.labels(kind, outcome)
        for op, outcome in (("charge", "ok"), ("charge", "declined"), ("charge", "error")):
            self.payments.labels(op, outcome)
        self.payments.labels("refund", "ok")
        self.payments.labels("refund", "error")
        self.sampled_out = self.comments_dropped.labels("sampled")
        self.cut_comments = self.comments_dropped.labels("slow_consumer")
        self._event_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._timer_children: dict[tuple[str, bool], tuple[Any, Any]] = {}

    # -- recording ----------------------------------------------------------------------

    def event_done(self, event: str, outcome: str, seconds: float) -> None:
        """One socket event answered; ``outcome`` is ok, its error code, or internal."""
        children = self._event_children.get((event, outcome))
        if children is None:
            children = self._event_children[(event, outcome)] = self._bind(event, outcome)
        count, latency, business = children
        count.inc()
        latency.observe(seconds)
        if business is not None:
            business.inc()

    def _bind(self, event: str, outcome: str) -> tuple[Any, Any, Any]:
        business = None
        if event in BUY_EVENTS:
            business = self.buys.labels(BUY_EVENTS[event], outcome)
        elif event == COMMENT_SEND and outcome != "ok":
            business = self.comments_dropped.labels(outcome)
        return self.events.labels(event, outcome), self.ack_latency.labels(event), business

    def timer_ran(self, kind: str, lag_s: float | None, ok: bool) -> None:
        """Engine hook: a durable timer's handler ran (``lag_s`` None: due time unknown)."""
        children = self._timer_children.get((kind, ok))
        if children is None:
            outcome = "ok" if ok else "failed"
            children = self.timer_runs.labels(kind, outcome), self.timer_lag.labels(kind)
            self._timer_children[(kind, ok)] = children
        runs, lag = children
        runs.inc()
        if lag_s is not None:
            lag.observe(max(0.0, lag_s))

    def log_written(self, name: str, entries: int, seconds: float, ok: bool) -> None:
        """Engine hook: a batch of a durable log went to its handler (the SQL writer)."""
        self.log_entries.labels(name, "written" if ok else "failed").inc(entries)
        self.log_write_latency.labels(name).observe(seconds)

    def disconnected(self, reason: object) -> None:
        self.disconnects.labels(str(reason or "unknown").replace(" ", "_")).inc()

    def count_payments(self, provider: PaymentProvider) -> PaymentProvider:
        """``provider``, with its answers counted (livecommerce_payments_total)."""
        return _CountedProvider(provider, self)

    def watch(
        self, name: str, doc: str, read: Callable[[], Reading], label: str | None = None
    ) -> None:
        """Expose a gauge read at scrape time: one value, or (``label``) one per key."""
        self.registry.register(_Watched(name, doc, read, label))

    def render(self) -> bytes:
        return generate_latest(self._scraped)


class _CountedProvider:
    def __init__(self, inner: PaymentProvider, metrics: Metrics) -> None:
        self.inner, self.metrics = inner, metrics

    def _record(self, op: str, outcome: str, started: float) -> None:
        self.metrics.payments.labels(op, outcome).inc()
        self.metrics.payment_latency.labels(op).observe(time.perf_counter() - started)

    async def _timed(self, op: str, call: Awaitable[PaymentResult]) -> PaymentResult:
        started = time.perf_counter()
        try:
            result = await call
        except Exception:
            self._record(op, "error", started)
            raise
        self._record(op, "ok" if result.ok else "declined", started)
        return result

    async def charge(
        self, *, order_id: str, user_id: str, user_name: str, amount_cents: int
    ) -> PaymentResult:
        return await self._timed(
            "charge",
            self.inner.charge(
                order_id=order_id, user_id=user_id, user_name=user_name, amount_cents=amount_cents
            ),
        )

    async def refund(
        self, *, order_id: str, user_id: str, amount_cents: int, reason: str
    ) -> PaymentResult:
        return await self._timed(
            "refund",
            self.inner.refund(
                order_id=order_id, user_id=user_id, amount_cents=amount_cents, reason=reason
            ),
        )

    async def charged(self, order_id: str) -> bool:
        return await self.inner.charged(order_id)


# -- logging ------------------------------------------------------------------------------


#: The ids of the socket event being handled, computed only when a line is logged: the
#: dispatcher sets a callable per event (cheap), not a dozen context variables (which cost
#: 6 % of a flash-sale buy's CPU when they were bound eagerly).
EVENT_LOG_CONTEXT: ContextVar[Callable[[], Mapping[str, Any]] | None] = ContextVar(
    "livecommerce_event_log_context", default=None
)


def merge_event_context(
    _: Any, __: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    ids = EVENT_LOG_CONTEXT.get()
    if ids is not None:
        for key, value in ids().items():
            event.setdefault(key, value)
    return event


def _static(fields: Mapping[str, str]) -> structlog.types.Processor:
    def add(_: Any, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


_NOISY = ("aiohttp.access", "engineio.server", "socketio.server", "alembic.runtime.plugins")


#: The level configure_logging set: hot paths check it before building a line that would
#: be dropped (a flood of refusals at info costs ~1 µs each through structlog's proxy).
LOG_LEVEL = logging.NOTSET


def _set_level(name: str) -> int:
    global LOG_LEVEL
    LOG_LEVEL = int(logging.getLevelName(name.upper()))
    return LOG_LEVEL


def configure_logging(level: str = "info", json: bool = False, **static: str) -> None:
    """structlog on top of stdlib logging: one line per event, JSON when ``json``.

    ``static`` fields (``node``) go on every line. Request-scoped ids (``sid``, ``user_id``,
    ``room_id``, ``request_id``) come from structlog's contextvars, bound by the socket
    dispatcher and the HTTP middleware. Lines from stdlib loggers (aiohttp, SQLAlchemy,
    alembic) go through the same processors and renderer, so a JSON log is all JSON."""
    shared: list[structlog.types.Processor] = [
        _static(static),
        structlog.contextvars.merge_contextvars,
        merge_event_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_set_level(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
