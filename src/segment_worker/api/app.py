"""The FastAPI application: ``create_app(settings)`` (CONTRACT §8).

Routes live under ``/v1/workspaces/{ws}`` and need a bearer token; ``/healthz``, ``/readyz``,
``/metrics``, ``/docs``, ``/openapi.json`` and the web console's files (``/console``) do not.
The app opens its PostgreSQL pool, Redis
client and (lazily) Kafka producer in its lifespan, unless given a ``ServiceContext``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from ..config import Settings
from ..service.context import ServiceContext
from ..service.tokens import static_tokens
from ..worker.metrics import build_labels
from . import (
    console_route,
    docs,
    errors,
    observe,
    routes_customers,
    routes_members,
    routes_segments,
    routes_workspace,
)
from .models import ErrorResponse

_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON",
        401: "No or unknown bearer token",
        404: "Not found (or not visible to this token)",
        409: "Conflicts with the current state",
        413: "Too large",
        422: "Invalid request",
    }.items()
}


_UNAVAILABLE = {
    503: {"model": ErrorResponse, "description": "A store (PostgreSQL, Redis or Kafka) is unavailable; retry"}
}


def operation_id(route: APIRoute) -> str:
    """The OpenAPI ``operationId`` of a route: its name (the route function's, unless the route sets
    ``name=``), so generated clients read ``create_segment(...)``. Names are unique (tested)."""
    return route.name


class ApiMetrics:
    """Request counts and latencies, the transitions the API's calls made, build and process
    metrics, in the app's own registry (several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, memory, file descriptors; Linux) and python_info: what the default
        # registry of the worker serves too.
        ProcessCollector(registry=self.registry)
        self.registry.register(PLATFORM_COLLECTOR)
        self.build_info = Info("segment_worker_build", "segment-worker's version and Python's",
                               registry=self.registry)
        self.build_info.info(build_labels())
        self.transitions = Counter(
            "segment_worker_api_transitions",
            "Enter/exit/deleted transitions committed by the API's calls, by kind and cause",
            ["kind", "cause"],
            registry=self.registry,
        )
        # The bounded label values (service.recompute's causes), served before they first count.
        for kind in ("entered", "exited"):
            for cause in ("rules_changed", "manual", "import"):
                self.transitions.labels(kind, cause)
        self.transitions.labels("deleted", "manual")
        self.requests = Counter(
            "segment_worker_api_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "segment_worker_api_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            ["method", "route"],
            buckets=_DURATIONS,
            registry=self.registry,
        )

    def count_transitions(self, tally: Mapping[tuple[str, str], int]) -> None:
        """A committed unit's transitions ((kind, cause) → count; ``ServiceContext.transition_sinks``)."""
        for (kind, cause), n in tally.items():
            self.transitions.labels(kind, cause).inc(n)


def create_app(settings: Settings, context: ServiceContext | None = None) -> FastAPI:
    """The API app for ``settings``; ``context`` (tests, ``dev``) reuses open connections."""
    tokens = static_tokens(settings)  # a malformed SEGMENT_WORKER_API_TOKENS fails at start-up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context if context is not None else await ServiceContext.open(settings)
        app.state.ctx = ctx
        ctx.transition_sinks.append(metrics.count_transitions)
        try:
            yield
        finally:
            ctx.transition_sinks.remove(metrics.count_transitions)
            if context is None:
                await ctx.close()

    app = FastAPI(
        title="segment-worker",
        version="1",
        summary="Real-time customer segments: rules, static lists, CSV import, audiences",
        lifespan=lifespan,
        responses=_ERRORS,  # type: ignore[arg-type]
        generate_unique_id_function=operation_id,
        docs_url=None,  # served by docs.install from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.static_tokens = tokens
    metrics = ApiMetrics()
    app.state.metrics = metrics
    errors.install(app)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.duration.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    for module in (routes_workspace, routes_segments, routes_members, routes_customers):
        # Every workspace route reads PostgreSQL (and most Redis or Kafka): any can answer 503.
        app.include_router(module.router, responses=_UNAVAILABLE)  # type: ignore[arg-type]
    console_route.mount_console(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": ErrorResponse}})
    async def readyz(request: Request) -> JSONResponse:
        """PostgreSQL and Redis answer (503 naming the one that does not)."""
        ctx: ServiceContext = request.app.state.ctx
        checks: dict[str, str] = {}

        async def probe(name: str, call: Callable[[], Awaitable[object]]) -> None:
            try:
                await asyncio.wait_for(call(), timeout=2.0)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(
            probe("postgres", lambda: ctx.pool.fetchval("SELECT 1")), probe("redis", ctx.redis.ping)
        )
        failed = sorted(k for k, v in checks.items() if v != "ok")
        if failed:
            return errors.error_response(503, "unavailable", f"not ready: {', '.join(failed)}", checks)
        return JSONResponse({"status": "ready", "checks": checks})

    @app.get("/metrics", tags=["operations"], response_class=Response, name="metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    docs.install(app)
    observe.install(app)
    return app
