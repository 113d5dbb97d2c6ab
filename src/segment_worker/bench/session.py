"""One measurement session: a fresh broker with topics of its own, ``n`` workers on one of the
bench's databases, a watcher of the output topic, and the service layer (the API's code) on the
same database. Phases (``phases.py``) run inside a session.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaProducer

from ..config import Settings
from ..kafka import ensure_topics, producer
from ..service.context import ServiceContext
from .kafkaio import OutputWatcher
from .procs import WorkerGroup, cpu_seconds, spawn_worker
from .servers import BenchError, Servers

STALL_SECONDS = 180.0


@dataclass(slots=True)
class Session:
    """Everything a phase needs; use ``async with``."""

    servers: Servers
    database_url: str
    workspace_id: str
    run_id: str
    name: str
    workers: int
    partitions: int
    tick_seconds: float
    log_dir: Path
    profile: Path | None = None
    worker_args: tuple[str, ...] = ()
    settings: Settings = field(init=False)
    ctx: ServiceContext = field(init=False)
    group: WorkerGroup = field(init=False)
    watcher: OutputWatcher = field(init=False)

    async def __aenter__(self) -> Session:
        bootstrap = await self.servers.fresh_kafka()
        prefix = f"bench-{self.run_id}-{self.name}"
        self.settings = Settings(
            kafka_bootstrap=bootstrap, database_url=self.database_url, redis_url=self.servers.redis_url,
            topic_events=f"{prefix}-events", topic_membership=f"{prefix}-membership",
            topic_dlq=f"{prefix}-dlq", consumer_group=f"{prefix}-group", tick_seconds=self.tick_seconds,
            input_partitions=self.partitions,
        )
        await ensure_topics(self.settings)
        self.ctx = await ServiceContext.open(self.settings)
        procs = [spawn_worker(self.settings, self.log_dir / f"worker-{self.name}-{k}.log",
                              profile=self.profile if k == 0 else None, args=self.worker_args)
                 for k in range(self.workers)]
        self.group = WorkerGroup(procs)
        try:
            await self.group.wait_ready(self.partitions)
            self.watcher = OutputWatcher(self.settings, self.settings.topic_membership)
            await self.watcher.start(self.partitions)
        except BaseException:
            await self.group.stop()
            await self.ctx.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.watcher.stop()
        await self.group.stop()
        await self.ctx.close()

    def producer(self) -> AbstractAsyncContextManager[AIOKafkaProducer]:
        """A started producer for the session's broker (``async with``)."""
        return producer(self.settings, client_id=f"bench-{self.run_id}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the workers, each server we run, and the bench itself."""
        comps: dict[str, list[int]] = {"workers": self.group.pids}
        for name, pid in self.servers.pids.items():
            comps[name] = [pid]
        out = cpu_seconds(comps)
        out["bench"] = cpu_seconds({"bench": [os.getpid()]}, children=False)["bench"]
        return out

    async def processed(self) -> int:
        """Input records the workers have committed (their stored positions, summed)."""
        n = await self.ctx.pool.fetchval(
            "SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
            self.settings.consumer_group, self.settings.topic_events,
        )
        return int(n)

    async def last_transition_id(self) -> int:
        """The newest outbox row id (transitions after it belong to what follows)."""
        return int(await self.ctx.pool.fetchval("SELECT COALESCE(max(id), 0) FROM transitions"))

    async def transitions_since(self, after_id: int) -> int:
        """Transitions committed after ``after_id`` (each one CloudEvent on the output topic)."""
        return int(await self.ctx.pool.fetchval("SELECT count(*) FROM transitions WHERE id > $1", after_id))

    async def wait_processed(self, total: int, on_progress: Callable[[int], None] | None = None) -> float:
        """Until the stored positions reach ``total`` (the topic's records); answers that instant.
        Fails when the workers make no progress for ``STALL_SECONDS`` or one dies."""
        best, since = -1, time.monotonic()
        while True:
            done = await self.processed()
            now = time.monotonic()
            if on_progress is not None:
                on_progress(done)
            if done >= total:
                return now
            self.group.check_alive()
            if done > best:
                best, since = done, now
            elif now - since > STALL_SECONDS:
                raise BenchError(
                    f"the workers processed nothing for {STALL_SECONDS:.0f}s ({done} of {total})",
                    retriable=True, context={"done": done, "total": total})
            await asyncio.sleep(0.05)
