"""A worker frozen (SIGSTOP) while it holds a batch transaction — its partition advisory locks and
the ``FOR SHARE`` row locks of its epoch check — blocks nobody: the group moves its partitions, the
new owner ends the stale backend after a short wait (``stores.fencing``) and processes them within
the session timeout + 30 s; woken up (SIGCONT), the frozen worker commits nothing of its old batch
and the final state is consistent."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerProcess
from helpers.kafka_io import produce, read_topic
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    check_consistency,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.worker.clock import SystemClock

pytestmark = pytest.mark.timeout(240)

SESSION_TIMEOUT_S = 2.0  # WorkerProcess runs with --session-timeout-ms 2000

# A backend of the worker process ``pid`` inside a transaction, holding partition advisory locks.
_IN_BATCH_SQL = """
SELECT a.pid FROM pg_stat_activity a
WHERE a.application_name LIKE 'sw-worker %' AND a.application_name LIKE '%:' || $1::text || ':%'
  AND a.xact_start IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
"""


async def owners(conn: asyncpg.Connection) -> dict[int, int]:
    """Partition → pid of its owner (from ``partitions.owner`` = host:pid:suffix)."""
    rows = await conn.fetch(
        "SELECT partition, owner FROM partitions WHERE partition < 4 AND owner IS NOT NULL"
    )
    return {r["partition"]: int(r["owner"].split(":")[1]) for r in rows}


async def test_a_worker_frozen_inside_a_batch_blocks_nobody(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = unique_settings
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    a = WorkerProcess(s, tmp_path / "a.log")
    b = WorkerProcess(s, tmp_path / "b.log")
    loop = asyncio.get_running_loop()
    ends: dict[int, int] = {}
    producing = True

    async def stream(events: list[dict[str, object]]) -> None:
        for i in range(0, len(events), 60):
            if not producing:
                return
            chunk = [encode(ev) for ev in events[i : i + 60]]
            for p, e in (await produce(kafka_bootstrap, s.topic_events, chunk)).items():
                ends[p] = max(ends.get(p, 0), e)
            await asyncio.sleep(0.05)

    try:
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        events = mixed_events(ws.id, 400, 20_000, seed=5)
        a.start()
        b.start()
        assert a.proc is not None and b.proc is not None
        deadline = loop.time() + 60
        while {a.proc.pid, b.proc.pid} - set((await owners(conn)).values()):
            assert loop.time() < deadline, "two workers never shared the partitions:\n" + a.log_text()
            await asyncio.sleep(0.2)
        producer = asyncio.create_task(stream(events))
        await asyncio.sleep(2)
        # Freeze A at a moment when it is inside a batch transaction (retry until caught there).
        held: list[asyncpg.Record] = []
        for _ in range(400):
            a.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.05)  # a statement in flight finishes server-side
            held = await conn.fetch(_IN_BATCH_SQL, str(a.proc.pid))
            if held:
                break
            a.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(random.uniform(0.0, 0.05))
        assert held, "never caught the worker inside a batch transaction:\n" + a.log_text()
        frozen_at = time.monotonic()
        frozen_backends = {r["pid"] for r in held}
        a_parts = {p for p, pid in (await owners(conn)).items() if pid == a.proc.pid}
        assert a_parts, "the frozen worker owned no partition"
        await asyncio.sleep(3)
        producing = False
        await producer
        # B takes A's partitions and processes everything produced, A still frozen.
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id,
                             limit_s=SESSION_TIMEOUT_S + 30)
        recovered_s = time.monotonic() - frozen_at
        print(f"frozen inside a batch: partitions {sorted(a_parts)} processed again in {recovered_s:.1f} s")
        assert recovered_s < SESSION_TIMEOUT_S + 30
        now_owners = await owners(conn)
        assert all(now_owners[p] == b.proc.pid for p in a_parts), now_owners
        # The stale backend was ended (its transaction rolled back, its locks released).
        alive = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                                 list(frozen_backends))
        assert not alive
        assert "stale owner" in b.log_text(), b.log_text()
        # Woken up, A's old batch commits nothing: every write stays consistent with the input.
        a.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(SESSION_TIMEOUT_S * 3)
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id, limit_s=60)
        output = await read_topic(kafka_bootstrap, s.topic_membership)
        result = await check_consistency(conn, redis, ws, output, SystemClock().now())
        assert result.events > 100
        assert a.proc.poll() is None and b.proc.poll() is None, "a worker died"
        assert a.terminate() == 0, a.log_text()
        assert b.terminate() == 0, b.log_text()
    finally:
        producing = False
        for p in (a, b):
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGCONT)
            p.ensure_dead()
        await conn.close()
        await redis.aclose()


async def test_a_worker_frozen_between_batches_blocks_nobody(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    s = unique_settings
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    a = WorkerProcess(s, tmp_path / "a.log")
    b = WorkerProcess(s, tmp_path / "b.log")
    loop = asyncio.get_running_loop()
    try:
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        events = mixed_events(ws.id, 300, 3000, seed=9)
        a.start()
        b.start()
        assert a.proc is not None and b.proc is not None
        deadline = loop.time() + 60
        while {a.proc.pid, b.proc.pid} - set((await owners(conn)).values()):
            assert loop.time() < deadline, "two workers never shared the partitions:\n" + a.log_text()
            await asyncio.sleep(0.2)
        a_parts = {p for p, pid in (await owners(conn)).items() if pid == a.proc.pid}
        for _ in range(200):  # idle: no transaction, no lock held (not ticking at that moment)
            a.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.05)
            if not await conn.fetch(_IN_BATCH_SQL, str(a.proc.pid)):
                break
            a.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(random.uniform(0.0, 0.1))
        assert not await conn.fetch(_IN_BATCH_SQL, str(a.proc.pid))
        frozen_at = time.monotonic()
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in events])
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id,
                             limit_s=SESSION_TIMEOUT_S + 30)
        recovered_s = time.monotonic() - frozen_at
        print(f"frozen between batches: partitions {sorted(a_parts)} processed again in {recovered_s:.1f} s")
        assert all(pid == b.proc.pid for p, pid in (await owners(conn)).items() if p in a_parts)
        a.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(SESSION_TIMEOUT_S * 3)
        await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws.id, limit_s=60)
        output = await read_topic(kafka_bootstrap, s.topic_membership)
        await check_consistency(conn, redis, ws, output, SystemClock().now())
        assert a.proc.poll() is None and b.proc.poll() is None, "a worker died"
        assert a.terminate() == 0, a.log_text()
        assert b.terminate() == 0, b.log_text()
    finally:
        for p in (a, b):
            if p.proc is not None and p.proc.poll() is None:
                p.proc.send_signal(signal.SIGCONT)
            p.ensure_dead()
        await conn.close()
        await redis.aclose()
