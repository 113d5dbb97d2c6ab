"""The consumer worker (``segment-worker run``): an aiokafka batch loop over the input topic.

Ownership: the consumer group assigns input partitions; on assignment the worker claims them in
PostgreSQL (epoch bump: a zombie that still thinks it owns one is fenced at its next commit),
applies Redis ops left pending, seeks to the positions stored in PostgreSQL and sends the outbox
left unsent. Each batch is one fenced unit of work (``batch.py``); then the outbox is sent and
offsets are committed to Kafka, best-effort (PostgreSQL holds the positions that matter).

Concurrency: batches, ticks, outbox sends and the rebalance callbacks take one ``asyncio.Lock``,
which is never held across ``getmany`` — a callback waiting for a lock held around ``getmany``
deadlocks the group (aiokafka issue 335). A revocation therefore waits for the batch in flight
to finish, then the partitions' caches are dropped.

Pipelining: after a full batch (a backlog) the next ``getmany`` and its parsing run in a task while
the batch holds the lock and waits on PostgreSQL; the batch never awaits that task. Its records are
used only for partitions still ready and not rewound or re-positioned since it answered (``fetching``).

Around it: ``partitions`` (the state of the partitions owned), ``ownership`` (rebalance callbacks,
claiming, positioning), ``positions`` (seeking, lag), ``batch`` (one batch's unit of work; the commit
order itself is written once, in ``stores.unit``), ``deadletter``, ``outbox`` (sending, LISTEN),
``ticker`` (time-relative re-checks), ``catalog_cache``, ``metrics``, ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from .. import budget, faultpoints
from ..config import Settings
from ..errors import FencedError as SwFencedError
from ..errors import StoreUnavailable
from ..kafka import create_consumer, create_producer, ensure_topics, on_connection_broken, start_client
from ..logs import partitions_context
from ..stores import postgres as pg
from ..stores.errors import FencedError
from ..stores.fencing import worker_application_name
from ..stores.redis_client import RedisClient, connect_redis
from ..stores.redis_fenced import on_wrong_type
from .batch import BatchOutcome, BatchProcessor, SortedRecords
from .catalog_cache import CatalogCache
from .clock import Clock, SystemClock
from .failures import Backoff
from .fetching import Fetched, fetch, usable
from .latency import EndToEnd
from .metrics import WorkerMetrics
from .outbox import OutboxListener, OutboxSender, Written, backlog
from .ownership import Ownership, RebalanceListener, topic_partitions
from .partitions import PartitionState
from .positions import consumer_lag
from .record_cache import RecordCache
from .ticker import REPLAN_SECONDS, Ticker, TickSchedule
from .topics import TopicGuard, watch_topics
from .watch import Watchdog, heal_redis

log = logging.getLogger(__name__)

_FENCED = (FencedError, SwFencedError)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Tuning knobs (defaults suit production; tests shorten the timeouts)."""

    max_records: int = 2000
    poll_timeout_ms: int = 500
    # How long the broker may hold a fetch that has no records yet. Kafka answers as soon as a
    # record arrives, but Tansu answers at this deadline (measured: at the default 500 ms every
    # record waited 0–250 ms before the worker saw it); an idle poll every 50 ms costs nothing.
    fetch_max_wait_ms: int = 50
    # A fetch answered from aiokafka's prefetch buffer (records that waited out the last batch) is
    # topped up by a second fetch of at most this long: what arrived since (``fetching.fetch``).
    top_up_ms: int = 20
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    owner: str | None = None
    outbox_batch_rows: int = 5000
    records_per_partition: int = 50_000
    pool_max_size: int = budget.LANE_PG_POOL  # plus the LISTEN connection: budget.LANE
    retry_backoff_seconds: float = 1.0
    # A failed batch (transient: connection lost, timeouts) is retried after a jittered exponential
    # backoff from this much up to the cap (``failures.Backoff``), so workers do not retry in step.
    batch_backoff_seconds: float = 0.1
    batch_backoff_max_seconds: float = 5.0
    commit_timeout_seconds: float = 5.0
    # Leaving the group waits for aiokafka's coordination task, which a group that never settles
    # keeps rejoining (seen on Tansu); past this the member expires instead.
    leave_timeout_seconds: float = 10.0
    # /healthz fails when the batch loop has not come round for this long (a hung store call).
    stall_seconds: float = 120.0
    # /healthz fails when an owned partition has lag and made no progress for this long (a batch
    # that keeps failing or waiting); checked every ``watch_seconds``.
    stuck_seconds: float = 120.0
    watch_seconds: float = 5.0
    # How often the running worker recreates topics a broker lost (a restart of the in-memory Tansu);
    # also at once when a log is seen to go back (``topics``). 0: only then.
    topics_check_seconds: float = 10.0
    # How often the Redis markers are checked (a Redis that lost data is rebuilt within this plus
    # the rebuild: CONTRACT §6 allows 60 s); 0 disables the check.
    redis_check_seconds: float = 10.0


