"""The connection budget at scale: twelve ``segment-worker run --lanes 1`` processes (one per input
partition) against one PostgreSQL and one Redis. While they run, ``pg_stat_activity`` of the test
database and Redis ``CLIENT LIST`` are sampled: no process ever holds more than a lane's budget
(``budget.LANE``), so the whole never exceeds budget × processes. Every partition is owned by
exactly one process, every process does work, and the memberships are the ones the events imply."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from helpers.databases import private_database
from helpers.harness import WorkerProcess
from helpers.kafka_io import produce
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker import budget
from segment_worker.config import Settings
from segment_worker.embedded import free_port
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key

# About 100 s on a shared two-core machine (twelve Python processes start and join one group).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PROCESSES = 12
CUSTOMERS = 1200


@pytest.fixture
async def budget_db(pg_server_dsn: str) -> AsyncIterator[str]:
    """A migrated database of this test alone: every backend on it is one of its workers'."""
    async with private_database(pg_server_dsn, "sw_budget") as dsn:
        yield dsn


class Sampler:
    """Polls, every 50 ms, the PostgreSQL backends on the database and the Redis clients, per
    process (application_name / client name ``budget-<i>``), keeping the peaks."""

    def __init__(self, conn: asyncpg.Connection, redis: Redis, database: str, tag: str) -> None:
        self.conn, self.redis, self.database, self.tag = conn, redis, database, tag
        self.pg_total = self.redis_total = self.samples = self.others = 0
        self.pg_peak: Counter[str] = Counter()
        self.redis_peak: Counter[str] = Counter()
        self.pids: dict[str, int] = {}  # worker process id → its index (set once they run)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            rows = await self.conn.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE datname = $1"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                self.database,
            )
            # A worker names its connections after its owner id, "<host>:<pid>:<suffix>"
            # ("sw-worker <group> <owner>", "sw-listen <owner>"): told apart by pid.
            pg_now: Counter[str] = Counter()
            for (name,) in rows:
                found = re.search(r":(\d+):", name or "")
                if found and found.group(1) in self.pids:
                    pg_now[f"{self.tag}-{self.pids[found.group(1)]}"] += 1
            if self.pids:
                self.others = max(self.others, len(rows) - sum(pg_now.values()))
            redis_now = Counter(
                c["name"] for c in await self.redis.client_list() if c.get("name", "").startswith(self.tag)
            )
            self.pg_total = max(self.pg_total, sum(pg_now.values()))
            self.redis_total = max(self.redis_total, sum(redis_now.values()))
            self.pg_peak |= pg_now  # elementwise max
            self.redis_peak |= redis_now
            self.samples += 1
            await asyncio.sleep(0.05)


