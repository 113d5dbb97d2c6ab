"""The worker's operational metrics on real servers: end-to-end latency from the input records'
Kafka timestamps (to the batch committed, to the CloudEvents delivered), DLQ records by reason,
the bounded label values served from the start, and ``build_info``."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client import CollectorRegistry

from helpers.harness import WorkerHarness
from helpers.kafka_io import read_topic
from helpers.scenario import create_workspace, encode, event
from segment_worker.config import Settings
from segment_worker.events import DLQ_REASONS
from segment_worker.kafka import producer
from segment_worker.state import Transition
from segment_worker.stores import postgres as pg
from segment_worker.worker.metrics import WorkerMetrics, build_labels

pytestmark = pytest.mark.timeout(120)

CUSTOMERS = 20
AGE_S = 6.0  # the records' Kafka timestamps are this far in the past when produced


async def test_end_to_end_latency_is_measured_from_the_record_timestamps(
    unique_settings: Settings, workspace_id: str
) -> None:
    s = unique_settings.model_copy(update={"tick_seconds": 1})
    conn = await pg.connect(s.require_database_url())
    try:
        await create_workspace(
            conn, workspace_id, attributes={"score": ("number", None)},
            segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}},
        )
    finally:
        await conn.close()
    now = time.time()
    stamp = int((now - AGE_S) * 1000)
    records = [encode(event(workspace_id, f"c{i}", "customer.tags_added", {"tags": ["vip"]},
                            _utc(now))) for i in range(CUSTOMERS)]
    records.append((b"junk", b"{not json"))  # DLQ: invalid_json
    records.append(encode(event(workspace_id, "c0", "customer.attributes_set",  # DLQ: invalid_value
                                {"attributes": {"score": "high"}}, _utc(now))))
    async with WorkerHarness(s) as h:
        async with producer(s) as prod:
            futures = [
                await prod.send(s.topic_events, value=v, key=k, timestamp_ms=stamp) for k, v in records
            ]
            for f in futures:
                await f
        sent = 'segment_worker_end_to_end_seconds_count'
        await h.wait_for(lambda: h.metric(sent, {"stage": "sent"}) >= CUSTOMERS, 60, "CloudEvents not timed")
        await h.wait_for(
            lambda: h.metric(sent, {"stage": "committed"}) >= len(records), 30, "records not timed"
        )
        # This workspace's events: the worker also sends what other tests' units left in the
        # partitions it owns (the API's units in test_reconcile write to partitions 0–11 too).
        output = await read_topic(s.kafka_bootstrap, s.topic_membership)
        ours = [r for r in output if r.key.startswith(f"{workspace_id}:".encode())]
        entered = [r for r in ours if orjson.loads(r.value)["type"].endswith("segment.entered")]
        assert len(entered) == CUSTOMERS
        elapsed = time.time() - now + AGE_S  # no record can be older than this
        for stage, count in (("committed", len(records)), ("sent", CUSTOMERS)):
            labels = {"stage": stage}
            assert h.metric("segment_worker_end_to_end_seconds_count", labels) == count, stage
            # Every record was AGE_S old when produced: none under it, none over the test's duration.
            assert h.metric("segment_worker_end_to_end_seconds_bucket", labels | {"le": "5.0"}) == 0, stage
            assert h.metric("segment_worker_end_to_end_seconds_sum", labels) >= count * AGE_S, stage
            assert h.metric("segment_worker_end_to_end_seconds_sum", labels) <= count * elapsed, stage
        dlq = {r: h.metric("segment_worker_dlq_records_total", {"reason": r}) for r in DLQ_REASONS}
        assert dlq == {r: (1.0 if r in ("invalid_json", "invalid_value") else 0.0) for r in DLQ_REASONS}
        assert h.worker._latency.pending == 0  # everything remembered was delivered and forgotten


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def test_bounded_labels_and_build_info_are_served_before_anything_counts() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    for stage in ("committed", "sent"):
        assert registry.get_sample_value("segment_worker_end_to_end_seconds_count", {"stage": stage}) == 0
    for reason in DLQ_REASONS:
        assert registry.get_sample_value("segment_worker_dlq_records_total", {"reason": reason}) == 0
    for scope in ("workspace", "partition"):
        assert registry.get_sample_value("segment_worker_tick_failures_total", {"scope": scope}) == 0
    assert registry.get_sample_value("segment_worker_build_info", build_labels()) == 1
    assert build_labels()["version"] != "unknown"


def test_transitions_are_counted_by_kind_and_cause_kind_or_the_fixed_cause() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    seg = uuid.uuid4()

    def t(kind: str, cause: dict[str, str], seq: int) -> Transition:
        return Transition(workspace_id="ws", segment_id=seg, segment_name="s", customer_id=f"c{seq}",
                          partition=0, seq=seq, kind=kind, cause=cause, at=at)

    # Each row's expected count is the number of inputs with that (kind, cause kind).
    batch = [t("entered", {"kind": "event", "event_id": "e1"}, 1), t("exited", {"kind": "event"}, 2),
             t("entered", {"kind": "event", "event_id": "e2"}, 3),
             t("exited", {"kind": "customer_deleted"}, 4), t("entered", {}, 5)]
    metrics.count_transitions(batch)
    metrics.count_transitions([t("exited", {"kind": "time"}, 6), t("exited", {}, 7)], "time")

    def count(kind: str, cause: str) -> float | None:
        return registry.get_sample_value("segment_worker_transitions_total", {"kind": kind, "cause": cause})

    assert count("entered", "event") == 3  # two with kind "event", one without a kind
    assert count("exited", "event") == 1
    assert count("exited", "customer_deleted") == 1
    assert count("exited", "time") == 2  # the fixed cause, whatever the rows say
    assert count("entered", "time") is None


async def test_the_oldest_unsent_outbox_row_age_is_reported_while_the_outbox_is_held_back(
    unique_settings: Settings, workspace_id: str
) -> None:
    """A partition whose Redis ops are pending sends nothing (output follows Redis): an outbox row
    committed an hour ago then waits, and the gauge says how long; once a unit applies the op it
    drains.

    Any unit of work on the partition applies its pending ops (a tick does, every tick_seconds), so
    the ticks are an hour apart here and the gauges are read by calling the observation directly."""
    s = unique_settings.model_copy(update={"tick_seconds": 3600})
    gauge = "segment_worker_outbox_oldest_unsent_seconds"
    async with WorkerHarness(s) as h:
        # Newly owned partitions are positioned and ticked at once: hold one back only after that.
        await h.wait_for(lambda: h.metric("segment_worker_ticks_total") >= 1, 30, "no first tick")
        w = h.worker
        partition = min(w.partitions.owned)
        conn = await pg.connect(s.require_database_url())
        try:
            # Committed as if by a unit whose Redis step failed: past the partition's Redis cursor.
            hour_ago = datetime.now(UTC) - timedelta(hours=1)
            await conn.execute(
                "INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id,"
                " seq, kind, cause, at) VALUES ($1, $2, $3, 'S', 'c', 1, 'entered', '{\"kind\": \"manual\"}',"
                " $4)",
                partition, workspace_id, uuid.uuid4(), hour_ago,
            )
            await w._observe()
            assert 3600 <= h.metric(gauge) < 3600 + 60
            assert h.metric("segment_worker_outbox_backlog") >= 1
            sent = h.metric("segment_worker_outbox_sent_total")
            w.tick_now()  # a tick's unit applies the pending op; then the outbox is sent
            await h.wait_for(lambda: h.metric("segment_worker_outbox_sent_total") > sent, 30, "not sent")
            # Delivered rows count as unsent until their cursor moves (the next batch, or the idle
            # loop's flush a poll later).
            for _ in range(150):
                await w._observe()
                if h.metric(gauge) == 0:
                    break
                await asyncio.sleep(0.2)
            assert h.metric(gauge) == 0
        finally:
            await conn.close()
