"""Prometheus metrics of the worker and its probes (``segment-worker run --metrics-port``).

Each ``WorkerMetrics`` registers into the registry it is given, so several workers can live in
one test process (each with its own ``CollectorRegistry``); the CLI uses the default registry.
"""

from __future__ import annotations

import json
import platform
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

from ..events import DLQ_REASONS
from ..state import Transition

_BATCH_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_DURATIONS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Record timestamp → committed / delivered: ~0.1-0.3 s at the bench's rates (PERFORMANCE.md), up to
# minutes while a backlog drains or after an outage; past 10 min only the count matters.
_END_TO_END = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# The bounded label values, initialised at start so every series is served before it first counts.
END_TO_END_STAGES = ("committed", "sent")


def build_labels() -> dict[str, str]:
    """``version`` (the installed package's) and ``python`` of ``segment_worker_build_info``."""
    try:
        version = package_version("segment-worker")
    except PackageNotFoundError:  # running from a source tree without an install
        version = "unknown"
    return {"version": version, "python": platform.python_version()}


class WorkerMetrics:
    """Every metric the worker exports; names are prefixed ``segment_worker_``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = REGISTRY if registry is None else registry
        self.registry = reg
        self.events_processed = Counter(
            "segment_worker_events_processed",
            "Input records handled, by outcome (applied, dead_lettered, rekeyed, skipped)",
            ["outcome"],
            registry=reg,
        )
        self.dlq_records = Counter(
            "segment_worker_dlq_records",
            "Records sent to the dead-letter topic, by reason: invalid_json, invalid_event, limit, "
            "invalid_value, oversized, poison (parsed but failed alone in the worker)",
            ["reason"],
            registry=reg,
        )
        for reason in DLQ_REASONS:  # every series exists from the start (rate() and alerts see 0)
            self.dlq_records.labels(reason)
        self.tick_failures = Counter(
            "segment_worker_tick_failures",
            "Time-relative re-checks that failed and were skipped while the others went on, by scope "
            "(workspace: one workspace's segments; partition: a partition's whole tick)",
            ["scope"],
            registry=reg,
        )
        for scope in ("workspace", "partition"):
            self.tick_failures.labels(scope)
        self.rekeyed_records = Counter(
            "segment_worker_rekeyed_records",
            "Records whose key was not '<workspace_id>:<customer_id>' of their payload (or that sat in "
            "another partition than the key's), re-published with the right key",
            registry=reg,
        )
        self.batch_size = Histogram(
            "segment_worker_batch_size", "Records per batch", buckets=_BATCH_SIZES, registry=reg
        )
        self.batch_duration = Histogram(
            "segment_worker_batch_duration_seconds",
            "Wall time of one batch, from records in hand to offsets stored",
            buckets=_DURATIONS,
            registry=reg,
        )
        self.transitions = Counter(
            "segment_worker_transitions",
            "Enter/exit transitions committed by this worker, by kind and cause",
            ["kind", "cause"],
            registry=reg,
        )
        self.outbox_sent = Counter(
            "segment_worker_outbox_sent", "CloudEvents delivered to the output topic", registry=reg
        )
        self.outbox_backlog = Gauge(
            "segment_worker_outbox_backlog",
            "Unsent transitions of the partitions this worker owns",
            registry=reg,
        )
        self.consumer_lag = Gauge(
            "segment_worker_consumer_lag",
            "Records between the consumer position and the log end, per owned input partition",
            ["partition"],
            registry=reg,
        )
        self.owned_partitions = Gauge(
            "segment_worker_owned_partitions", "Input partitions this worker owns", registry=reg
        )
        self.fenced = Counter(
            "segment_worker_fenced",
            "Units of work refused because another worker claimed the partition (stale epoch)",
            registry=reg,
        )
        self.ticks = Counter("segment_worker_ticks", "Time-relative re-checks run", registry=reg)
        self.tick_duration = Histogram(
            "segment_worker_tick_duration_seconds",
            "Wall time of one tick over the owned partitions",
            buckets=_DURATIONS,
            registry=reg,
        )
        self.errors = Counter(
            "segment_worker_errors",
            "Failures the worker recovered from, by where they happened",
            ["stage"],
            registry=reg,
        )
        self.end_to_end = Histogram(
            "segment_worker_end_to_end_seconds",
            "From an input record's Kafka timestamp to its batch committed (stage=committed) or to "
            "the delivery of a CloudEvent it caused (stage=sent)",
            ["stage"],
            buckets=_END_TO_END,
            registry=reg,
        )
        self.outbox_oldest_unsent = Gauge(
            "segment_worker_outbox_oldest_unsent_seconds",
            "Age of the oldest unsent outbox row of the partitions this worker owns (0: none)",
            registry=reg,
        )
        self.stuck_partitions = Gauge(
            "segment_worker_stuck_partitions",
            "Owned input partitions with lag and no progress for longer than the stuck bound "
            "(WorkerOptions.stuck_seconds); /healthz fails while any",
            registry=reg,
        )
        self.redis_rebuilds = Counter(
            "segment_worker_redis_rebuilds",
            "Workspaces whose Redis sets had lost data (their marker gone and some set differing "
            "from PostgreSQL: restart, FLUSHALL, failover, a wrong-type key) and were rebuilt",
            registry=reg,
        )
        self.build_info = Info("segment_worker_build", "segment-worker's version and Python's", registry=reg)
        self.build_info.info(build_labels())
        for stage in END_TO_END_STAGES:
            self.end_to_end.labels(stage)
        # Per lane (``lanes``): several consumers of one process share these metrics.
        self._owned: dict[str, int] = {}
        self._stuck: dict[str, int] = {}
        self._backlog: dict[str, int] = {}
        self._oldest: dict[str, float] = {}

    def count_transitions(self, transitions: Iterable[Transition], cause: str | None = None) -> None:
        """Count committed transitions by kind and cause (``cause``, else each one's cause kind).
        Called by the batch and the ticker after their unit committed. One ``labels().inc(n)`` per
        label pair, not per transition: that was ~1.5% of the worker's samples (py-spy, 100k churn
        events)."""
        tally: dict[tuple[str, str], int] = {}
        for t in transitions:
            k = (t.kind, cause or t.cause.get("kind", "event"))
            tally[k] = tally.get(k, 0) + 1
        for (kind, label), n in tally.items():
            self.transitions.labels(kind, label).inc(n)

    def set_owned(self, owner: str, count: int) -> None:
        """Report one lane's owned partitions; the gauge is the process's total."""
        self._owned[owner] = count
        self.owned_partitions.set(sum(self._owned.values()))

    def set_stuck(self, owner: str, count: int) -> None:
        """Report one lane's stuck partitions; the gauge is the process's total."""
        self._stuck[owner] = count
        self.stuck_partitions.set(sum(self._stuck.values()))

    def set_backlog(self, owner: str, rows: int) -> None:
        """Report one lane's unsent outbox rows; the gauge is the process's total."""
        self._backlog[owner] = rows
        self.outbox_backlog.set(sum(self._backlog.values()))

    def set_oldest_unsent(self, owner: str, seconds: float) -> None:
        """Report one lane's oldest unsent outbox row age; the gauge is the process's oldest."""
        self._oldest[owner] = seconds
        self.outbox_oldest_unsent.set(max(self._oldest.values()))

    def forget_lag(self, partitions: set[int] | frozenset[int]) -> None:
        """Drop the lag series of partitions this worker no longer owns."""
        for p in partitions:
            try:
                self.consumer_lag.remove(str(p))
            except KeyError:
                pass


# (ok, detail) of a liveness or readiness check; called from the server's thread.
Check = Callable[[], tuple[bool, str]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


def health_app(
    registry: CollectorRegistry, *, health: Check | None = None, ready: Check | None = None
) -> Any:
    """A WSGI app: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (200 or 503 with a JSON
    ``{"status", "detail"}``); anything else is 404."""
    metrics_app = make_wsgi_app(registry)
    checks = {"/healthz": health, "/readyz": ready}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path in checks:
            check = checks[path]
            ok, detail = check() if check is not None else (True, "ok")
            body = json.dumps({"status": "ok" if ok else "unavailable", "detail": detail}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def serve(
    port: int,
    registry: CollectorRegistry | None = None,
    *,
    health: Check | None = None,
    ready: Check | None = None,
) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``0.0.0.0:<port>`` from a daemon thread
    (so a probe still answers, and can say so, when the event loop is stuck)."""
    app = health_app(REGISTRY if registry is None else registry, health=health, ready=ready)
    httpd = make_server("0.0.0.0", port, app, _Server, _QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
