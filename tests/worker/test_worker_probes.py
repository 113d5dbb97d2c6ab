"""The worker's probe endpoints (``/healthz``, ``/readyz``) next to ``/metrics``, over real HTTP."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from segment_worker.config import Settings
from segment_worker.embedded import free_port
from segment_worker.worker.loop import Worker, WorkerOptions
from segment_worker.worker.metrics import WorkerMetrics, serve


def test_probes_answer_503_with_the_reason_until_the_worker_runs() -> None:
    registry = CollectorRegistry()
    worker = Worker(Settings(), metrics=WorkerMetrics(registry), options=WorkerOptions(stall_seconds=0.0))
    port = free_port()
    serve(port, registry, health=worker.liveness, ready=worker.readiness)
    base = f"http://127.0.0.1:{port}"
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "detail": "starting: connecting to Kafka, PostgreSQL and Redis",
    }
    health = httpx.get(f"{base}/healthz")  # stall_seconds=0: the loop never came round in time
    assert health.status_code == 503 and health.json()["detail"].startswith("batch loop stalled")
    assert "segment_worker_batch_size" in httpx.get(f"{base}/metrics").text
    assert httpx.get(f"{base}/nope").status_code == 404


def test_a_live_worker_is_healthy() -> None:
    worker = Worker(Settings(), metrics=WorkerMetrics(CollectorRegistry()))
    assert worker.liveness() == (True, "ok")
