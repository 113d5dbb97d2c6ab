"""Optional OpenTelemetry traces (the ``otel`` extra): spans for API requests, worker batches and
outbox sends. Without the extra, or when it is not switched on, nothing of OpenTelemetry is
imported and every helper here is a no-op costing one global read.

Switched on by ``setup_from_env`` (``run``, ``api``, ``dev``) when the extra is installed and the
standard OpenTelemetry variables ask for an exporter: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP), or ``OTEL_TRACES_EXPORTER=console``;
``OTEL_SDK_DISABLED=true`` keeps it off. ``OTEL_SERVICE_NAME`` names the service (default
``segment-worker``). Tests call ``use(provider)`` with an in-memory exporter.

The W3C trace context of an input record (its ``traceparent`` / ``tracestate`` headers) is carried
to the CloudEvents it causes whether or not spans are recorded: it is two header look-ups on records
that have headers at all (``traceparent_of``) and needs nothing of OpenTelemetry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # an opentelemetry Tracer while traces are on
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_MAX_TRACESTATE = 512  # W3C: vendors may drop a longer one; we keep only what fits
MAX_LINKS = 128  # the SDK's default span link limit: a batch links at most this many causes


def enabled() -> bool:
    """Spans are recorded (an SDK tracer provider is in use)."""
    return _tracer is not None


def use(provider: Any | None) -> None:
    """Record spans with ``provider`` (an SDK ``TracerProvider``), or stop (``None``)."""
    global _tracer
    _tracer = provider.get_tracer("segment_worker") if provider is not None else None


def setup_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider when the ``otel`` extra is present and the environment asks
    for an exporter (see the module docstring); answers whether traces are on."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    console = env.get("OTEL_TRACES_EXPORTER", "").lower() == "console"
    otlp = bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if not (console or otlp) or env.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OpenTelemetry variables are set but the otel extra is not installed "
                    "(pip install 'segment-worker[otel]'); no traces")
        return False
    exporter: SpanExporter
    if console:
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp-proto-http "
                        "is not installed; no traces")
            return False
        exporter = OTLPSpanExporter()  # reads the endpoint, headers and timeout from the environment
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "segment-worker")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    return True


def traceparent_of(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, str | None] | None:
    """The valid W3C ``traceparent`` (and ``tracestate``) of a Kafka record's headers, or None."""
    if not headers:
        return None
    parent: str | None = None
    state: str | None = None
    for key, value in headers:
        if key == "traceparent" and value is not None:
            parent = value.decode("ascii", "replace").strip().lower()
        elif key == "tracestate" and value is not None:
            state = value.decode("ascii", "replace").strip()
    if parent is None or _TRACEPARENT.match(parent) is None:
        return None
    return parent, (state if state and len(state) <= _MAX_TRACESTATE else None)


def _context_of(traceparent: str, tracestate: str | None = None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent} | ({"tracestate": tracestate} if tracestate else {})
    return TraceContextTextMapPropagator().extract(carrier)


@contextmanager
def server_span(method: str, path: str, headers: Mapping[str, str]) -> Iterator[Any]:
    """A SERVER span for one HTTP request, child of the caller's ``traceparent`` if it sent one;
    yields the span (``None`` when traces are off) so the caller can name it after routing."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(headers)
    attributes = {"http.request.method": method, "url.path": path}
    with _tracer.start_as_current_span(f"{method}", context=parent, kind=SpanKind.SERVER,
                                       attributes=attributes) as span:
        yield span


@contextmanager
def batch_span(topic: str, partitions: Sequence[int], records: int,
               causes: Sequence[tuple[str, str | None]] = ()) -> Iterator[Any]:
    """A CONSUMER span for one batch of input records, linked to the trace contexts of (at most
    ``MAX_LINKS`` of) its records; yields the span or ``None`` when traces are off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import Link, SpanKind, get_current_span

    links = [Link(get_current_span(_context_of(p, s)).get_span_context()) for p, s in causes[:MAX_LINKS]]
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": records,
        "segment_worker.partitions": list(partitions),
    }
    with _tracer.start_as_current_span(f"process {topic}", kind=SpanKind.CONSUMER, links=links,
                                       attributes=attributes) as span:
        yield span


@contextmanager
def send_span(topic: str, partitions: Sequence[int], messages: int) -> Iterator[Any]:
    """A PRODUCER span around rendering and queueing one chunk of outbox rows; yields the span or
    ``None`` when traces are off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes = {"messaging.system": "kafka", "messaging.operation.type": "send",
                  "messaging.destination.name": topic, "messaging.batch.message_count": messages,
                  "segment_worker.partitions": list(partitions)}
    with _tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                       attributes=attributes) as span:
        yield span


def current_traceparent() -> tuple[str, str | None] | None:
    """The W3C context of the current span (API writers put it on the transitions they cause)."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    parent = carrier.get("traceparent")
    return (parent, carrier.get("tracestate")) if parent else None


def with_trace(cause: dict[str, str]) -> dict[str, str]:
    """``cause`` plus the current span's W3C context (an API call's transitions remember the request
    that caused them, as a worker's remember their input record's); ``cause`` itself when traces
    are off."""
    found = current_traceparent()
    if found is None:
        return cause
    return {**cause, "traceparent": found[0], **({"tracestate": found[1]} if found[1] else {})}
