"""The worker on a Redis Cluster of three masters, end to end: three workspaces, one per master,
mixed events through Kafka; then a workspace's slot is moved to another master while events flow
(ASK during the move, MOVED after: followed, never fatal); then a master is SIGKILLed and
restarted empty while events flow (the worker keeps its ops pending and carries on; ``reconcile``
rebuilds the lost sets). After each phase Redis == PostgreSQL == the evaluator."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.redis_cluster import ClusterNode, RedisClusterProcesses
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    Workspace,
    check_consistency,
    create_workspace,
    encode,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.stores.redis_client import connect_redis
from segment_worker.worker.clock import SystemClock

pytestmark = pytest.mark.timeout(180)

CUSTOMERS = 120
PHASE = 400  # events per workspace and phase


@dataclass
class Run:
    settings: Settings
    spaces: list[Workspace]
    conn: asyncpg.Connection
    redis: RedisCluster
    harness: WorkerHarness
    cluster: RedisClusterProcesses
    phase: int = 0

    def phase_records(self) -> list[tuple[bytes, bytes]]:
        """The next slice of every workspace's mixed events (phases share customers)."""
        i = self.phase
        self.phase += 1
        per_ws = [
            mixed_events(ws.id, CUSTOMERS, PHASE * 4, seed=11 + n)[i * PHASE : (i + 1) * PHASE]
            for n, ws in enumerate(self.spaces)
        ]
        return [encode(e) for events in zip(*per_ws, strict=True) for e in events]  # interleaved

    async def produce(self, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
        return await produce(self.settings.kafka_bootstrap, self.settings.topic_events, records)

    async def produce_phase(self) -> dict[int, int]:
        return await self.produce(self.phase_records())

    async def caught_up(self, ends: dict[int, int], limit_s: float = 60.0) -> None:
        for ws in self.spaces:
            await wait_caught_up(self.conn, self.settings.consumer_group, self.settings.topic_events, ends,
                                 workspace_id=ws.id, limit_s=limit_s)

    async def check(self) -> int:
        """Every workspace consistent; answers the CloudEvents seen."""
        output = await read_topic(self.settings.kafka_bootstrap, self.settings.topic_membership)
        events = 0
        for ws in self.spaces:
            result = await check_consistency(self.conn, self.redis, ws, output, SystemClock().now())
            events += result.events
        return events


@pytest.fixture(scope="module")
async def run(
    kafka_bootstrap: str, cluster_pg_dsn: str, redis_cluster: RedisClusterProcesses
) -> AsyncIterator[Run]:
    import uuid

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=cluster_pg_dsn, redis_url=redis_cluster.url,
        topic_events=f"cl-in-{tag}", topic_membership=f"cl-out-{tag}", topic_dlq=f"cl-dlq-{tag}",
        consumer_group=f"cl-{tag}", input_partitions=4, tick_seconds=1,
    )
    conn = await pg.connect(cluster_pg_dsn)
    redis = await connect_redis(settings, max_connections=4)
    assert isinstance(redis, RedisCluster)
    spaces = [
        await create_workspace(conn, redis_cluster.workspace_on(node, "clw"), attributes=MIXED_ATTRIBUTES,
                               segments=MIXED_SEGMENTS)
        for node in redis_cluster.nodes
    ]
    harness = await WorkerHarness(settings).start()
    try:
        yield Run(settings, spaces, conn, redis, harness, redis_cluster)
    finally:
        await harness.stop()
        await redis.aclose()
        await conn.close()


async def test_the_worker_fills_sets_on_every_master(run: Run) -> None:
    assert isinstance(run.harness.worker._redis, RedisCluster)  # auto detected the cluster
    await run.caught_up(await run.produce_phase())
    assert await run.check() > 200
    for ws in run.spaces:  # each workspace's sets are on its own master, and only there
        node = run.cluster.node_of_slot(key_slot(ws.id.encode()))
        with node.client() as r:
            assert r.exists(*(f"sw:{{{ws.id}}}:seg:{sid}" for sid in ws.segments.values())) > 0


