"""Every PromQL expression of the kit — the PrometheusRule's alerts and the Grafana dashboard's
panels — parses (``promql-parser``) and names only metrics that a running worker or API serves:
a real ``segment-worker run`` and ``segment-worker api`` are started, given a little work, and
their ``/metrics`` scraped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.deploy_kit import (
    BASE,
    OVERLAY,
    dashboard,
    family,
    metric_names,
    panel_expressions,
    rule_expressions,
)
from helpers.harness import WorkerProcess
from helpers.kafka_io import produce
from helpers.scenario import create_workspace, encode, event
from helpers.service import api_process, cli_env
from segment_worker.config import Settings
from segment_worker.embedded import free_port
from segment_worker.stores import postgres as pg

pytestmark = pytest.mark.timeout(180)

# Families that get a sample only when something goes wrong (a recovered failure, by stage).
_ONLY_ON_FAILURE = {"segment_worker_errors"}


def _served(text: str) -> tuple[set[str], set[str]]:
    """(families declared, families with at least one sample) of an exposition, suffixes stripped."""
    declared, sampled = set(), set()
    for metric in text_string_to_metric_families(text):
        declared.add(family(metric.name))
        sampled |= {family(s.name) for s in metric.samples}
    return declared, sampled


def _expressions() -> dict[str, str]:
    out = {f"alert {name}": expr for path in (BASE, OVERLAY) for name, expr in rule_expressions(path).items()}
    for title, exprs in panel_expressions(dashboard()).items():
        for i, expr in enumerate(exprs):
            out[f"panel {title!r} #{i}"] = expr
    return out


def test_every_expression_parses_and_selects_a_metric_of_ours() -> None:
    exprs = _expressions()
    assert len(exprs) > 20
    for where, expr in exprs.items():
        names = metric_names(expr)  # raises on a syntax error
        assert names, where
        assert all(n.startswith(("segment_worker_", "process_")) for n in names), (where, names)


async def test_every_metric_named_is_served_by_a_running_worker_or_api(
    unique_settings: Settings, workspace_id: str, pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 1})
    conn = await pg.connect(pg_dsn)
    try:
        vip = {"field": "tags", "op": "has", "value": "vip"}
        await create_workspace(conn, workspace_id, segments={"VIP": vip})
    finally:
        await conn.close()
    port = free_port()
    worker = WorkerProcess(s, tmp_path / "worker.log", extra_args=("--metrics-port", str(port))).start()
    try:
        async with (
            api_process(cli_env(pg_dsn, redis_url, SEGMENT_WORKER_API_TOKENS="t=*"), tmp_path / "api.log")
            as api,
            httpx.AsyncClient() as client,
        ):
            base = f"http://127.0.0.1:{port}"
            at = datetime.now(UTC)
            await produce(s.kafka_bootstrap, s.topic_events, [
                encode(event(workspace_id, f"c{i}", "customer.tags_added", {"tags": ["vip"]}, at))
                for i in range(5)
            ])
            headers = {"Authorization": "Bearer t"}
            r = await client.get(f"{api.url}/v1/workspaces/{workspace_id}/segments", headers=headers)
            assert r.status_code == 200, r.text
            worker_text = ""
            deadline = asyncio.get_running_loop().time() + 90
            while True:  # until the worker consumed, sent and observed its lag
                try:
                    worker_text = (await client.get(f"{base}/metrics")).text
                except httpx.TransportError:
                    worker_text = ""
                _, sampled = _served(worker_text)
                nothing_sent = 'segment_worker_end_to_end_seconds_count{stage="sent"} 0.0' in worker_text
                wanted = {"segment_worker_consumer_lag", "segment_worker_transitions"}
                if wanted <= sampled and not nothing_sent:
                    break
                assert worker.proc is not None and worker.proc.poll() is None, worker.log_text()
                assert asyncio.get_running_loop().time() < deadline, worker_text
                await asyncio.sleep(0.3)
            api_text = (await client.get(f"{api.url}/metrics")).text
    finally:
        worker.terminate()
    w_declared, w_sampled = _served(worker_text)
    a_declared, a_sampled = _served(api_text)
    declared, sampled = w_declared | a_declared, w_sampled | a_sampled
    assert "segment_worker_build" in w_sampled and "segment_worker_build" in a_sampled
    assert "process_resident_memory_bytes" in w_sampled and "process_resident_memory_bytes" in a_sampled
    for where, expr in _expressions().items():
        names = {family(n) for n in metric_names(expr)}
        assert names <= declared, (where, names - declared)
        assert names - _ONLY_ON_FAILURE <= sampled, (where, names - sampled)