def default_owner() -> str:
    """A name for this process in ``partitions.owner`` (host, pid, random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """One worker process's consumer, producer, stores and background tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        metrics: WorkerMetrics | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics or WorkerMetrics()
        self.options = options or WorkerOptions()
        self.owner = self.options.owner or default_owner()
        self.partitions = PartitionState()
        self.batches = 0
        self.fetched_ahead = 0  # fetches started while a batch was in flight (tests, logs)
        self.last_batch: BatchOutcome | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(self.options.batch_backoff_seconds, self.options.batch_backoff_max_seconds)
        self._tick_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started = False
        self._loop_at = time.monotonic()  # when the batch loop last came round (liveness)
        self._stuck: tuple[int, ...] = ()  # what the watchdog found last (liveness)
        self._pool: asyncpg.Pool | None = None
        self._redis: RedisClient | None = None
        self._producer: Any = None
        self._consumer: Any = None
        self._listener: OutboxListener | None = None
        # Made by start(), once the stores and clients they use are connected.
        self._outbox: OutboxSender | None = None
        self._processor: BatchProcessor | None = None
        self._ticker: Ticker | None = None
        self._ownership: Ownership | None = None
        self._records = RecordCache(
            self.options.records_per_partition, max_bytes=settings.record_cache_mb * 2**20
        )
        self._catalogs = CatalogCache()
        self._latency = EndToEnd(self.metrics)
        self._topics = TopicGuard()
        self._reposition = False  # a consumer connection broke: re-position before applying

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create topics if missing, record the input partition count, connect, join the group."""
        s = self.settings
        dsn = s.require_database_url()
        missing: list[str] = []
        counts = await ensure_topics(s, missing_out=missing)
        try:
            self._pool = pool = await pg.create_pool(
                dsn, min_size=1, max_size=self.options.pool_max_size,
                application_name=worker_application_name(s.consumer_group, self.owner),
            )
            async with pool.acquire() as conn:
                await pg.record_topic(conn, s.topic_events, counts[s.topic_events])
                if s.topic_events in missing:  # a new log: positions stored for an old one are void
                    await pg.new_incarnation(conn, s.topic_events)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(
                f"cannot reach PostgreSQL: {exc}", context={"operation": "worker start"}
            ) from exc
        try:
            self._redis = await connect_redis(s, max_connections=budget.LANE_REDIS)
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(
                f"cannot reach Redis: {exc}", context={"operation": "worker start"}
            ) from exc
        on_wrong_type(self._redis, lambda _key: self.metrics.errors.labels("redis_wrongtype").inc())
        self._producer = create_producer(s, client_id=f"segment-worker-{self.owner}")
        on_connection_broken(
            self._producer, lambda: self._topics.suspect("a connection to the Kafka broker broke")
        )
        await start_client(self._producer, s, "start producer")
        self._listener = OutboxListener(dsn, application_name=f"sw-listen {self.owner}")
        await self._listener.connect()
        self._outbox = OutboxSender(
            self._producer, s.topic_membership, self.metrics, batch_rows=self.options.outbox_batch_rows,
            latency=self._latency, guard=self._topics,
        )
        self._processor = BatchProcessor(
            pool=pool,
            redis=self._redis,
            producer=self._producer,
            clock=self.clock,
            metrics=self.metrics,
            group=s.consumer_group,
            topic=s.topic_events,
            dlq_topic=s.topic_dlq,
            catalogs=self._catalogs,
            records=self._records,
            before_commit=self._outbox.mark_in,
            on_connection=self._listener.ignore_pid,
            latency=self._latency,
            versions_format=s.versions_format,
        )
        self._ticker = Ticker(
            pool,
            self._redis,
            self._catalogs,
            self.clock,
            self.metrics,
            on_connection=self._listener.ignore_pid,
        )
        o = self.options
        self._consumer = create_consumer(
            s,
            group_id=s.consumer_group,
            client_id=f"segment-worker-{self.owner}",
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms,
            max_poll_interval_ms=o.max_poll_interval_ms,
            max_poll_records=o.max_records,
            fetch_max_wait_ms=o.fetch_max_wait_ms,
        )
        on_connection_broken(self._consumer, self._connection_broke)
        await start_client(self._consumer, s, "start consumer")
        self._ownership = Ownership(
            settings=s,
            metrics=self.metrics,
            owner=self.owner,
            state=self.partitions,
            lock=self._lock,
            consumer=self._consumer,
            pool=pool,
            redis=self._redis,
            records=self._records,
            outbox=self._outbox,
            latency=self._latency,
            send_outbox=self._send_outbox,
            on_assigned_done=self.tick_now,
            retry_backoff_seconds=o.retry_backoff_seconds,
            topics=self._topics,
        )
        self._consumer.subscribe([s.topic_events], listener=RebalanceListener(self._ownership))
        self._tasks = [
            asyncio.create_task(self._guard("housekeeping", self._housekeeping)),
            asyncio.create_task(self._guard("outbox", self._outbox_loop)),
            asyncio.create_task(self._guard("watchdog", self._watchdog)),
        ]
        self._tasks.append(asyncio.create_task(self._guard("topics", self._recreate_topics)))
        if o.redis_check_seconds > 0:
            self._tasks.append(asyncio.create_task(self._guard("redis-heal", self._heal_redis)))
        log.info(
            "worker %s started: group %s, input %s (%d partitions)",
            self.owner,
            s.consumer_group,
            s.topic_events,
            counts[s.topic_events],
        )

    def stop(self) -> None:
        """Ask ``run`` to finish the batch in flight and return."""
        self._stopping.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start, consume until ``stop`` is set (or ``stop()`` is called), then close cleanly."""
        waiter = asyncio.create_task(stop.wait()) if stop is not None else None
        if waiter is not None:
            waiter.add_done_callback(lambda _: self._stopping.set())
        try:
            await self.start()
            await self._loop()
        finally:
            if waiter is not None:
                waiter.cancel()
            await self.close()

    async def close(self) -> None:
        """Leave the group and close producer, consumer, connections (idempotent)."""
        self._stopping.set()
        for task in [*self._tasks, *([self._commit_task] if self._commit_task else [])]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._consumer is not None:
            if self.partitions.pending_commits():  # last best-effort commit: Kafka tools show the position
                await self._do_commit(self.partitions.take_commits())
            try:
                # Leaves the group: the others rebalance at once.
                await asyncio.wait_for(self._consumer.stop(), self.options.leave_timeout_seconds)
            except TimeoutError:
                log.warning("leaving the consumer group took over %.0f s; the broker expires the member",
                            self.options.leave_timeout_seconds)
            except Exception as exc:
                log.debug("consumer stop failed: %s", exc)
            self._consumer = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._listener is not None:
            await self._listener.close()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None
        self.partitions.clear()
        self.metrics.set_owned(self.owner, 0)

    @property
    def owned(self) -> Mapping[int, int]:
        """Owned input partition → epoch (probes, lanes, tests)."""
        return self.partitions.owned

    def liveness(self) -> tuple[bool, str]:
        """``/healthz``: the batch loop keeps coming round (safe to call from another thread)."""
        stalled = time.monotonic() - self._loop_at
        if stalled > self.options.stall_seconds:
            return False, f"batch loop stalled for {stalled:.0f} s"
        stuck = self._stuck
        if stuck:
            return False, (
                f"partitions {list(stuck)} have lag and made no progress for over "
                f"{self.options.stuck_seconds:.0f} s"
            )
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: started (stores reached, group joined) and not stopping."""
        if self._stopping.is_set():
            return False, "stopping"
        if not self._started:
            return False, "starting: connecting to Kafka, PostgreSQL and Redis"
        return True, f"{len(self.owned)} partitions owned"

    def tick_now(self) -> None:
        """Run the ticker at once instead of waiting for the next period (tests, operators)."""
        self._tick_wanted.set()

    # -- the batch loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        ahead: asyncio.Task[Fetched] | None = None
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            self._started = True
            while not self._stopping.is_set():
                self._loop_at = time.monotonic()
                if self.partitions.has_unready():
                    assert self._ownership is not None
                    await self._ownership.recover()
                fetching = ahead if ahead is not None else asyncio.create_task(self._fetch_parsed())
                ahead = None
                # getmany waits, past its timeout, for a rebalance in progress to end; a group that
                # never settles (seen on Tansu: endless rejoins) must not keep SIGTERM from close().
                await asyncio.wait((fetching, stopping), return_when=asyncio.FIRST_COMPLETED)
                if not fetching.done():
                    ahead = fetching  # cancelled below
                    break
                fetched = fetching.result()
                if self._reposition:
                    # Whatever was fetched may come from a log the broker started again. Partitions
                    # assigned later are positioned from PostgreSQL anyway.
                    self._reposition = False
                    assert self._ownership is not None
                    self._ownership.rewind(set(self.owned))
                    continue
                if not self._topics.verified:
                    # The broker may have lost the topics a batch writes (DLQ copies, re-keyed
                    # records): apply nothing until they are checked (``topics``); the records
                    # fetched stay valid, positions do not move meanwhile.
                    self._loop_at = time.monotonic()
                    while not await self._topics.wait_verified(1.0) and not self._stopping.is_set():
                        self._loop_at = time.monotonic()
                if fetched.error is not None:
                    log.warning("fetch failed: %s", fetched.error)
                    self.metrics.errors.labels("fetch").inc()
                    await asyncio.sleep(self.options.retry_backoff_seconds)
                    continue
                assert self._outbox is not None
                if not fetched.parts:
                    if self._outbox.has_unmarked:
                        await self._flush_marks()  # idle: no batch transaction is coming to carry them
                    continue
                if fetched.records >= self.options.max_records:
                    # A backlog: fetch and parse the next batch while this one waits on PostgreSQL.
                    # Below it, fetching after the batch picks up more records at lower latency.
                    ahead = asyncio.create_task(self._fetch_parsed())
                    self.fetched_ahead += 1
                async with self._lock:
                    batch = usable(fetched, self.partitions.ready().keys(), self.partitions.moves)
                    with partitions_context(batch.next_offsets):
                        ok = await self._batch(batch) if batch.records else True
                if not ok:
                    await asyncio.sleep(self._backoff.next())
                self._commit_kafka()  # commit order step 7 (stores.unit)
        finally:
            stopping.cancel()
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead

    def _connection_broke(self) -> None:
        """A consumer connection to a broker broke (``kafka.on_connection_broken``): the broker may
        have restarted without its log, and one grown past a partition's in-memory position would
        answer the next fetch from there, skipping the records before it — seen with a worker
        frozen across the restart and thawed while still a group member
        (``test_broker_restart_is_a_log_that_went_back[frozen_meanwhile]``). So the partitions are
        re-positioned from PostgreSQL, each checked against the record fingerprinted before its
        stored position (``seek_stored``), before anything fetched is applied; and the topics are
        checked. A network blip costs one probe per partition."""
        self._reposition = True
        self._topics.suspect("a connection to the Kafka broker broke")

    async def _fetch_parsed(self) -> Fetched:
        """``getmany`` (never under the lock), then parse its records."""
        o = self.options
        return await fetch(
            self._consumer, self.settings.topic_events, self._partition_count(), self.partitions.moves,
            timeout_ms=o.poll_timeout_ms, max_records=o.max_records, top_up_ms=o.top_up_ms,
        )

    async def _batch(self, batch: SortedRecords) -> bool:
        """Process one batch, isolating poison records (``BatchProcessor.run_isolating``); on a
        transient failure rewind its partitions (answers False: back off)."""
        assert self._processor is not None and self._ownership is not None
        parts = set(batch.next_offsets)
        try:
            outcome = await self._processor.run_isolating(batch, self.owned, self._partition_count())
        except _FENCED as exc:
            lost = self._fenced(exc, parts, "batch")
            self._ownership.rewind(parts - lost)
            return True
        except Exception as exc:
            log.error(
                "batch over partitions %s failed (transient, attempt %d): %s: %s; re-reading them from the"
                " stored offsets after a backoff", sorted(parts), self._backoff.attempts + 1,
                type(exc).__name__, exc, exc_info=True,
            )
            self.metrics.errors.labels("batch").inc()
            self._ownership.rewind(parts)
            return False
        self._backoff.reset()
        self.batches += 1
        log.debug("batch %s", outcome)
        self.last_batch = outcome
        self.partitions.consumed(batch.next_offsets)
        await self._send_outbox(self.owned, outcome.written)  # commit order step 6 (stores.unit)
        return True

    def _fenced(self, exc: BaseException, parts: Iterable[int], what: str) -> set[int]:
        """Another worker claimed partitions under a batch or a tick: drop them (answers which)."""
        assert self._ownership is not None
        lost = set(getattr(exc, "partitions", None) or parts)
        log.warning(
            "%s fenced on partitions %s (claimed by another worker); dropping them", what, sorted(lost)
        )
        self.metrics.fenced.inc()
        self._ownership.lose(lost)
        return lost

    async def _send_outbox(self, partitions: Iterable[int], written: Written | None = None) -> None:
        """Send the outbox of those of ``partitions`` still owned (under the lock): a batch's own
        rows from memory (``written``) when the sender can, else every unsent row read back."""
        assert self._pool is not None and self._outbox is not None
        try:
            owned = set(partitions) & self.owned.keys()
            if written is not None and owned >= written.cursors.keys():
                if await self._outbox.send_written(written):
                    return
            await self._outbox.drain(self._pool, owned)
        except Exception as exc:
            # The rows stay unsent; the next batch, tick or notification sends them in order.
            log.warning("sending the outbox failed: %s", exc)
            self.metrics.errors.labels("outbox").inc()

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return topic_partitions(self.settings.topic_events, partitions)

    def _partition_count(self) -> int:
        found = self._consumer.partitions_for_topic(self.settings.topic_events)
        return len(found) if found else self.settings.input_partitions

    async def _flush_marks(self) -> None:
        assert self._pool is not None and self._outbox is not None
        async with self._lock:
            try:
                await self._outbox.flush_marks(self._pool)
            except Exception as exc:
                log.warning("marking sent outbox rows failed (%s); they may be sent again", exc)
                self.metrics.errors.labels("outbox").inc()

    def _commit_kafka(self) -> None:
        """Commit consumed positions to Kafka in the background, one commit at a time."""
        if not self.partitions.pending_commits() or (
            self._commit_task is not None and not self._commit_task.done()
        ):
            return
        self._commit_task = asyncio.create_task(self._do_commit(self.partitions.take_commits()))

    async def _do_commit(self, offsets: dict[int, int]) -> None:
        faultpoints.reach("before_offsets_commit")
        try:
            assigned = self._consumer.assignment()
            valid = {tp: offsets[tp.partition] for tp in self._tps(offsets) if tp in assigned}
            if valid:
                await asyncio.wait_for(self._consumer.commit(valid), self.options.commit_timeout_seconds)
        except (KafkaError, TimeoutError) as exc:
            # Expected during a rebalance (aiokafka issue 929); PostgreSQL has the positions.
            log.debug("Kafka offset commit skipped: %s", exc)

    # -- background tasks ------------------------------------------------------------------------

    async def _guard(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping.is_set():
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s task failed; restarting it", name)
                self.metrics.errors.labels(name).inc()
                await asyncio.sleep(self.options.retry_backoff_seconds)

    async def _housekeeping(self) -> None:
        """Ticks (time-relative re-checks, then the outbox poll) just after the next instant a
        membership can flip, re-planned after batches, at once for newly owned partitions, and at
        least every ``tick_seconds`` (``ticker.TickSchedule``); every ``tick_seconds`` the LISTEN
        reconnect, lag and backlog."""
        assert self._pool is not None and self._listener is not None and self._ticker is not None
        loop = asyncio.get_running_loop()
        period = self.settings.tick_seconds
        plan = TickSchedule(period, loop.time())
        observe_due = loop.time() + period
        ticked: set[int] = set()  # the partitions the last tick covered (and planned for)
        batches = self.batches
        replan_after = loop.time()
        while not self._stopping.is_set():
            # Wake at least every floor: batches may have written values that flip sooner.
            wake = min(plan.due, observe_due, loop.time() + plan.floor)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_wanted.wait(), max(0.0, wake - loop.time()))
            forced = self._tick_wanted.is_set()
            self._tick_wanted.clear()
            now = loop.time()
            fresh = self.partitions.ready().keys() - ticked
            if forced or now >= plan.due or (fresh and now >= plan.not_before):
                next_flip = None
                async with self._lock:
                    ready = self.partitions.ready()
                    if ready:
                        try:
                            done = await self._ticker.tick(ready, plan_ahead=period)
                            self._records.evict(done.changed)
                            next_flip = done.next_flip
                        except _FENCED as exc:
                            self._fenced(exc, ready, "tick")
                        await self._send_outbox(self.owned)
                ticked, batches = set(ready), self.batches
                plan.ticked(loop.time())
                plan.flip_at(next_flip, self.clock.now(), loop.time())
            elif self.batches != batches and ticked and now >= replan_after:
                batches, replan_after = self.batches, now + REPLAN_SECONDS
                mine = sorted(ticked & self.owned.keys())
                wall, now = self.clock.now(), loop.time()
                plan.flip_at(await self._ticker.next_boundary(mine, plan.until(wall, now)), wall, now)
            if loop.time() >= observe_due:
                observe_due = loop.time() + period
                await self._listener.connect()
                await self._observe()

    async def _outbox_loop(self) -> None:
        """Send other writers' commits (API calls) as soon as they are notified."""
        assert self._listener is not None
        while not self._stopping.is_set():
            await self._listener.event.wait()
            notified = self._listener.take()
            async with self._lock:
                await self._send_outbox(notified & set(self.owned))

    async def _watchdog(self) -> None:
        assert self._pool is not None
        o = self.options
        dog = Watchdog(self._consumer, self._pool, self.settings, self.partitions, o.stuck_seconds)
        while not self._stopping.is_set():
            await asyncio.sleep(o.watch_seconds)
            self._stuck = await dog.check()
            self.metrics.set_stuck(self.owner, len(self._stuck))

    async def _heal_redis(self) -> None:
        assert self._pool is not None and self._redis is not None
        wait = self.options.redis_check_seconds
        while not self._stopping.is_set():
            await asyncio.sleep(wait)
            try:
                await heal_redis(self._pool, self._redis, self.metrics)
                wait = self.options.redis_check_seconds
            except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Typically the first command on a connection to a Redis that restarted: check
                # again soon rather than a whole period later (the 60 s bound, CONTRACT §6).
                log.warning("checking Redis for lost data failed (%s); again in 1 s", exc)
                self.metrics.errors.labels("redis-heal").inc()
                wait = min(1.0, self.options.redis_check_seconds)

    async def _recreate_topics(self) -> None:
        """The topics task (``topics.watch_topics``)."""
        assert self._pool is not None and self._ownership is not None
        pool, ownership = self._pool, self._ownership

        async def input_recreated() -> None:
            async with pool.acquire() as conn:
                await pg.new_incarnation(conn, self.settings.topic_events)
            async with self._lock:
                ownership.rewind(set(self.owned))

        async def confirmed() -> None:
            async with self._lock:
                await self._send_outbox(self.owned)

        await watch_topics(
            self.settings, self._topics, self.options.topics_check_seconds,
            on_input_recreated=input_recreated, on_confirmed=confirmed,
        )

    async def _observe(self) -> None:
        """Consumer lag per owned partition, the outbox backlog and its oldest row's age (the gauges)."""
        assert self._pool is not None
        owned = sorted(self.owned)
        rows, oldest = await backlog(self._pool, owned)
        self.metrics.set_backlog(self.owner, rows)
        # The age on the clock that wrote the rows' ``at`` (the worker's; a test may fake it).
        age = 0.0 if oldest is None else max(0.0, (self.clock.now() - oldest).total_seconds())
        self.metrics.set_oldest_unsent(self.owner, age)
        tps = [tp for tp in self._tps(owned) if tp in self._consumer.assignment()]
        for tp, lag in (await consumer_lag(self._consumer, tps)).items():
            self.metrics.consumer_lag.labels(str(tp.partition)).set(lag)