async def test_twelve_one_lane_workers_share_the_partitions_within_the_budget(
    budget_db: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    tag = f"budget-{uuid.uuid4().hex[:6]}"
    base = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=budget_db, redis_url=redis_url,
        topic_events=f"{tag}-in", topic_membership=f"{tag}-out", topic_dlq=f"{tag}-dlq",
        consumer_group=tag, input_partitions=PROCESSES, lanes=1,
    )
    database = budget_db.rsplit("/", 1)[1]
    conn = await pg.connect(budget_db)
    redis = Redis.from_url(redis_url)
    vip = {"field": "tags", "op": "has", "value": "vip"}
    ws = await create_workspace(conn, f"ws-{tag}", segments={"VIP": vip})
    sampler = Sampler(await pg.connect(budget_db), redis, database, tag)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    procs: list[WorkerProcess] = []
    ports: list[int] = []
    try:
        for i in range(PROCESSES):
            # Each process names its connections, so the samples can be told apart per process.
            s = base.model_copy(update={
                "database_url": f"{budget_db}?application_name={tag}-{i}",
                "redis_url": f"{redis_url}?client_name={tag}-{i}",
            })
            ports.append(free_port())
            # A longer session timeout than the harness's 2 s: twelve processes starting on a small
            # machine miss heartbeats, and each miss reshuffles the group.
            args = ("--lanes", "1", "--metrics-port", str(ports[-1]), "--session-timeout-ms", "10000")
            procs.append(WorkerProcess(s, tmp_path / f"worker-{i}.log", extra_args=args).start())
        pids = {str(p.proc.pid): i for i, p in enumerate(procs) if p.proc is not None}
        sampler.pids = pids

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 150
        while True:  # (a) each of the 12 partitions owned by its own process
            rows = await conn.fetch("SELECT partition, owner FROM partitions")
            owners = {r["partition"]: r["owner"].split(":")[1] for r in rows if r["owner"]}
            if len(owners) == PROCESSES and set(owners.values()) == set(pids):
                break
            assert loop.time() < deadline, f"12 processes never split 12 partitions: {owners}\n" + "\n".join(
                p.log_text()[-1500:] for p in procs)
            await asyncio.sleep(0.25)

        # (c) Events whose outcome is obvious: every customer tagged vip, then every third untagged.
        later = T0 + timedelta(minutes=1)
        events = [event(ws.id, f"c{n}", "customer.tags_added", {"tags": ["vip"]}, T0)
                  for n in range(CUSTOMERS)]
        events += [event(ws.id, f"c{n}", "customer.tags_removed", {"tags": ["vip"]}, later)
                   for n in range(0, CUSTOMERS, 3)]
        ends = await produce(kafka_bootstrap, base.topic_events, [encode(e) for e in events])
        assert sorted(ends) == list(range(PROCESSES))  # the events reach every partition
        await wait_caught_up(conn, base.consumer_group, base.topic_events, ends, workspace_id=ws.id,
                             limit_s=120)

        # Every process did work: its own /metrics counts events it applied.
        async with httpx.AsyncClient() as client:
            applied = []
            for port in ports:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                found = re.search(r'segment_worker_events_processed_total\{outcome="applied"\} (\S+)', text)
                applied.append(float(found.group(1)) if found else 0.0)
        idle = [i for i, a in enumerate(applied) if a == 0]
        assert not idle, f"{applied}\n" + "\n".join(procs[i].log_text()[-3000:] for i in idle)
        assert sum(applied) == len(events)

        expected = {f"c{n}" for n in range(CUSTOMERS) if n % 3}
        sid = ws.segments["VIP"]
        in_pg = {r[0] for r in await conn.fetch(
            "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", sid)}
        in_redis = {m.decode() for m in await redis.smembers(segment_key(ws.id, sid))}
        assert in_pg == expected and in_redis == expected

        for p in procs:
            assert p.terminate() == 0, p.log_text()
    finally:
        stop.set()
        await sampling
        await sampler.conn.close()
        for p in procs:
            p.ensure_dead()
        await conn.close()
        await redis.aclose()

    # (b) The budget held, per process and in all, at every sample.
    lane = budget.LANE
    print(f"\nconnection budget: {sampler.samples} samples; PostgreSQL peak {sampler.pg_total} "
          f"(budget {lane.postgres} x {PROCESSES} = {lane.postgres * PROCESSES}), per process "
          f"{max(sampler.pg_peak.values())}; Redis peak {sampler.redis_total} (budget "
          f"{lane.redis_per_node * PROCESSES}), per process {max(sampler.redis_peak.values())}")
    assert sampler.samples > 20
    assert sampler.others <= 1  # the test's own connection: nothing else used the database
    assert set(sampler.pg_peak) == {f"{tag}-{i}" for i in range(PROCESSES)}  # every process was seen
    assert max(sampler.pg_peak.values()) <= lane.postgres, sampler.pg_peak
    assert max(sampler.redis_peak.values()) <= lane.redis_per_node, sampler.redis_peak
    assert sampler.pg_total <= lane.postgres * PROCESSES
    assert sampler.redis_total <= lane.redis_per_node * PROCESSES
