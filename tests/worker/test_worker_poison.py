"""A record that parses but fails later never stalls its partition, nor the partitions fetched with
it (issue 13): the exact records seen in the field, mixed with good records in the same partitions
and in others, through a real worker. With the limits at the edge they are refused as bad input
(reason label ``limit``); with the edge checks switched off they reach the worker and fail there —
in Python (``OverflowError``) and in PostgreSQL (the GIN index's row size) — and the worker's
poison isolation dead-letters exactly them (label ``poison``) while every good record is applied."""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker import limits
from segment_worker.config import Settings
from segment_worker.events import DLQ_REASONS
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker.clock import ManualClock

pytestmark = pytest.mark.timeout(180)

FAR_FUTURE = "9999-12-31T23:59:59-23:59"  # year 10000 in UTC
FAR_PAST = "0001-01-01T00:00:00+01:00"  # year 0 in UTC


def _with_time(ev: dict[str, Any], occurred_at: str) -> dict[str, Any]:
    return {**ev, "occurred_at": occurred_at}


def scenario(ws: str) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str, str]]]:
    """(every event in produce order, the bad ones with (limit reason, poison reason) fragments).

    24 customers get tag vip; then the bad records, for new and existing customers of several
    partitions; then good events after them in the same partitions (c0..c7 lose vip, pz1 — whose
    first record was bad — gets it)."""
    rng = random.Random(13)
    big_tag = "".join(rng.choices(string.ascii_letters + string.digits, k=5000))  # incompressible
    at = iter(T0 + timedelta(seconds=i) for i in range(1000))
    first = [event(ws, f"c{i}", "customer.tags_added", {"tags": ["vip"]}, next(at)) for i in range(24)]
    bad = [
        (
            _with_time(event(ws, "pz1", "customer.tags_added", {"tags": ["x"]}, next(at)), FAR_FUTURE),
            "occurred_at: instant outside years 1–9999 in UTC",
            "poison: OverflowError: date value out of range (while applying event",
        ),
        (
            _with_time(
                event(ws, "c3", "customer.interaction", {"direction": "incoming"}, next(at)), FAR_PAST
            ),
            "occurred_at: instant outside years 1–9999 in UTC",
            "poison: OverflowError: date value out of range (while applying event",
        ),
        (
            event(ws, "c5", "customer.tags_added", {"tags": [big_tag]}, next(at)),
            "data.tags[0]: tag is 5000 characters long; the limit is 200",
            "poison: ProgramLimitExceededError: index row size 5016 exceeds maximum 2712 for index"
            ' "customers_tags" (while writing event',
        ),
        (
            event(ws, "c7", "customer.upserted", {"created_at": FAR_FUTURE}, next(at)),
            "data.created_at: instant outside years 1–9999 in UTC",
            "poison: OverflowError: date value out of range (while applying event",
        ),
    ]
    after = [event(ws, f"c{i}", "customer.tags_removed", {"tags": ["VIP"]}, next(at)) for i in range(8)]
    after.append(event(ws, "pz1", "customer.tags_added", {"tags": ["Vip"]}, next(at)))
    # The bad ones sit between good records of the same customers' partitions.
    return [*first[:12], *(b for b, _, _ in bad), *first[12:], *after], bad


def expected_vip(events: list[dict[str, Any]], bad_ids: set[str]) -> set[str]:
    """Fold the good events (tags only) in produce order: the customers tagged vip at the end."""
    tags: dict[str, set[str]] = {}
    for ev in events:
        if ev["event_id"] in bad_ids:
            continue
        have = tags.setdefault(ev["customer_id"], set())
        if ev["type"] == "customer.tags_added":
            have |= {t.casefold() for t in ev["data"]["tags"]}
        elif ev["type"] == "customer.tags_removed":
            have -= {t.casefold() for t in ev["data"]["tags"]}
    return {cid for cid, t in tags.items() if "vip" in t}


def dlq_counts(h: WorkerHarness) -> Mapping[str, float]:
    return {r: h.metric("segment_worker_dlq_records_total", {"reason": r}) for r in DLQ_REASONS}