def _redirections(node: ClusterNode) -> dict[str, int]:
    """ASK and MOVED replies ``node`` has sent (INFO errorstats, Redis 6.2+)."""
    with node.client() as r:
        stats = r.info("errorstats")
    return {kind: int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in ("ASK", "MOVED")}


async def test_a_slot_moved_while_events_flow_is_followed(run: Run) -> None:
    ws = run.spaces[0]
    slot = key_slot(ws.id.encode())
    source, target = run.cluster.node_of_slot(slot), run.cluster.nodes[2]
    assert source is not target
    records = run.phase_records()
    before, during, after = records[: len(records) // 3], records[len(records) // 3 : -100], records[-100:]
    await run.caught_up(await run.produce(before))
    seen = _redirections(source)
    # Half the slot's keys moved, the other half not yet: the worker's writes to moved keys get ASK.
    moving = asyncio.create_task(asyncio.to_thread(run.cluster.migrate_slot, slot, target, pause_s=2.0))
    await asyncio.sleep(0.5)
    await run.caught_up(await run.produce(during))
    await moving
    ends = await run.produce(after)  # the slot is the target's now: MOVED, then the new slot map
    await run.caught_up(ends)
    got = _redirections(source)
    # ASK followed during the move. A MOVED afterwards only if the client still had the old slot
    # map: the fenced writes are one multi-key script per workspace (stores.redis_fenced), which
    # gets TRYAGAIN while the slot's keys are split, and redis-py reloads the map on the way.
    assert got["ASK"] > seen["ASK"], (seen, got)
    assert run.cluster.node_of_slot(slot) is target
    assert await run.check() > 0
    # No batch failed: every redirection was followed inside the client.
    applied = run.harness.metric("segment_worker_events_processed_total", {"outcome": "applied"})
    assert applied == 2 * 3 * PHASE
    assert run.harness.metric("segment_worker_errors_total", {"stage": "batch"}) == 0


async def test_a_master_killed_and_restarted_empty_is_survived_and_reconciled(run: Run) -> None:
    ws = run.spaces[1]
    node = run.cluster.node_of_slot(key_slot(ws.id.encode()))
    await asyncio.to_thread(run.cluster.kill, node)
    ends = await run.produce_phase()
    # Batches commit to PostgreSQL; their Redis ops wait for the master (the client retries, then
    # the batch fails and is retried): pending ops show the worker met the outage.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await run.conn.fetchval(
        "SELECT count(*) FROM transitions t LEFT JOIN redis_cursors c ON c.partition = t.partition"
        " WHERE t.id > COALESCE(c.applied_id, 0)"
    ):
        assert loop.time() < deadline, "no Redis op ever waited for the killed master"
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)  # past the node timeout: the others mark it failed, the cluster is down
    assert not run.harness.worker._stopping.is_set()
    await asyncio.to_thread(run.cluster.restart, node)
    await asyncio.to_thread(run.cluster.wait_ok)
    await run.caught_up(ends, limit_s=90)  # the pending ops reached the restarted master
    assert run.harness.worker.owned  # the worker lived through it, still owning its partitions

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    env |= {"SEGMENT_WORKER_DATABASE_URL": run.settings.require_database_url(),
            "SEGMENT_WORKER_REDIS_URL": run.settings.require_redis_url()}

    def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "segment_worker.cli", "reconcile", *args,
                               "--workspace", ws.id], env=env, capture_output=True, text=True, timeout=60)

    # The restarted master came back empty but for the ops applied since; the running worker
    # notices (the workspace's marker lived on that master) and rebuilds it: CONTRACT §6.
    deadline = loop.time() + 60
    while (check := await asyncio.to_thread(reconcile, "--check")).returncode != 0:
        assert check.returncode == 1, check.stdout + check.stderr
        assert loop.time() < deadline, "the worker never rebuilt the lost keys: " + check.stdout
        await asyncio.sleep(1)
    assert run.harness.metric("segment_worker_redis_rebuilds_total") > 0
    fix = await asyncio.to_thread(reconcile)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert await run.check() > 0
    # Writes after the restart succeed: one more phase, all consistent.
    await run.caught_up(await run.produce_phase())
    assert await run.check() > 0
