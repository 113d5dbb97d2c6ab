"""One fault scenario's frame: a workspace with the mixed segments, a cluster of worker processes,
the produced input (tracked), and ``finish`` — wait for the work to be out, then every check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from faults.checks import Verified, check_exact, dlq_positions
from faults.cluster import Cluster
from faults.feed import ends, produce_tracked, read_all
from faults.oracle import Oracle, Produced
from helpers.kafka_io import Record
from helpers.scenario import MIXED_ATTRIBUTES, MIXED_SEGMENTS, Workspace, create_workspace, wait_caught_up
from segment_worker.config import Settings
from segment_worker.kafka import ensure_topics
from segment_worker.stores import postgres as pg

log = logging.getLogger("faults")


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` times ``SW_FAULTS_SCALE`` (default 1: the CI size)."""
    return max(minimum, int(n * float(os.environ.get("SW_FAULTS_SCALE", "1"))))


@dataclass
class FaultRun:
    settings: Settings
    conn: asyncpg.Connection
    redis: Redis
    ws: Workspace
    cluster: Cluster
    produced: list[Produced] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    async def open(cls, settings: Settings, workspace_id: str, log_dir: Path) -> FaultRun:
        conn = await pg.connect(settings.require_database_url())
        redis = Redis.from_url(settings.redis_url)
        ws = await create_workspace(conn, workspace_id, attributes=MIXED_ATTRIBUTES, segments=MIXED_SEGMENTS)
        await ensure_topics(settings)
        return cls(settings, conn, redis, ws, Cluster(settings, log_dir))

    async def produce(self, records: Sequence[Record], log_no: int = 0) -> list[Produced]:
        got = await produce_tracked(self.settings.kafka_bootstrap, self.settings.topic_events, records)
        if log_no:
            got = [Produced(r.key, r.value, r.partition, r.offset, log_no) for r in got]
        self.produced += got
        return got

    async def wait_out(self, limit_s: float) -> None:
        """Stored positions reach the log ends and nothing is left to send (or fail naming the
        stall, with the workers' logs)."""
        last_log = max(p.log for p in self.produced)
        try:
            await wait_caught_up(
                self.conn,
                self.settings.consumer_group,
                self.settings.topic_events,
                ends([r for r in self.produced if r.log == last_log]),
                limit_s=limit_s,
                workspace_id=self.ws.id,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.cluster.logs_tail()}") from None

    async def reconnect(self) -> None:
        """A new connection (after PostgreSQL restarted: the old one is gone)."""
        with contextlib.suppress(Exception):
            await self.conn.close()
        self.conn = await pg.connect(self.settings.require_database_url())

    async def verify(self, *, lost_output_before_log: int | None = None) -> Verified:
        """Every check of ``faults.checks`` against the oracle over the produced input.
        ``lost_output_before_log``: the output topic lost what the input before this log number
        made (a broker restarted empty)."""
        s = self.settings
        output = await read_all(s.kafka_bootstrap, s.topic_membership)
        dead = dlq_positions(await read_all(s.kafka_bootstrap, s.topic_dlq), self.produced)
        exp = Oracle(self.ws).fold(self.produced, dead=set(dead))
        base = None
        if lost_output_before_log is not None:
            earlier = [r for r in self.produced if r.log < lost_output_before_log]
            base = Oracle(self.ws).fold(earlier).flips
        return await check_exact(
            self.conn, self.redis, self.ws, exp, output, dead, self.produced, seq_base=base
        )

    async def finish(self, limit_s: float = 120.0) -> Verified:
        await self.wait_out(limit_s)
        got = await self.verify()
        self.report(got)
        return got

    def report(self, got: Verified) -> None:
        self.cluster.assert_all_alive()
        log.warning(
            "fault run: %d records, %d members, %d events (%d re-sent copies), %d dead-lettered,"
            " %d restarts, %.1f s",
            len(self.produced),
            got.members,
            got.events,
            got.duplicates,
            got.dead,
            self.cluster.restarts,
            time.monotonic() - self.started,
        )

    async def close(self) -> None:
        await self.cluster.close()
        await self.conn.close()
        await self.redis.aclose()


async def sleep_until(cond: Any, limit_s: float, what: str, every_s: float = 0.2) -> float:
    """Poll the async ``cond()`` until true; answers the seconds waited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await cond():
        if loop.time() - start > limit_s:
            raise AssertionError(f"{what} within {limit_s:.0f} s")
        await asyncio.sleep(every_s)
    return loop.time() - start


async def wait_owning(
    run: FaultRun, slots: Sequence[int], limit_s: float = 60.0, *, only: bool = False
) -> float:
    """Wait until each of ``slots``' processes owns a partition (PostgreSQL's ``partitions``);
    with ``only``, also until no other process owns one (the group has settled without the rest)."""
    from faults.cluster import owners

    async def cond() -> bool:
        have = set((await owners(run.conn, run.settings.input_partitions)).values())
        pids = {run.cluster.slots[s].pid for s in slots}
        return pids <= have and (not only or have <= pids)

    try:
        what = "every partition" if only else "partitions"
        return await sleep_until(cond, limit_s, f"workers {list(slots)} owning {what}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{run.cluster.logs_tail()}") from None


async def positions(run: FaultRun) -> dict[int, int]:
    """The stored next offset of every partition of the input topic (PostgreSQL, the truth)."""
    rows = await run.conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        run.settings.consumer_group,
        run.settings.topic_events,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def wait_positions(run: FaultRun, want: dict[int, int], limit_s: float) -> float:
    """Wait until the stored positions reach ``want``; answers the seconds it took."""

    async def cond() -> bool:
        have = await positions(run)
        return all(have.get(p, 0) >= e for p, e in want.items())

    try:
        return await sleep_until(cond, limit_s, f"partitions {sorted(want)} processed to {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (stored: {await positions(run)})\n{run.cluster.logs_tail()}") from None