@pytest.mark.parametrize("edge", ["limits", "isolation"])
async def test_records_that_fail_later_are_dead_lettered_and_nothing_stalls(
    edge: str,
    unique_settings: Settings,
    workspace_id: str,
    redis_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s, ws = unique_settings, workspace_id
    if edge == "isolation":  # let the bad records through the edge, as before the limits existed
        monkeypatch.setattr(limits, "instant_problem", lambda dt: None)
        monkeypatch.setattr(limits, "TAG_MAX_CHARS", 10**6)
    events, bad = scenario(ws)
    bad_ids = {b["event_id"] for b, _, _ in bad}
    want = expected_vip(events, bad_ids)
    assert want == {f"c{i}" for i in range(8, 24)} | {"pz1"}
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        # Produced before the worker starts: its first batch holds every partition at once.
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(ev) for ev in events])
        assert len(ends) >= 4
        async with WorkerHarness(s) as h:
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws, limit_s=90)
            counts = dlq_counts(h)
        members = {m.decode() for m in await redis.smembers(segment_key(ws, w.segments["VIP"]))}
        stored = {
            r["customer_id"]
            for r in await conn.fetch(
                "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", w.segments["VIP"]
            )
        }
    finally:
        await conn.close()
        await redis.aclose()
    assert stored == want
    assert members == want
    label = "limit" if edge == "limits" else "poison"
    assert counts == {r: (len(bad) if r == label else 0) for r in DLQ_REASONS}
    dlq = await read_topic(kafka_bootstrap, s.topic_dlq)
    assert sorted(r.value for r in dlq) == sorted(orjson.dumps(b) for b, _, _ in bad)  # each exactly once
    source = {(r.partition, r.offset): r.value for r in await read_topic(kafka_bootstrap, s.topic_events)}
    for rec in dlq:
        headers = {k: v.decode() for k, v in rec.headers}
        (b, limit_reason, poison_reason) = next(x for x in bad if orjson.dumps(x[0]) == rec.value)
        assert (limit_reason if edge == "limits" else poison_reason) in headers["error"], headers["error"]
        if edge == "isolation":
            assert headers["error"].endswith(f"event {b['event_id']})"), headers["error"]
        assert headers["source-topic"] == s.topic_events
        assert source[(int(headers["source-partition"]), int(headers["source-offset"]))] == rec.value
        assert rec.key == f"{ws}:{b['customer_id']}".encode()


async def test_instants_at_the_ends_of_the_range_stay_valid_after_a_reload(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    """0001-01-01T00:00:00Z (Go's zero time) and 9999-12-31T23:59:59.999999Z — Python's first and
    last instants, which asyncpg would send as -infinity / infinity and read back naive — are within
    the limits: a customer holding them, loaded from PostgreSQL (a new owner, a restart), still
    takes events and is judged by both evaluators alike."""
    s, ws = unique_settings, workspace_id
    first = [
        event(ws, "zero", "customer.interaction", {"direction": "incoming"}, T0),
        event(ws, "last", "customer.upserted", {"created_at": "9999-12-31T23:59:59.999999Z"}, T0),
    ]
    first[0]["occurred_at"] = "0001-01-01T00:00:00Z"
    then = [event(ws, cid, "customer.tags_added", {"tags": ["vip"]}, T0) for cid in ("zero", "last")]
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(
            conn,
            ws,
            segments={
                "VIP": {"field": "tags", "op": "has", "value": "vip"},
                "Heard from": {"field": "last_incoming_at", "op": "is_not_empty"},
                "Created": {"field": "created_at", "op": "before", "value": "2000-01-01"},
                "Anniversary": {"field": "created_at", "op": "anniversary_this_month"},
            },
        )
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(e) for e in first])
        async with WorkerHarness(s, clock=ManualClock(T0)):
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
        ends = await produce(kafka_bootstrap, s.topic_events, [encode(e) for e in then])
        # A new process: the customers come from PostgreSQL (November: no anniversary this month).
        async with WorkerHarness(s, clock=ManualClock(T0)) as h:
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            counts = dlq_counts(h)
        members = {
            name: {m.decode() for m in await redis.smembers(segment_key(ws, sid))}
            for name, sid in w.segments.items()
        }
    finally:
        await conn.close()
        await redis.aclose()
    assert counts == {r: 0 for r in DLQ_REASONS}
    assert members == {
        "VIP": {"zero", "last"},
        "Heard from": {"zero"},
        "Created": {"zero"},
        "Anniversary": set(),
    }
