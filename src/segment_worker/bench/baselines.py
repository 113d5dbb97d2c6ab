"""The baselines, on the same workload in the same run:

- ``kafka-consume``: raw aiokafka consumption of the input topic, no processing (the ceiling of
  reading the input at all);
- ``pg-upsert``: batched upsert (COPY → temp table → INSERT … ON CONFLICT) of the customer rows
  the events touch, in the worker's batch size, into a copy of ``customers`` with its indexes
  (the ceiling of persisting the state at all);
- ``faust``: a faust-streaming agent parsing each event and evaluating all the compiled rules
  (``faust_app.py``); skipped without the ``bench`` extra;
- ``batch-sql``: a full SQL recompute of every segment into a membership table (what cron-based
  products do); the time per refresh is the staleness it implies at best.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..childproc import parent_death_preexec
from ..config import Settings
from ..kafka import client_options, kafka_errors
from ..rules.timectx import TimeContext
from .evaluator import RuleEvaluator
from .kafkaio import EventFile
from .results import Baseline

FAUST_MISSING = "skipped: install .[bench] (faust-streaming)"
_STALL = 120.0


async def kafka_consume(settings: Settings, topic: str, partitions: int, total: int) -> Baseline:
    """Read the whole input topic with aiokafka, doing nothing with the records."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    with kafka_errors("baseline consume", topic=topic):
        await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        seen = 0
        t0 = time.monotonic()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(r) for r in batches.values())
            if time.monotonic() - t0 > _STALL:
                break
        seconds = time.monotonic() - t0
    finally:
        await consumer.stop()
    return Baseline("kafka-consume", "aiokafka getmany(5000), no processing", seen, seconds, seen / seconds)


async def pg_upsert(pool: asyncpg.Pool, workspace_id: str, events: EventFile, *, batch: int,
                    limit: int) -> Baseline:
    """Upsert, per batch of ``batch`` events (the first ``limit``), the rows of the customers they
    touch; only the upserts are timed (reading the rows to write is not)."""
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_upsert")
        await conn.execute("CREATE TABLE bench_upsert (LIKE customers INCLUDING ALL)")
        cols = [r["attname"] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum")]
        await conn.execute("CREATE TEMP TABLE bench_upsert_in (LIKE customers) ON COMMIT DELETE ROWS")
        collist = ", ".join(cols)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in ("workspace_id", "customer_id"))
        upsert = (f"INSERT INTO bench_upsert ({collist}) SELECT {collist} FROM bench_upsert_in"
                  f" ON CONFLICT (workspace_id, customer_id) DO UPDATE SET {updates}")
        timed = 0.0
        n_events = rows = 0
        keys: dict[str, None] = {}

        async def flush() -> None:
            nonlocal timed, rows
            found = await conn.fetch(
                f"SELECT {collist} FROM customers WHERE workspace_id = $1 AND customer_id = ANY($2::text[])",
                workspace_id, list(keys))
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("bench_upsert_in", records=[tuple(r) for r in found],
                                                 columns=cols)
                await conn.execute(upsert)
            timed += time.perf_counter() - t0
            rows += len(found)
            keys.clear()

        for key, _value in events.records():
            if n_events >= limit:
                break
            keys[key.decode().split(":", 1)[1]] = None
            n_events += 1
            if n_events % batch == 0:
                await flush()
        if keys:
            await flush()
        await conn.execute("DROP TABLE bench_upsert")
    return Baseline("pg-upsert", f"COPY + INSERT … ON CONFLICT of the touched customer rows, {batch} events"
                    " per batch, all indexes", n_events, timed, n_events / timed if timed else 0.0,
                    extra={"rows": rows, "rows_per_second": rows / timed if timed else 0.0})


