"""The whole benchmark, in order: servers → seed (database A, cloned to B) → one worker on A
(throughput, latency, rule change, ticks, audience) → baselines (fresh broker, same stream) → two
workers on B (throughput) → optional profiled run → results. Everything it created is removed at
the end (databases, Redis keys of its workspace, embedded servers); ``keep`` keeps the databases
(useful on a given server: embedded ones stop with the process anyway).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from .. import budget
from ..config import Settings
from ..kafka import ensure_topics, producer
from ..service.context import ServiceContext
from ..stores import postgres as pg
from ..stores.keys import glob_escape
from ..stores.reconcile import rebuild_and_diff
from ..stores.redis_client import connect_redis
from . import baselines, phases
from .kafkaio import EventFile, produce_all
from .profile import summarize_profile
from .results import Baseline, Results, ThroughputResult
from .seed import SeedResult, rules_document, seed_workspace
from .servers import Servers
from .session import Session
from .workload import WorkloadSpec, stream_events


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run and at which sizes (``segment-worker bench`` options)."""

    spec: WorkloadSpec = field(default_factory=WorkloadSpec)
    rate: float = 2000.0
    latency_seconds: float = 20.0
    partitions: int = 12
    tick_seconds: float = 5.0
    flips: int = 200
    scale_workers: int = 2
    upsert_events: int = 200_000
    faust: bool = True
    profile: bool = False
    profile_events: int = 100_000
    flip_lead: float = 8.0
    output: Path = Path("bench-results.json")
    chart: Path = Path("bench-chart.png")
    profile_output: Path = Path("bench-profile.txt")
    keep: bool = False
    worker_args: tuple[str, ...] = ()  # extra ``segment-worker run`` options (tests: faster group joins)
    skip: frozenset[str] = frozenset()  # of results.SKIPPABLE


class Ui:
    """What the runner reports to (the CLI draws it with rich; tests may pass a silent one)."""

    def phase(self, name: str, total: int | None = None) -> Callable[[int, int | None], None]:
        """A new phase; answers a progress callback ``(done, total)``."""
        return lambda done, total: None

    def updated(self, results: Results) -> None:
        """Results changed (a phase finished)."""


class _Timed(Ui):
    """Records each phase's wall time into the results, then passes the call on."""

    def __init__(self, inner: Ui, results: Results) -> None:
        self._inner = inner
        self._results = results
        self._current: tuple[str, float] | None = None

    def phase(self, name: str, total: int | None = None) -> Callable[[int, int | None], None]:
        self.close()
        self._current = (name, time.monotonic())
        return self._inner.phase(name, total)

    def close(self) -> None:
        """End the current phase's clock."""
        if self._current is not None:
            name, t0 = self._current
            self._results.phase_seconds[name] = round(time.monotonic() - t0, 3)
            self._current = None

    def updated(self, results: Results) -> None:
        self.close()
        self._inner.updated(results)


