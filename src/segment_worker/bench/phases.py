"""The measurements on our worker, each inside a ``Session``: end-to-end throughput, latency at a
fixed rate, rule changes, time ticks, an audience. Each answers a frozen result (``results.py``).

"Done" always means visible to a consumer: the stored positions are past the last input record
(its effects committed in PostgreSQL) *and* every transition committed since the phase began has
been consumed from the output topic (the outbox is sent only after the partition's Redis ops are
applied, so Redis holds them too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..service import audiences as audiences_svc
from ..service import segments as segments_svc
from ..stores import postgres as pg
from .kafkaio import EventFile, produce_all, produce_at_rate, record_of
from .results import (
    AudienceResult,
    LatencyResult,
    RuleChangeResult,
    RuleChangeStep,
    ThroughputResult,
    TickResult,
    summarize,
)
from .seed import SeedResult
from .segments import FLIP_RULE, NEW_RULE, SWAP_EDIT
from .session import Session
from .workload import WorkloadSpec, flip_events, stream_events

Progress = Callable[[int, int], None]
_EMIT_TIMEOUT = 300.0


async def throughput(s: Session, events: EventFile, progress: Progress | None = None) -> ThroughputResult:
    """Produce every event flat out and wait until all its effects are visible."""
    timeline: list[tuple[float, int, int]] = []
    id0 = await s.last_transition_id()
    seen0 = s.watcher.total
    batch0 = await _batch_totals(s)
    cpu0 = s.cpu()
    t0 = time.monotonic()

    async def sample() -> None:
        while True:
            timeline.append((time.monotonic() - t0, await s.processed(), s.watcher.total - seen0))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        async with s.producer() as prod:
            produced = await produce_all(prod, s.settings.topic_events, events.records())
        t_produced = time.monotonic()
        t_processed = await s.wait_processed(
            produced, (lambda done: progress(done, produced)) if progress else None
        )
        expected = await s.transitions_since(id0)
        t_emitted = await s.watcher.wait_total(seen0 + expected, within=_EMIT_TIMEOUT)
        t_end = max(t_processed, t_emitted)
        timeline.append((t_end - t0, produced, s.watcher.total - seen0))
    finally:
        sampler.cancel()
    cpu1 = s.cpu()
    batches, _, busy = (b - a for a, b in zip(batch0, await _batch_totals(s), strict=True))
    wall = t_end - t0
    return ThroughputResult(
        workers=s.workers,
        events=produced,
        seconds=wall,
        events_per_second=produced / wall,
        produce_seconds=t_produced - t0,
        transitions=expected,
        timeline=tuple(timeline),
        cpu_seconds={k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1},
        batches=int(batches),
        batch_seconds=busy,
    )


async def latency(s: Session, spec: WorkloadSpec, *, rate: float, seconds: float, kind: str = "requested",
                  saturated: bool = False) -> LatencyResult:
    """Produce at ``rate`` events/s for ``seconds``; latency = send → its CloudEvent consumed."""
    id0 = await s.last_transition_id()
    seen0 = s.watcher.total
    before = await s.processed()
    batch0 = await _batch_totals(s)
    # Occurrence times follow the send schedule, a second in the past (never ahead of the worker).
    start = datetime.now(UTC) - timedelta(seconds=1)
    stream = stream_events(spec, s.workspace_id, tag=f"lat-{kind}-{s.run_id}", start=start,
                           count=int(rate * seconds) + 10_000, step=timedelta(seconds=1 / rate))
    s.watcher.sent_at.clear()
    s.watcher.latencies.clear()
    async with s.producer() as prod:
        t0 = time.monotonic()
        sent = await produce_at_rate(prod, s.settings.topic_events, stream, rate=rate,
                                     sent_at=s.watcher.sent_at, stop_after=seconds)
        t1 = time.monotonic()
    await s.wait_processed(before + sent)
    await s.watcher.wait_total(seen0 + await s.transitions_since(id0), within=_EMIT_TIMEOUT)
    samples = list(s.watcher.latencies)
    s.watcher.sent_at.clear()
    batches, records, busy = (b - a for a, b in zip(batch0, await _batch_totals(s), strict=True))
    return LatencyResult(rate=rate, seconds=t1 - t0, events=sent, achieved_rate=sent / (t1 - t0),
                         samples=len(samples), summary=summarize(samples), curve=_curve(samples), kind=kind,
                         saturated=saturated, batches=int(batches), batch_records=records / max(1, batches),
                         batch_seconds=busy / max(1, batches))


async def _batch_totals(s: Session) -> tuple[float, float, float]:
    """The workers' batches so far: how many, their records and seconds (summed histograms)."""
    count, records, seconds = await s.group.metrics(
        "segment_worker_batch_duration_seconds_count", "segment_worker_batch_size_sum",
        "segment_worker_batch_duration_seconds_sum",
    )
    return count, records, seconds


def _curve(samples: list[float]) -> tuple[float, ...]:
    """Latency at each percentile 0..100 (for the chart's CDF)."""
    if not samples:
        return ()
    ordered = sorted(samples)
    return tuple(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] for q in range(101))


