"""With a backlog the worker fetches and parses the next batch while the current one commits; batch
failures meanwhile (here: its PostgreSQL connections killed) rewind their partitions. Every record
must still be applied once, in partition order: each customer toggles a tag, so a lost, skipped or
reordered record shows as a missing or out-of-place enter/exit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta

import asyncpg
import pytest

from helpers.harness import FAST, WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.stores.fencing import worker_application_name

pytestmark = pytest.mark.timeout(180)

CUSTOMERS = 30
TOGGLES = 12  # per customer: add, remove, add, … (the last one removes)


async def _kill_backends(conn: asyncpg.Connection, app: str) -> int:
    killed: int = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app
    )
    return killed


async def test_a_backlog_is_applied_once_and_in_order_through_batch_failures(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str
) -> None:
    ws = workspace_id
    app = f"sw-pipeline-{ws}"[:60]
    url = unique_settings.require_database_url()
    s = unique_settings.model_copy(
        update={"database_url": f"{url}{'&' if '?' in url else '?'}application_name={app}"}
    )
    conn = await pg.connect(url)
    try:
        w = await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        vip = w.segments["VIP"]
        records = [
            encode(
                event(
                    ws,
                    f"c{c}",
                    "customer.tags_added" if k % 2 == 0 else "customer.tags_removed",
                    {"tags": ["vip"]},
                    T0 + timedelta(seconds=k),
                )
            )
            for k in range(TOGGLES)
            for c in range(CUSTOMERS)
        ]
        ends = await produce(kafka_bootstrap, s.topic_events, records)
        options = dataclasses.replace(FAST, max_records=16)  # many full batches: the pipeline runs
        async with WorkerHarness(s, options=options) as h:
            applied = "segment_worker_events_processed_total"
            kills = 0
            for share in (0.25, 0.5, 0.75):
                target = share * len(records)
                await h.wait_for(
                    lambda: h.metric(applied, {"outcome": "applied"}) >= target,  # noqa: B023
                    60,
                    f"{share:.0%} of the backlog not applied",
                )
                # A killed idle connection is replaced by the pool without an error: kill until
                # one dies under a batch (or the backlog ends, and the assertion below fails).
                before = h.metric("segment_worker_errors_total", {"stage": "batch"})
                for _ in range(40):
                    # The worker names its connections itself (stores.fencing recognises them).
                    named = worker_application_name(s.consumer_group, h.worker.owner)
                    kills += await _kill_backends(conn, named)
                    await asyncio.sleep(0.05)
                    if h.metric("segment_worker_errors_total", {"stage": "batch"}) > before:
                        break
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws, limit_s=120)
            failed = h.metric("segment_worker_errors_total", {"stage": "batch"})
            ahead = h.worker.fetched_ahead
        rows = await conn.fetch(
            "SELECT customer_id, seq, kind FROM transitions WHERE workspace_id = $1 AND segment_id = $2"
            " ORDER BY customer_id, seq",
            ws,
            vip,
        )
        members = await conn.fetchval("SELECT count(*) FROM segment_memberships WHERE workspace_id = $1", ws)
    finally:
        with contextlib.suppress(Exception):
            await conn.close()
    assert kills > 0 and failed > 0  # the failures happened mid-backlog, not only at the edges
    assert ahead > 0  # the next batch was fetched while one was in flight
    want = [("entered" if k % 2 == 0 else "exited") for k in range(TOGGLES)]
    by_customer: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        by_customer.setdefault(r["customer_id"], []).append((r["seq"], r["kind"]))
    expected = list(zip(range(1, TOGGLES + 1), want, strict=True))
    assert by_customer == {f"c{c}": expected for c in range(CUSTOMERS)}
    assert members == 0
