"""Bad input goes to the dead-letter topic with a clear reason, the good records around it are all
processed, and records under the wrong key are re-published under the right one (CONTRACT §2, §10)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.events import DLQ_REASONS
from segment_worker.kafka import producer
from segment_worker.partitioning import partition_for
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker.deadletter import DeadLetter, SourceRecord, publish_dead_letters

pytestmark = pytest.mark.timeout(120)


async def test_poison_records_go_to_the_dlq_and_good_ones_are_all_applied(
    unique_settings: Settings, workspace_id: str, redis_url: str, kafka_bootstrap: str
) -> None:
    s = unique_settings
    ws = workspace_id
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(
            conn,
            ws,
            attributes={"score": ("number", None), "tier": ("select", ("gold", "silver"))},
            segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}},
        )
        good = [event(ws, f"g{i}", "customer.tags_added", {"tags": ["vip"]}, T0) for i in range(20)]
        huge_name = "x" * (2 * 1024 * 1024)
        bad: list[tuple[bytes | None, bytes | None, str]] = [
            (b"k1", b"{not json", "not valid JSON"),
            (
                b"k2",
                orjson.dumps(
                    {**event(ws, "b2", "customer.tags_added", {"tags": ["a"]}, T0), "type": "customer.foo"}
                ),
                "customer.foo",
            ),
            (b"k3", orjson.dumps(event(ws, "b3", "customer.tags_added", {"tags": "vip"}, T0)), "data.tags"),
            (
                f"{ws}:b4".encode(),
                orjson.dumps(event(ws, "b4", "customer.upserted", {"name": huge_name}, T0)),
                "the limit is 1048576",
            ),
            (
                f"{ws}:b5".encode(),
                orjson.dumps(
                    {
                        **event(ws, "b5", "customer.tags_added", {"tags": ["a"]}, T0),
                        "occurred_at": "2026-13-01T00:00:00Z",
                    }
                ),
                "occurred_at",
            ),
            (
                f"{ws}:b6".encode(),
                orjson.dumps(
                    event(ws, "b6", "customer.attributes_set", {"attributes": {"score": "high"}}, T0)
                ),
                "attributes.score",
            ),
            (
                f"{ws}:b7".encode(),
                orjson.dumps(
                    event(ws, "b7", "customer.attributes_set", {"attributes": {"tier": "diamond"}}, T0)
                ),
                "attributes.tier",
            ),
            (b"k8", None, "no value"),
        ]
        records: list[tuple[bytes | None, bytes | None]] = []
        for i, (key, value, _) in enumerate(bad):
            records += [encode(good[2 * i]), (key, value), encode(good[2 * i + 1])]
        records += [encode(g) for g in good[2 * len(bad) :]]
        # A good event under a key that is not "<ws>:<customer_id>": re-published, applied once.
        rekeyed = event(ws, "r1", "customer.tags_added", {"tags": ["vip"]}, T0)
        records.append((b"some-other-key", orjson.dumps(rekeyed)))
        async with WorkerHarness(s) as h:
            await produce(kafka_bootstrap, s.topic_events, records)
            # The right key in the wrong partition is re-published too (one customer, one writer).
            key, value = encode(event(ws, "r2", "customer.tags_added", {"tags": ["vip"]}, T0))
            owner = partition_for(key, s.input_partitions)
            await produce(
                kafka_bootstrap, s.topic_events, [(key, value)], partition=(owner + 1) % s.input_partitions
            )
            await h.wait_for(
                lambda: h.metric("segment_worker_rekeyed_records_total") == 2, 30, "not re-keyed"
            )
            ends = {}
            for rec in await read_topic(kafka_bootstrap, s.topic_events):
                ends[rec.partition] = rec.offset + 1
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            by_reason = {r: h.metric("segment_worker_dlq_records_total", {"reason": r}) for r in DLQ_REASONS}
            assert by_reason == {
                "invalid_json": 2,  # k1 not JSON, k8 no value
                "invalid_event": 3,  # unknown type, tags not an array, month 13
                "limit": 0,
                "invalid_value": 2,  # score not a number, tier not an option
                "oversized": 1,
                "poison": 0,
            }
        dlq = await read_topic(kafka_bootstrap, s.topic_dlq)
        members = {m.decode() for m in await redis.smembers(segment_key(ws, w.segments["VIP"]))}
        transitions = await conn.fetchval("SELECT count(*) FROM transitions WHERE workspace_id = $1", ws)
    finally:
        await conn.close()
        await redis.aclose()
    assert members == {f"g{i}" for i in range(20)} | {"r1", "r2"}
    assert transitions == 22  # the re-keyed events entered once each
    assert len(dlq) == len(bad)
    by_value = {r.value: r for r in dlq}
    for key, value, reason in bad:
        rec = by_value[value]  # the value is unchanged, a 2 MB one whole
        headers = dict(rec.headers)
        assert rec.key == key
        assert reason in headers["error"].decode(), headers["error"]
        assert headers["source-topic"].decode() == s.topic_events
        src = [
            r
            for r in await read_topic(kafka_bootstrap, s.topic_events)
            if r.partition == int(headers["source-partition"]) and r.offset == int(headers["source-offset"])
        ]
        assert len(src) == 1 and src[0].value == value
        assert "truncated" not in headers


async def test_a_dlq_copy_refused_as_too_large_is_sent_truncated(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("dlq")
    value = b"y" * 200_000
    letter = DeadLetter(SourceRecord("in", 3, 42, b"k", value, (("trace", b"t1"),)), "value is too big")
    async with producer(kafka_bootstrap, max_request_size=100_000) as prod:
        await publish_dead_letters(prod, topic, [letter])
    (rec,) = await read_topic(kafka_bootstrap, topic)
    headers = dict(rec.headers)
    assert headers["truncated"] == b"true"
    assert headers["error"] == b"value is too big"
    assert (headers["source-topic"], headers["source-partition"], headers["source-offset"]) == (
        b"in",
        b"3",
        b"42",
    )
    assert headers["trace"] == b"t1"
    assert rec.value == value[:65_536]