async def _transition_kinds(s: Session, segment_id: object, after_id: int) -> tuple[int, int]:
    row = await s.ctx.pool.fetchrow(
        "SELECT count(*) FILTER (WHERE kind = 'entered') AS e, count(*) FILTER (WHERE kind = 'exited') AS x"
        " FROM transitions WHERE segment_id = $1 AND id > $2", segment_id, after_id,
    )
    assert row is not None
    return int(row["e"]), int(row["x"])


async def rule_change(s: Session, seed: SeedResult) -> RuleChangeResult:
    """Create a ~10% segment, then edit the swap window (~5% out, ~5% in); time until each call
    answers (committed in PostgreSQL and Redis) and until its last CloudEvent is consumed."""
    ws = s.workspace_id
    id0 = await s.last_transition_id()
    t0 = time.monotonic()
    seg = await segments_svc.create_segment(ctx=s.ctx, workspace_id=ws, name=f"bench {s.run_id}: new 10%",
                                            type="dynamic", rules=NEW_RULE)
    t_api = time.monotonic()
    entered, exited = await _transition_kinds(s, seg.id, id0)
    t_seen = await s.watcher.wait_segment(str(seg.id), entered + exited, within=_EMIT_TIMEOUT)
    create = RuleChangeStep(entered, exited, t_api - t0, max(t_seen, t_api) - t0)

    swap = seed.segment("swap")[0]
    id1 = await s.last_transition_id()
    base = s.watcher.segments[str(swap.id)].count if str(swap.id) in s.watcher.segments else 0
    t0 = time.monotonic()
    await segments_svc.update_segment(s.ctx, ws, swap.id, rules=SWAP_EDIT)
    t_api = time.monotonic()
    entered, exited = await _transition_kinds(s, swap.id, id1)
    t_seen = await s.watcher.wait_segment(str(swap.id), base + entered + exited, within=_EMIT_TIMEOUT)
    edit = RuleChangeStep(entered, exited, t_api - t0, max(t_seen, t_api) - t0)
    return RuleChangeResult(customers=seed.customers, create=create, edit=edit)


async def ticks(s: Session, seed: SeedResult, *, flips: int, lead: float) -> TickResult:
    """Interactions of ``flips`` new customers that leave "interacted in the last day" by time alone,
    at boundaries spread over two tick periods starting ``lead`` seconds from now: the delay from
    each boundary to its exit event consumed; and the mean cost of the ticks run meanwhile (the
    workers' ``tick_duration`` metric)."""
    flip_seg = next(x for x in seed.segment("time") if x.name.endswith("Interacted in the last day"))
    key = str(flip_seg.id)
    sum0 = await s.group.metric("segment_worker_tick_duration_seconds_sum")
    n0 = await s.group.metric("segment_worker_tick_duration_seconds_count")
    s.watcher.watch_exits.add(key)
    wall, mono = datetime.now(UTC), time.monotonic()
    spread = 2 * s.tick_seconds
    offsets = [lead + spread * k / max(1, flips - 1) for k in range(flips)]
    tag = f"flip-{s.run_id}"
    events = flip_events(s.workspace_id, boundaries=[wall + timedelta(seconds=o) for o in offsets], tag=tag)
    async with s.producer() as prod:
        await produce_all(prod, s.settings.topic_events, (record_of(e) for e in events))
    due = {f"flip-{tag}-{k}": mono + o for k, o in enumerate(offsets)}
    deadline = mono + lead + spread + 4 * s.tick_seconds + 60
    while time.monotonic() < deadline:
        if sum(1 for (sid, cid) in s.watcher.time_exits if sid == key and cid in due) >= flips:
            break
        s.group.check_alive()
        await asyncio.sleep(0.05)
    delays = [t - due[cid] for (sid, cid), t in s.watcher.time_exits.items() if sid == key and cid in due]
    sum1 = await s.group.metric("segment_worker_tick_duration_seconds_sum")
    n1 = await s.group.metric("segment_worker_tick_duration_seconds_count")
    ticks_n = int(n1 - n0)
    return TickResult(
        tick_seconds=s.tick_seconds,
        time_relative_segments=len(seed.segment("time")),
        ticks=ticks_n,
        mean_tick_seconds=(sum1 - sum0) / ticks_n if ticks_n else None,
        flip_rule=str(FLIP_RULE),
        flips=flips,
        flips_seen=len(delays),
        delay=summarize(delays),
    )


async def audience(s: Session, seed: SeedResult) -> AudienceResult:
    """Materialise the union of five segments minus opted-out customers (``POST /audiences``)."""
    chosen = (seed.segment("medium") + seed.segment("broad") + seed.segment("narrow"))[:5]
    t0 = time.monotonic()
    aud = await audiences_svc.create_audience(s.ctx, s.workspace_id, [str(x.id) for x in chosen])
    seconds = time.monotonic() - t0
    await s.ctx.redis.delete(aud.redis_key)
    async with s.ctx.pool.acquire() as conn:
        sizes = await pg.segment_member_counts(conn, [x.id for x in chosen])
    return AudienceResult(segments=tuple(x.name for x in chosen), count=aud.count, seconds=seconds,
                          members_in=sum(sizes.values()))
