"""Request context in the API: an X-Request-ID echoed (or made), on the request's log lines; with
traces on (SDK in-memory exporter), one SERVER span per request, child of the caller's
``traceparent``, named by its route."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from helpers.service import seed, tags
from segment_worker import tracing
from segment_worker.api.observe import path_fields, request_id_of
from segment_worker.logs import current_context
from segment_worker.service.context import ServiceContext

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


async def test_request_ids_are_echoed_or_made(api: httpx.AsyncClient) -> None:
    given = await api.get("/segments", headers={"X-Request-ID": "abc-123"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "abc-123"
    made = await api.get("/segments", headers={"X-Request-ID": "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    error = await api.get("/segments/not-a-uuid", headers={"X-Request-ID": "err-1"})
    assert error.status_code == 404 and error.headers["x-request-id"] == "err-1"
    assert current_context() == {}  # nothing leaks into the caller's context


def test_path_fields_and_ids() -> None:
    # ASGI paths are already percent-decoded: taken as they are.
    fields = path_fields("/v1/workspaces/w%41/segments/s-1/members")
    assert fields == {"workspace": "w%41", "segment_id": "s-1"}
    assert path_fields("/v1/workspaces/w1/segments/defaults") == {"workspace": "w1"}
    assert path_fields("/healthz") == {}
    assert request_id_of([(b"x-request-id", b"ok.id:1")]) == "ok.id:1"
    assert request_id_of([(b"x-request-id", b"a\nb")]) != "a\nb"


async def test_a_server_span_per_request_child_of_the_callers_trace(
    api: httpx.AsyncClient, http: httpx.AsyncClient, spans: InMemorySpanExporter, workspace_id: str
) -> None:
    parent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    r = await api.get("/segments", headers={"traceparent": parent})
    assert r.status_code == 200
    await api.get("/segments/not-a-uuid")
    await http.get("/healthz")
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == [
        "GET /v1/workspaces/{ws}/segments", "GET /v1/workspaces/{ws}/segments/{segment_id}", "GET /healthz",
    ]
    first = finished[0]
    assert first.kind is SpanKind.SERVER
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert first.parent is not None and format(first.parent.span_id, "016x") == "b7ad6b7169203331"
    assert first.attributes["http.route"] == "/v1/workspaces/{ws}/segments"  # type: ignore[index]
    assert first.attributes["http.response.status_code"] == 200  # type: ignore[index]
    assert finished[1].attributes["http.response.status_code"] == 404  # type: ignore[index]
    assert finished[1].status.status_code is not StatusCode.ERROR
    assert finished[2].parent is None  # no traceparent: a new trace


async def test_transitions_an_api_call_causes_remember_its_trace(
    api: httpx.AsyncClient, ctx: ServiceContext, spans: InMemorySpanExporter, workspace_id: str
) -> None:
    await seed(ctx, workspace_id, {"c1": [tags("vip")], "c2": [tags("vip")]})
    parent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    created = await api.post("/segments", json={"name": "VIPs", "type": "dynamic",
                                                 "rules": {"field": "tags", "op": "has", "value": "vip"}},
                             headers={"traceparent": parent, "tracestate": "k=v"})
    assert created.status_code == 201 and created.json()["member_count"] == 2
    rows = await ctx.pool.fetch("SELECT cause FROM transitions WHERE segment_id = $1",
                                uuid.UUID(created.json()["id"]))
    causes = [r["cause"] if isinstance(r["cause"], dict) else json.loads(r["cause"]) for r in rows]
    assert len(causes) == 2
    (request_span,) = [s for s in spans.get_finished_spans() if s.name.startswith("POST")]
    span_id = format(request_span.context.span_id, "016x")
    for cause in causes:
        assert cause["kind"] == "rules_changed"
        assert cause["traceparent"] == f"00-{TRACE_ID}-{span_id}-01" and cause["tracestate"] == "k=v"
    history = await api.get("/customers/c1/history")
    assert history.json()["items"][0]["cause"] == {"kind": "rules_changed"}  # the contract's shape


async def test_without_traces_causes_are_unchanged(api: httpx.AsyncClient, ctx: ServiceContext,
                                                   workspace_id: str) -> None:
    await seed(ctx, workspace_id, {"c1": [tags("vip")]})
    created = await api.post("/segments", json={"name": "VIPs", "type": "dynamic",
                                                 "rules": {"field": "tags", "op": "has", "value": "vip"}},
                             headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"})
    cause = await ctx.pool.fetchval("SELECT cause FROM transitions WHERE segment_id = $1",
                                    uuid.UUID(created.json()["id"]))
    assert (cause if isinstance(cause, dict) else json.loads(cause)) == {"kind": "rules_changed"}
