"""The API's own metrics: the transitions its calls commit (by kind and cause), request durations
by route template (bounded), process metrics and ``build_info``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from helpers.service import seed, tags, upsert
from segment_worker.service.context import ServiceContext
from segment_worker.worker.metrics import build_labels


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_the_transitions_of_api_calls_are_counted_by_kind_and_cause(
    app: FastAPI, api: httpx.AsyncClient, ctx: ServiceContext, workspace_id: str
) -> None:
    await seed(ctx, workspace_id, {
        "a": [upsert(name="Ann"), tags("VIP")],
        "b": [upsert(name="Bob"), tags("VIP")],
        "c": [upsert(name="Cy")],
    })
    registry: CollectorRegistry = app.state.metrics.registry
    name = "segment_worker_api_transitions_total"
    keys = [("entered", "rules_changed"), ("entered", "manual"), ("exited", "manual"), ("deleted", "manual")]
    before = {k: _value(registry, name, kind=k[0], cause=k[1]) for k in keys}

    vip = {"field": "tags", "op": "has", "value": "vip"}
    r = await api.post("/segments", json={"name": "VIPs", "type": "dynamic", "rules": vip})
    assert r.status_code == 201, r.text
    r = await api.post("/segments", json={"name": "List", "type": "static"})
    static = r.json()["id"]
    r = await api.post(f"/segments/{static}/members", json={"customer_ids": ["a", "b", "c"]})
    assert r.status_code == 200
    r = await api.request("DELETE", f"/segments/{static}/members", json={"customer_ids": ["a"]})
    assert r.json()["removed"] == 1
    assert (await api.delete(f"/segments/{static}")).status_code == 204
    # A refused call writes nothing: its unit rolls back.
    assert (await api.post(f"/segments/{static}/members", json={"customer_ids": ["a"]})).status_code == 404

    after = {k: _value(registry, name, kind=k[0], cause=k[1]) - before[k] for k in keys}
    assert after == {
        ("entered", "rules_changed"): 2,  # a and b match on creation
        ("entered", "manual"): 3,
        ("exited", "manual"): 1,
        ("deleted", "manual"): 1,
    }


async def test_request_durations_are_labelled_by_route_template(
    app: FastAPI, http: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    for sid in ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"):
        assert (await api.get(f"/segments/{sid}")).status_code == 404
    await http.get("/no/such/path")
    registry: CollectorRegistry = app.state.metrics.registry
    routes = {
        s.labels["route"]
        for metric in registry.collect() if metric.name == "segment_worker_api_request_duration_seconds"
        for s in metric.samples
    }
    assert "/v1/workspaces/{ws}/segments/{segment_id}" in routes
    assert "unmatched" in routes
    assert not any("00000000" in r or "no/such" in r for r in routes), routes  # bounded: templates only


async def test_process_metrics_and_build_info_are_served(http: httpx.AsyncClient) -> None:
    text = (await http.get("/metrics")).text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert "python_info{" in text
    labels = build_labels()
    python, version = labels["python"], labels["version"]
    assert f'segment_worker_build_info{{python="{python}",version="{version}"}} 1.0' in text