def machine() -> dict[str, Any]:
    """The machine the bench ran on, and how busy it was."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def run_bench(options: BenchOptions, ui: Ui, command: str, servers: Servers | None = None) -> Results:
    """Run every phase; answers the results (the caller writes them). ``servers``: run on these
    instead of the environment's or embedded ones (they are not stopped)."""
    spec = options.spec
    opts = {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, frozenset) else v)
            for k, v in asdict(options).items() if k != "spec"}
    results = Results(machine=machine(), command=command, options={**asdict(spec), **opts})
    ui = _Timed(ui, results)
    run_id = uuid.uuid4().hex[:8]
    ws = f"bench-{run_id}"
    work = Path(tempfile.mkdtemp(prefix="sw-bench-"))
    owned = servers is None
    servers = servers or await Servers.start()
    try:
        logs = servers.data_dir / "logs" if servers.data_dir else work
        logs.mkdir(parents=True, exist_ok=True)
        seed, db_a, db_b = await _seed(servers, options, ws, run_id, ui)
        results.seed = {"workspace_id": ws, **_seed_summary(seed)}
        ui.updated(results)
        done = ui.phase("encoding the event stream", spec.events)
        events = EventFile.write(work / "events.bin", stream_events(
            spec, ws, tag=f"s-{run_id}", start=datetime.now(UTC)), lambda n: done(n, spec.events))

        def session(name: str, dsn: str, workers: int, profile: Path | None = None) -> Session:
            return Session(servers, dsn, ws, run_id, name, workers, options.partitions, options.tick_seconds,
                           logs, profile, options.worker_args)

        ui.phase("1 worker: starting a broker and the worker")
        async with session("1w", db_a, 1) as s:
            one = await phases.throughput(s, events, ui.phase("1 worker: throughput"))
            results.throughput.append(one)
            ui.updated(results)
            if "latency" not in options.skip:
                await _latency(s, options, one, results, ui)
            if "rule-change" not in options.skip:
                ui.phase("1 worker: rule changes")
                results.rule_change = await phases.rule_change(s, seed)
                ui.updated(results)
            if "ticks" not in options.skip:
                ui.phase("1 worker: time ticks")
                results.ticks = await phases.ticks(s, seed, flips=options.flips, lead=options.flip_lead)
                ui.updated(results)
            if "audience" not in options.skip:
                ui.phase("1 worker: audience")
                results.audience = await phases.audience(s, seed)
        _rss(results, s)
        ui.updated(results)

        await _baselines(servers, options, results, events, db_a, ws, work, ui)

        if options.scale_workers > 1:
            n = options.scale_workers
            ui.phase(f"{n} workers: Redis from database B, a broker, the workers")
            await _reconcile(db_b, servers.redis_url, ws)
            async with session(f"{n}w", db_b, n) as s:
                scaled = await phases.throughput(s, events, ui.phase(f"{n} workers: throughput"))
                results.throughput.append(scaled)
            _rss(results, s)
            ui.updated(results)

        if options.profile:
            await _profiled(options, results, ws, run_id, work, db_a, session, ui)
        results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        ui.updated(results)
        return results
    finally:
        with contextlib.suppress(Exception):
            await _forget_redis(servers.redis_url, ws)
        if not options.keep:
            await servers.drop_databases()
            if owned:
                await servers.stop()
        shutil.rmtree(work, ignore_errors=True)


async def _latency(s: Session, options: BenchOptions, one: ThroughputResult, results: Results,
                   ui: Ui) -> None:
    spec = options.spec
    ui.phase(f"1 worker: latency at {options.rate:,.0f}/s")
    results.latency.append(await phases.latency(
        s, spec, rate=options.rate, seconds=options.latency_seconds,
        saturated=options.rate >= 0.9 * one.events_per_second))
    ui.updated(results)
    if options.rate >= 0.8 * one.events_per_second:
        # The requested rate saturates one worker (its latency is queueing): also measure
        # below saturation, at half the throughput just measured.
        rate = max(1.0, round(one.events_per_second / 2, -1))
        ui.phase(f"1 worker: latency at {rate:,.0f}/s (sub-saturation)")
        results.latency.append(await phases.latency(
            s, spec, rate=rate, seconds=options.latency_seconds, kind="sub-saturation"))
        ui.updated(results)


async def _seed(servers: Servers, options: BenchOptions, ws: str, run_id: str,
                ui: Ui) -> tuple[SeedResult, str, str]:
    name_a, name_b = f"sw_bench_{run_id}_a", f"sw_bench_{run_id}_b"
    db_a = await servers.create_database(name_a)
    ctx = await ServiceContext.open(Settings(database_url=db_a, redis_url=servers.redis_url,
                                             input_partitions=options.partitions))
    bars: dict[str, Callable[[int, int | None], None]] = {}

    def progress(step: str, done: int, total: int) -> None:
        if step not in bars:
            bars[step] = ui.phase(f"seeding: {step}", total)
        bars[step](done, total)

    try:
        seed = await seed_workspace(ctx, options.spec, ws, datetime.now(UTC), options.partitions, progress)
    finally:
        await ctx.close()
    # An exact twin for the scale-out run, copied before anything else touches A.
    db_b = await servers.create_database(name_b, template=name_a) if options.scale_workers > 1 else db_a
    return seed, db_a, db_b


