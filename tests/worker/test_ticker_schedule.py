"""Ticks run at the flips, not only every ``tick_seconds``: with the default 5 s period a flip is
visible well within a second of its boundary — a boundary a batch just created, one that is not
the first of the window, a datetime attribute's, and a workspace's local midnight — and never
before it. Each scenario forces a tick first, so a worker ticking only on its period would show
its flips seconds late."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import create_workspace, encode, event
from segment_worker.config import Settings
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker.clock import Clock, ShiftedClock, SystemClock
from segment_worker.worker.ticker import REPLAN_SECONDS, TICK_FLOOR_SECONDS, TICK_SLACK_SECONDS, TickSchedule

pytestmark = pytest.mark.timeout(120)

VISIBLE_WITHIN = 1.0  # seconds after the boundary (the old fixed period: up to 5 s)
DAY = timedelta(days=1)


def test_schedule_ticks_after_the_flip_between_floor_and_period() -> None:
    wall = datetime(2026, 3, 10, 12, tzinfo=UTC)
    s = TickSchedule(5.0, 100.0)
    assert s.due == 105.0 and s.floor == TICK_FLOOR_SECONDS
    s.ticked(100.0)
    s.flip_at(None, wall, 100.0)
    assert s.due == 105.0  # nothing known: the period
    s.flip_at(wall + timedelta(seconds=2), wall, 100.0)
    assert s.due == pytest.approx(102.0 + TICK_SLACK_SECONDS)
    s.flip_at(wall + timedelta(seconds=3), wall, 100.0)
    assert s.due == pytest.approx(102.0 + TICK_SLACK_SECONDS)  # a later flip never delays
    s.flip_at(wall - timedelta(seconds=1), wall, 100.0)
    assert s.due == 100.0 + TICK_FLOOR_SECONDS  # overdue: as soon as the floor allows
    assert s.until(wall, 100.0) == wall + timedelta(seconds=TICK_FLOOR_SECONDS)
    # A period shorter than the floor is the floor.
    assert TickSchedule(0.1, 0.0).floor == 0.1


async def _forced_tick(h: WorkerHarness) -> None:
    ticks = h.metric("segment_worker_ticks_total")
    h.worker.tick_now()
    await h.wait_for(lambda: h.metric("segment_worker_ticks_total") > ticks, 20, "no forced tick")


async def _watch(
    redis: Redis,
    clock: Clock,
    ws: str,
    expect: Mapping[tuple[UUID, str], tuple[bool, datetime]],
    limit_s: float = 15.0,
) -> dict[tuple[UUID, str], float]:
    """For each (segment, customer): seconds from its boundary to the change to membership
    ``expect[…][0]`` in Redis (negative: it changed early)."""
    seen: dict[tuple[UUID, str], float] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while len(seen) < len(expect) and loop.time() < deadline:
        for (sid, cid), (member, boundary) in expect.items():
            if (sid, cid) not in seen and await redis.sismember(segment_key(ws, sid), cid) == member:
                seen[(sid, cid)] = (clock.now() - boundary).total_seconds()
        await asyncio.sleep(0.01)
    return seen


async def _members(redis: Redis, ws: str, sid: UUID) -> set[str]:
    return {m.decode() for m in await redis.smembers(segment_key(ws, sid))}


async def _until_members(
    redis: Redis, ws: str, want: Mapping[UUID, set[str]], clock: Clock, by: datetime
) -> None:
    """Wait until the segments hold ``want`` (the setup), which must happen before ``by``."""
    while {sid: await _members(redis, ws, sid) for sid in want} != want:
        assert clock.now() < by, "the setup did not settle before the boundaries"
        await asyncio.sleep(0.02)


async def test_flips_within_a_second_of_their_boundaries(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 5.0})
    ws, clock = workspace_id, SystemClock()
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(
            conn,
            ws,
            attributes={"appointment": ("datetime", None)},
            segments={
                "Active last day": {"field": "last_interaction_at", "op": "in_last_days", "value": 1},
                "Appointment soon": {"field": "attributes.appointment", "op": "in_next_days", "value": 1},
            },
        )
        active, soon = w.segments["Active last day"], w.segments["Appointment soon"]
        async with WorkerHarness(s, clock=clock) as h:
            await _forced_tick(h)
            t = clock.now()
            # Three flips in one 5 s window, none of them known to the last tick: a batch writes them.
            a, b, c = (t + timedelta(seconds=x) for x in (2.0, 2.7, 3.5))
            appointment = {"attributes": {"appointment": b.isoformat()}}
            await produce(
                kafka_bootstrap,
                s.topic_events,
                [
                    encode(event(ws, "x", "customer.interaction", {"direction": "incoming"}, a - DAY)),
                    encode(event(ws, "z", "customer.attributes_set", appointment, t)),
                    encode(event(ws, "y", "customer.interaction", {"direction": "incoming"}, c - DAY)),
                ],
            )
            await _until_members(redis, ws, {active: {"x", "y"}, soon: {"z"}}, clock, a)
            flips = {(active, "x"): (False, a), (soon, "z"): (False, b), (active, "y"): (False, c)}
            delays = await _watch(redis, clock, ws, flips)
    finally:
        await conn.close()
        await redis.aclose()
    assert len(delays) == 3, delays
    assert all(0 <= d <= VISIBLE_WITHIN for d in delays.values()), delays


async def test_flips_within_a_second_of_the_workspace_midnight(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 5.0})
    ws = workspace_id
    # Midnight in New York (EDT, UTC-4) at the start of Wednesday 11 March 2026; UTC's is hours away.
    midnight = datetime(2026, 3, 11, 4, tzinfo=UTC)
    clock = ShiftedClock(midnight - timedelta(hours=1))
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(
            conn,
            ws,
            timezone="America/New_York",
            attributes={"renewal": ("date", None)},
            segments={
                "Interacted today": {"field": "last_interaction_at", "op": "is_today"},
                "Renewal today": {"field": "attributes.renewal", "op": "is_today"},
            },
        )
        today, renewal = w.segments["Interacted today"], w.segments["Renewal today"]
        async with WorkerHarness(s, clock=clock) as h:
            start = clock.now()
            tomorrow = {"attributes": {"renewal": date(2026, 3, 11).isoformat()}}
            await produce(
                kafka_bootstrap,
                s.topic_events,
                [
                    encode(event(ws, "x", "customer.interaction", {"direction": "incoming"}, start)),
                    encode(event(ws, "y", "customer.attributes_set", tomorrow, start)),
                ],
            )
            await _until_members(redis, ws, {today: {"x"}, renewal: set()}, clock, midnight)
            clock.set(midnight - timedelta(seconds=2))
            await _forced_tick(h)  # the last tick before midnight; no batch follows it
            flips = {(today, "x"): (False, midnight), (renewal, "y"): (True, midnight)}
            delays = await _watch(redis, clock, ws, flips)
    finally:
        await conn.close()
        await redis.aclose()
    assert len(delays) == 2, delays
    assert all(0 <= d <= VISIBLE_WITHIN for d in delays.values()), delays


async def test_batches_re_plan_at_most_once_a_second(
    unique_settings: Settings, workspace_id: str, kafka_bootstrap: str
) -> None:
    """Re-planning after batches probes every time index; under a steady stream of batches it runs
    at most once per ``REPLAN_SECONDS`` (at 1M customers each probe cost 300–650 ms)."""
    s = unique_settings.model_copy(update={"tick_seconds": 30.0})
    ws, clock = workspace_id, SystemClock()
    conn = await pg.connect(s.require_database_url())
    try:
        active = {"field": "last_interaction_at", "op": "in_last_days", "value": 1}
        await create_workspace(conn, ws, segments={"Active last day": active})
        async with WorkerHarness(s, clock=clock) as h:
            await _forced_tick(h)
            ticker = h.worker._ticker
            calls: list[float] = []
            real = ticker.next_boundary

            async def counted(*args: Any, **kwargs: Any) -> datetime | None:
                calls.append(asyncio.get_running_loop().time())
                return await real(*args, **kwargs)

            ticker.next_boundary = counted  # type: ignore[method-assign]
            batches = h.worker.batches
            loop = asyncio.get_running_loop()
            end = loop.time() + 3.0
            n = 0
            while loop.time() < end:  # a batch every ~0.1 s
                n += 1
                ev = event(ws, f"c{n}", "customer.interaction", {"direction": "incoming"}, clock.now())
                await produce(kafka_bootstrap, s.topic_events, [encode(ev)])
                await asyncio.sleep(0.1)
            await h.wait_for(lambda: h.worker.batches >= batches + 10, 10, "too few batches")
    finally:
        await conn.close()
    assert calls, "batches never re-planned"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(g >= REPLAN_SECONDS - 0.05 for g in gaps), gaps
    assert len(calls) <= 3.0 / REPLAN_SECONDS + 2, calls
