"""The output topic read as a CloudEvents consumer reads it (CONTRACT §6): every record of a real
worker run is decoded through the CloudEvents SDK's Kafka protocol binding, from the record's
headers, key and value, and the events match what the input events imply."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.service.context import ServiceContext
from segment_worker.service.segments import delete_segment
from segment_worker.stores import postgres as pg

pytestmark = pytest.mark.timeout(120)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"  # CONTRACT §6, verbatim


def decode(headers: Mapping[str, bytes], key: bytes | None, value: bytes) -> BaseCloudEvent:
    """Decode a record as the binding prescribes (and the Java and Go SDKs do): the mode comes from
    the ``content-type`` header — ``application/cloudevents…`` is structured mode, else ``ce_``
    headers mean binary mode, else the record is not a CloudEvent. (The Python SDK's own
    ``from_kafka`` guesses structured mode whenever ``ce_`` headers are absent, so it alone would
    not notice a missing header.)"""
    message = KafkaMessage(headers=dict(headers), key=key, value=value)
    content_type = headers.get("content-type", b"").decode()
    if content_type.split(";")[0].strip().lower().startswith("application/cloudevents"):
        fmt = JSONFormat()
        assert content_type.split(";")[0].strip() == fmt.get_content_type()  # the JSON event format
        return from_structured(message, fmt)
    if "ce_specversion" in headers:
        return from_binary(message, JSONFormat())
    raise AssertionError(f"not a CloudEvent under the Kafka binding: headers {dict(headers)}")


def expected_transition(
    ws: str, segment_id: uuid.UUID, customer: str, kind: str, seq: int, event_id: str
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "source": "segment-worker",
        "type": f"segment.{kind}",
        "subject": customer,
        "datacontenttype": "application/json",
        "partitionkey": f"{ws}:{customer}",
        "data": {
            "workspace_id": ws,
            "segment_id": str(segment_id),
            "segment_name": "VIP",
            "customer_id": customer,
            "cause": {"kind": "event", "event_id": event_id},
            "seq": seq,
        },
    }


def as_fields(ev: BaseCloudEvent) -> dict[str, Any]:
    """The event's attributes and data, without the two that the inputs do not determine
    (``id`` and ``time``: checked apart)."""
    attrs = {k: v for k, v in ev.get_attributes().items() if k not in ("id", "time")}
    return {**attrs, "data": ev.get_data()}


async def test_every_output_record_decodes_through_the_kafka_binding(
    kafka_bootstrap: str, pg_dsn: str, redis_url: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    ws_id = f"ws-ce-{tag}"
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=pg_dsn, redis_url=redis_url,
        topic_events=f"ce-in-{tag}", topic_membership=f"ce-out-{tag}", topic_dlq=f"ce-dlq-{tag}",
        consumer_group=f"ce-{tag}", input_partitions=2,
    )
    conn = await pg.connect(pg_dsn)
    pool = await pg.create_pool(pg_dsn, min_size=1, max_size=2)
    redis = Redis.from_url(redis_url)
    try:
        vip = {"field": "tags", "op": "has", "value": "VIP"}
        ws = await create_workspace(conn, ws_id, segments={"VIP": vip})
        sid = ws.segments["VIP"]
        group = settings.consumer_group
        inputs = [
            event(ws_id, "c1", "customer.tags_added", {"tags": ["VIP"]}, T0, "e-1"),
            event(ws_id, "c2", "customer.tags_added", {"tags": ["VIP", "lead"]}, T0, "e-2"),
            event(ws_id, "c1", "customer.tags_removed", {"tags": ["vip"]}, T0 + timedelta(minutes=1), "e-3"),
            event(ws_id, "c3", "customer.tags_added", {"tags": ["lead"]}, T0, "e-4"),  # enters nothing
        ]
        async with WorkerHarness(settings):
            ends = await produce(kafka_bootstrap, settings.topic_events, [encode(e) for e in inputs])
            await wait_caught_up(conn, group, settings.topic_events, ends, workspace_id=ws_id)
            # segment.deleted comes from the management path (the API's delete), out through the outbox.
            await delete_segment(ServiceContext(pool, redis, settings), ws_id, sid)
            await wait_caught_up(conn, group, settings.topic_events, ends, workspace_id=ws_id)
        # The outbox is the session database's: the worker also sends other tests' unsent rows of
        # its partitions. Ours are those keyed by our workspace.
        records = [r for r in await read_topic(kafka_bootstrap, settings.topic_membership)
                   if r.key.startswith(f"{ws_id}:".encode())]
    finally:
        await conn.close()
        await pool.close()
        await redis.aclose()

    assert len(records) == 4
    decoded = []
    for r in records:
        headers = dict(r.headers)
        assert headers == {"content-type": CONTENT_TYPE.encode()}, headers
        decoded.append(decode(headers, r.key, r.value))

    got = sorted((as_fields(e) for e in decoded), key=lambda f: (f["partitionkey"], f["data"].get("seq", 0)))
    want = [
        expected_transition(ws_id, sid, "c1", "entered", 1, "e-1"),
        expected_transition(ws_id, sid, "c1", "exited", 2, "e-3"),
        expected_transition(ws_id, sid, "c2", "entered", 1, "e-2"),
        {
            "specversion": "1.0", "source": "segment-worker", "type": "segment.deleted", "subject": str(sid),
            "datacontenttype": "application/json", "partitionkey": f"{ws_id}:{sid}",
            "data": {"workspace_id": ws_id, "segment_id": str(sid), "segment_name": "VIP",
                     "cause": {"kind": "manual"}},
        },
    ]
    assert got == sorted(want, key=lambda f: (f["partitionkey"], f["data"].get("seq", 0)))
    assert len({e.get_id() for e in decoded}) == 4  # distinct transitions, distinct ids
    assert all(e.get_time() is not None and e.get_time().utcoffset() == timedelta(0) for e in decoded)