def _seed_summary(seed: SeedResult) -> dict[str, Any]:
    kinds: dict[str, list[int]] = {}
    for s in seed.segments:
        kinds.setdefault(s.kind, []).append(s.members)
    return {
        "customers": seed.customers,
        "opted_out": seed.opted_out,
        "segments": len(seed.segments),
        "memberships": seed.memberships,
        "customers_seconds": seed.customers_seconds,
        "segments_seconds": seed.segments_seconds,
        "members_by_kind": {k: {"segments": len(v), "min": min(v), "median": sorted(v)[len(v) // 2],
                                "max": max(v)} for k, v in kinds.items()},
    }


def _rss(results: Results, s: Session) -> None:
    peaks = tuple(w.peak_rss for w in s.group.workers)
    for i, t in enumerate(results.throughput):
        if t.workers == s.workers and not t.peak_rss:
            results.throughput[i] = replace(t, peak_rss=peaks)


async def _baselines(servers: Servers, options: BenchOptions, results: Results, events: EventFile,
                     db_a: str, ws: str, work: Path, ui: Ui) -> None:
    spec = options.spec
    skip = options.skip
    document = rules_document(spec)
    if options.faust or "kafka-baseline" not in skip:
        done = ui.phase("baselines: producing the stream again", events.count)
        bootstrap = await servers.fresh_kafka()
        topic = f"{ws}-baseline-events"
        settings = Settings(kafka_bootstrap=bootstrap, topic_events=topic, topic_membership=f"{topic}-out",
                            topic_dlq=f"{topic}-dlq", input_partitions=options.partitions)
        await ensure_topics(bootstrap, settings)
        async with producer(bootstrap, client_id="bench-baseline") as prod:
            await produce_all(prod, topic, events.records(), lambda n: done(n, events.count))
        if "kafka-baseline" not in skip:
            ui.phase("baseline: raw Kafka consume")
            results.baselines.append(await baselines.kafka_consume(bootstrap, topic, options.partitions,
                                                                   events.count))
            ui.updated(results)
        if options.faust:
            ui.phase("baseline: faust agent")
            results.baselines.append(await baselines.faust(bootstrap, topic, options.partitions, events.count,
                                                           document, work / "faust"))
    if not options.faust:
        results.baselines.append(Baseline("faust", "faust-streaming agent", skipped="skipped: --no-faust"))
    ui.updated(results)
    pool = await pg.create_pool(db_a, min_size=1, max_size=2)
    try:
        if "upsert-baseline" not in skip:
            ui.phase("baseline: batched PostgreSQL upsert")
            limit = min(options.upsert_events, events.count)
            results.baselines.append(await baselines.pg_upsert(pool, ws, events, batch=2000, limit=limit))
            ui.updated(results)
        if "recompute-baseline" not in skip:
            ui.phase("baseline: full SQL recompute")
            results.baselines.append(await baselines.batch_recompute(pool, ws, document))
            ui.updated(results)
    finally:
        await pool.close()


async def _reconcile(dsn: str, redis_url: str, ws: str) -> None:
    """Make Redis match database B (the one-worker run changed the workspace's sets)."""
    pool = await pg.create_pool(dsn, min_size=1, max_size=2)
    redis = await connect_redis(Settings(redis_url=redis_url),
                                max_connections=budget.RECONCILE.redis_per_node)
    try:
        await rebuild_and_diff(pool, redis, ws, repair=True)
    finally:
        await redis.aclose()
        await pool.close()


async def _profiled(options: BenchOptions, results: Results, ws: str, run_id: str, work: Path, db_a: str,
                    session: Callable[..., Session], ui: Ui) -> None:
    if importlib.util.find_spec("pyinstrument") is None:
        results.profile = {"skipped": "install .[bench] (pyinstrument)"}
        return
    count = min(options.profile_events, options.spec.events)
    stream = EventFile.write(work / "profile.bin", stream_events(
        options.spec, ws, tag=f"p-{run_id}", start=datetime.now(UTC), count=count))
    saved = work / "worker.pyisession"
    ui.phase("profiled run: starting a broker and the worker")
    async with session("profile", db_a, 1, saved) as s:
        run: ThroughputResult = await phases.throughput(s, stream, ui.phase("profiled run (pyinstrument)"))
    out = options.profile_output.resolve()
    results.profile = {"tree": str(out), "events": run.events, "events_per_second": run.events_per_second,
                       "cpu_seconds": run.cpu_seconds, **summarize_profile(saved, out)}


async def _forget_redis(redis_url: str, ws: str) -> None:
    redis = await connect_redis(Settings(redis_url=redis_url), max_connections=1)
    try:
        batch: list[Any] = []
        async for key in redis.scan_iter(match=f"sw:{{{glob_escape(ws)}}}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await redis.unlink(*batch)
                batch.clear()
        if batch:
            await redis.unlink(*batch)
    finally:
        await redis.aclose()