async def batch_recompute(pool: asyncpg.Pool, workspace_id: str, document: dict[str, Any]) -> Baseline:
    """Recompute every segment from scratch in SQL into an (unlogged) membership table."""
    evaluator = RuleEvaluator(document)  # compiles the same rules, with the SQL compiler's output
    ctx = TimeContext.at(datetime.now(UTC), evaluator.catalog.timezone)
    members = 0
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_batch_members")
        await conn.execute("CREATE UNLOGGED TABLE bench_batch_members (segment_id uuid, customer_id text)")
        t0 = time.perf_counter()
        for rule in evaluator.rules:
            where, params = rule.sql_where(ctx, 1)
            n = len(params)
            status = await conn.execute(
                f"INSERT INTO bench_batch_members SELECT ${n + 1}::uuid, c.customer_id FROM customers c"
                f" WHERE c.workspace_id = ${n + 2} AND NOT c.deleted AND ({where})",
                *params, uuid.uuid4(), workspace_id)
            members += int(status.rsplit(" ", 1)[1])
        seconds = time.perf_counter() - t0
        await conn.execute("DROP TABLE bench_batch_members")
    segments = len(evaluator.rules)
    return Baseline("batch-sql", f"full SQL recompute of all {segments} segments (unlogged table)", segments,
                    seconds, segments / seconds, unit="segments/s",
                    extra={"memberships": members, "staleness_seconds": seconds})


def faust_available() -> bool:
    """Whether faust-streaming is installed (the ``bench`` extra)."""
    return importlib.util.find_spec("faust") is not None


async def faust(settings: Settings, topic: str, partitions: int, total: int, document: dict[str, Any],
                workdir: Path) -> Baseline:
    """Run the faust agent over the input topic until it has seen every record."""
    name = "faust"
    what = (f"faust-streaming agent, take(2000): parse + apply + all {len(document['segments'])} rules"
            " per event")
    if not faust_available():
        return Baseline(name, what, skipped=FAUST_MISSING)
    if settings.kafka_security_protocol != "PLAINTEXT":
        # The optional comparison is not given our TLS/SASL settings (faust has its own credentials).
        return Baseline(name, what, skipped="skipped: the faust baseline runs against PLAINTEXT brokers only")
    bootstrap = settings.kafka_bootstrap
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    progress = workdir / "progress.json"
    cfg = {"app_id": f"bench-faust-{uuid.uuid4().hex[:8]}", "bootstrap": bootstrap, "topic": topic,
           "partitions": partitions, "expected": total, "rules": document,
           "progress_file": str(progress), "workdir": str(workdir)}
    env = {**os.environ, "SW_BENCH_FAUST": json.dumps(cfg)}
    log = await asyncio.to_thread((workdir / "faust.log").open, "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segment_worker.bench.faust_app", env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=parent_death_preexec(signal.SIGTERM))
    finally:
        log.close()  # the child has its own descriptor
    started = time.monotonic()
    try:
        doc = await _await_progress(proc, progress)
    finally:
        await _stop(proc)
    if doc is None or not doc.get("done"):
        seen = doc["events"] if doc else 0
        return Baseline(name, what, skipped=f"failed: the agent stalled at {seen} of {total} events"
                        f" (see {workdir / 'faust.log'})")
    seconds = doc["last"] - doc["first"]
    return Baseline(name, what, doc["events"], seconds, doc["events"] / seconds if seconds else 0.0,
                    extra={"transitions": doc["transitions"], "rejected": doc["rejected"],
                           "startup_seconds": time.monotonic() - started - seconds})


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


async def _await_progress(proc: asyncio.subprocess.Process, path: Path) -> dict[str, Any] | None:
    """The agent's progress once it is done, or as it was when it stalled or exited."""
    doc: dict[str, Any] | None = None
    best, since = -1, time.monotonic()
    while True:
        doc = await asyncio.to_thread(_read_progress, path) or doc
        seen = doc["events"] if doc else 0
        if (doc and doc.get("done")) or proc.returncode is not None:
            return doc
        if seen > best:
            best, since = seen, time.monotonic()
        elif time.monotonic() - since > _STALL:
            return doc
        await asyncio.sleep(0.2)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
    await proc.wait()
