"""Time passing alone moves customers (CONTRACT §4, §10): the ticker re-checks time-relative
segments over ``(ticked_at, now]`` with an injected clock, calendar operators flip at the local
midnight of the workspace timezone (not at UTC midnight), and downtime is covered on restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import create_workspace, encode, event, expected_members, final_states, wait_caught_up
from segment_worker.config import Settings
from segment_worker.rules.model import Condition, FieldDef, FieldType
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker.clock import ManualClock
from segment_worker.worker.ticker import candidates_sql

pytestmark = pytest.mark.timeout(120)

NY = "America/New_York"
# 08:00 EDT on Tuesday 10 March 2026 (DST began on Sunday the 8th: UTC-4).
START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


async def test_time_moves_customers_at_the_workspace_midnight(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 0.1})
    ws = workspace_id
    clock = ManualClock(START)
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(
            conn,
            ws,
            timezone=NY,
            attributes={"renewal": ("date", None)},
            segments={
                "Active last day": {"field": "last_interaction_at", "op": "in_last_days", "value": 1},
                "Renewal today": {"field": "attributes.renewal", "op": "is_today"},
                "Interacted today": {"field": "last_interaction_at", "op": "is_today"},
            },
        )
        active, renewal, today = (
            w.segments[n] for n in ("Active last day", "Renewal today", "Interacted today")
        )

        async def members() -> dict[object, set[str]]:
            return {
                sid: {m.decode() for m in await redis.smembers(segment_key(ws, sid))}
                for sid in w.segments.values()
            }

        async def settle(h: WorkerHarness, at: datetime) -> dict[object, set[str]]:
            """Move the clock, let at least two ticks pass, check every store against the evaluator."""
            clock.set(at)
            ticks = h.metric("segment_worker_ticks_total")
            await h.wait_for(lambda: h.metric("segment_worker_ticks_total") >= ticks + 2, 20, "no tick")
            await wait_caught_up(conn, s.consumer_group, s.topic_events, {}, workspace_id=ws)
            got = await members()
            assert got == expected_members(w, await final_states(conn, ws), at)
            stored = {
                sid: {
                    r[0]
                    for r in await conn.fetch(
                        "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", sid
                    )
                }
                for sid in w.segments.values()
            }
            assert stored == got
            return got

        async with WorkerHarness(s, clock=clock) as h:
            ends = await produce(
                kafka_bootstrap,
                s.topic_events,
                [
                    encode(
                        event(
                            ws,
                            "x",
                            "customer.interaction",
                            {"direction": "incoming"},
                            START - timedelta(hours=1),
                        )
                    ),
                    encode(
                        event(
                            ws,
                            "y",
                            "customer.attributes_set",
                            {"attributes": {"renewal": "2026-03-11"}},
                            START,
                        )
                    ),
                ],
            )
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            assert await settle(h, START) == {active: {"x"}, renewal: set(), today: {"x"}}
            # UTC midnight is not the workspace's: nothing moves.
            assert await settle(h, datetime(2026, 3, 11, 0, 30, tzinfo=UTC)) == {
                active: {"x"},
                renewal: set(),
                today: {"x"},
            }
            assert await settle(h, datetime(2026, 3, 11, 3, 59, tzinfo=UTC)) == {
                active: {"x"},
                renewal: set(),
                today: {"x"},
            }
            # 00:01 EDT on the 11th: y's renewal is today, x's interaction was yesterday.
            assert await settle(h, datetime(2026, 3, 11, 4, 1, tzinfo=UTC)) == {
                active: {"x"},
                renewal: {"y"},
                today: set(),
            }
            # One day after the interaction (exact instants): x leaves.
            assert await settle(h, datetime(2026, 3, 11, 11, 0, 1, tzinfo=UTC)) == {
                active: set(),
                renewal: {"y"},
                today: set(),
            }
        # Down over the next local midnight: the next owner's first tick covers the gap.
        clock.set(datetime(2026, 3, 12, 4, 30, tzinfo=UTC))
        # (Another consumer group: it re-reads the two events, which changes nothing, and joins faster.)
        later = s.model_copy(update={"consumer_group": s.consumer_group + "-later"})
        async with WorkerHarness(later, clock=clock) as h:
            assert await settle(h, clock.now()) == {active: set(), renewal: set(), today: set()}
        rows = await conn.fetch(
            "SELECT customer_id, segment_id, kind, cause FROM transitions WHERE workspace_id = $1"
            " AND cause->>'kind' = 'time' ORDER BY id",
            ws,
        )
    finally:
        await conn.close()
        await redis.aclose()
    assert sorted((r["customer_id"], str(r["segment_id"]), r["kind"]) for r in rows) == sorted(
        [
            ("x", str(today), "exited"),
            ("y", str(renewal), "entered"),
            ("x", str(active), "exited"),
            ("y", str(renewal), "exited"),
        ]
    )
    out = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, s.topic_membership)]
    timed = [
        (e["subject"], e["type"])
        for e in out
        if e["data"]["workspace_id"] == ws and e["data"]["cause"] == {"kind": "time"}
    ]
    assert sorted(timed) == sorted(
        [("x", "segment.exited"), ("y", "segment.entered"), ("x", "segment.exited"), ("y", "segment.exited")]
    )


def test_no_candidates_when_no_boundary_is_crossed() -> None:
    cond = Condition(FieldDef("last_interaction_at", FieldType.DATETIME), "is_today")
    t0 = datetime(2026, 3, 10, 13, 0, tzinfo=UTC)
    sql, params = candidates_sql([cond], "ws", t0, t0 + timedelta(hours=1), NY, 3)
    assert sql is None and params == []
    sql, params = candidates_sql([cond], "ws", t0, t0 + timedelta(hours=16), NY, 3)
    assert sql is not None and "$3" in sql and "last_interaction_at >=" in sql
    assert params[0] == "ws"
    date_cond = Condition(FieldDef("attributes.renewal", FieldType.DATE), "anniversary_today")
    sql, params = candidates_sql([date_cond], "ws", t0, t0 + timedelta(hours=16), NY, 1)
    assert sql is not None and "customer_times" in sql and "month_day" in sql
    assert params[:2] == ["ws", "renewal"] and 311 in params[2]  # type: ignore[operator]
