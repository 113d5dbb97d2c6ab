"""Ticks at the ends of time (issue 13): a valid far-future value (``created_at`` 9999-12-28 with an
``in_last_days 7`` segment) made every tick raise ``OverflowError``, so time-driven segments of that
worker stopped moving. Now such values flip nothing and break nothing; and a tick that still fails
for one workspace or one partition is skipped, logged and counted while every other one ticks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce
from helpers.scenario import Workspace, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.partitioning import partition_for
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker import ticker
from segment_worker.worker.clock import ManualClock

pytestmark = pytest.mark.timeout(120)

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RECENT = {"field": "created_at", "op": "in_last_days", "value": 7}


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def _members(redis: Redis, w: Workspace) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, sid in w.segments.items():
        out[name] = {m.decode() for m in await redis.smembers(segment_key(w.id, sid))}
    return out


async def _run(
    s: Settings,
    conn: Any,
    redis: Redis,
    clock: ManualClock,
    workspaces: Sequence[Workspace],
    events: list[dict[str, Any]],
    steps: Mapping[str, timedelta],
) -> tuple[dict[str, dict[str, dict[str, set[str]]]], dict[str, float]]:
    """Produce ``events``, then for each step move the clock and let three ticks pass; answer the
    Redis members of every workspace after each step and the tick failure counts."""
    ends = await produce(s.kafka_bootstrap, s.topic_events, [encode(e) for e in events])
    seen: dict[str, dict[str, dict[str, set[str]]]] = {}
    async with WorkerHarness(s, clock=clock) as h:
        for step, delta in steps.items():
            clock.set(START + delta)
            ticks = h.metric("segment_worker_ticks_total")
            await h.wait_for(lambda t=ticks: h.metric("segment_worker_ticks_total") >= t + 3, 20, "no tick")
            for w in workspaces:
                await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=w.id)
            seen[step] = {w.id: await _members(redis, w) for w in workspaces}
        failures = {
            scope: h.metric("segment_worker_tick_failures_total", {"scope": scope})
            for scope in ("workspace", "partition")
        }
    return seen, failures


SEGMENTS = {
    "Recent": RECENT,
    "Renewed this century": {"field": "attributes.renewal", "op": "in_last_days", "value": 36500},
    "Renewal ahead": {"field": "attributes.renewal", "op": "in_next_days", "value": 36500},
    "Anniversary": {"field": "created_at", "op": "anniversary_today"},
}


async def test_values_at_the_ends_of_time_never_stop_the_ticks(
    unique_settings: Settings, unique_name: Any, redis_url: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 0.1})
    far_ws, ws = unique_name("wsfar"), unique_name("wsnow")
    clock = ManualClock(START)
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    upsert, attrs = "customer.upserted", "customer.attributes_set"
    renewal = {"renewal": ("datetime", None)}
    try:
        # Only values at the ends in one workspace: each is the next flip candidate its probes find.
        far = await create_workspace(conn, far_ws, attributes=renewal, segments=SEGMENTS)
        w = await create_workspace(conn, ws, attributes=renewal, segments=SEGMENTS)
        at = START - timedelta(hours=1)
        events = [
            event(far_ws, "far", upsert, {"created_at": "9999-12-28T00:00:00Z"}, at),
            event(far_ws, "far", attrs, {"attributes": {"renewal": "9999-12-28T00:00:00Z"}}, at),
            event(far_ws, "last", upsert, {"created_at": "9999-12-31T23:59:59.999999Z"}, at),
            event(far_ws, "last", attrs, {"attributes": {"renewal": "9999-12-31T23:59:59.999999Z"}}, at),
            event(far_ws, "zero", upsert, {"created_at": "0001-01-01T00:00:00Z"}, at),  # Go's zero time
            event(far_ws, "zero", attrs, {"attributes": {"renewal": "0001-01-01T00:00:00Z"}}, at),
            event(ws, "new", upsert, {"created_at": _stamp(START - timedelta(days=6))}, at),
            event(ws, "rold", attrs, {"attributes": {"renewal": _stamp(START - timedelta(days=36499))}}, at),
            event(ws, "rsoon", attrs, {"attributes": {"renewal": _stamp(START + timedelta(days=36501))}}, at),
        ]
        seen, failures = await _run(
            s, conn, redis, clock, [far, w], events, {"start": timedelta(0), "later": timedelta(days=2)}
        )
    finally:
        await conn.close()
        await redis.aclose()
    nobody: dict[str, set[str]] = {name: set() for name in SEGMENTS}
    # created_at defaults to the first event for the attribute-only customers: an hour before START.
    assert seen["start"] == {
        far_ws: nobody,
        ws: {
            "Recent": {"new", "rold", "rsoon"},
            "Renewed this century": {"rold"},
            "Renewal ahead": set(),
            "Anniversary": {"rold", "rsoon"},
        },
    }
    assert seen["later"] == {  # time alone moved them all, in and out
        far_ws: nobody,
        ws: {"Recent": {"rold", "rsoon"}, "Renewed this century": set(), "Renewal ahead": {"rsoon"},
             "Anniversary": set()},
    }
    assert failures == {"workspace": 0, "partition": 0}


async def test_a_tick_that_fails_for_one_workspace_or_partition_skips_only_it(
    unique_settings: Settings, unique_name: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 0.1})
    broken_ws, ok_ws = unique_name("wsbad"), unique_name("wsok")
    # A fault only tests switch on: one workspace's re-check raises, and so does recording the
    # tick of the partition of customer "stuck" (outside the workspaces' savepoints).
    real_check, real_set_ticked = ticker.Ticker._check, pg.set_ticked_at
    bad_partition = partition_for(f"{ok_ws}:stuck".encode(), s.input_partitions)

    async def check(self: ticker.Ticker, conn: Any, entry: Any, *args: Any) -> Any:
        if entry.workspace_id == broken_ws:
            raise OverflowError("date value out of range (injected)")
        return await real_check(self, conn, entry, *args)

    async def set_ticked_at(conn: Any, partitions: Sequence[int], at: datetime) -> None:
        if bad_partition in partitions:
            raise ValueError(f"injected failure for partition {bad_partition}")
        await real_set_ticked(conn, partitions, at)

    monkeypatch.setattr(ticker.Ticker, "_check", check)
    monkeypatch.setattr(ticker.pg, "set_ticked_at", set_ticked_at)
    clock = ManualClock(START)
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        broken = await create_workspace(conn, broken_ws, segments={"Recent": RECENT})
        ok = await create_workspace(conn, ok_ws, segments={"Recent": RECENT})
        created = {"created_at": _stamp(START - timedelta(days=6))}
        others = [f"c{i}" for i in range(12) if partition_for(f"{ok_ws}:c{i}".encode(), s.input_partitions)
                  != bad_partition]
        assert others
        events = [
            event(broken_ws, "b1", "customer.upserted", created, START),
            event(ok_ws, "stuck", "customer.upserted", created, START),
            *(event(ok_ws, c, "customer.upserted", created, START) for c in others),
        ]
        seen, failures = await _run(
            s, conn, redis, clock, [broken, ok], events, {"start": timedelta(0), "later": timedelta(days=2)}
        )
    finally:
        await conn.close()
        await redis.aclose()
    assert seen["start"] == {broken_ws: {"Recent": {"b1"}}, ok_ws: {"Recent": {"stuck", *others}}}
    # The broken workspace and the broken partition did not move; everything else did.
    assert seen["later"] == {broken_ws: {"Recent": {"b1"}}, ok_ws: {"Recent": {"stuck"}}}
    assert failures["workspace"] >= 1 and failures["partition"] >= 1
