"""Kafka helpers for worker tests: produce customer events, read whole topics.

Tansu (the embedded broker) answers ListOffsets "latest" with the base offset of the last record
batch + 1, which is short of the log end whenever that batch holds several records; the high
watermark of fetch responses is right. So log ends here come from fetches, never ``end_offsets``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segment_worker.config import Settings
from segment_worker.kafka import MAX_DLQ_RECORD_BYTES, client_options, producer

Record = tuple[bytes | None, bytes | None]  # (key, value)
Kafka = str | Settings  # bootstrap servers (plaintext) or settings with the security to use


def kafka_settings(kafka: Kafka) -> Settings:
    """``kafka`` as the ``Settings`` our client factories take."""
    return kafka if isinstance(kafka, Settings) else Settings(kafka_bootstrap=kafka)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (replication 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def produce(
    bootstrap: Kafka,
    topic: str,
    records: Iterable[Record],
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> dict[int, int]:
    """Send records in order (default partitioner unless ``partition``) and wait for all.
    Answers, per partition written, the offset after the last record sent."""
    ends: dict[int, int] = {}
    async with producer(kafka_settings(bootstrap), linger_ms=20) as prod:
        futures = []
        for key, value in records:
            futures.append(
                await prod.send(topic, value=value, key=key, headers=list(headers or []), partition=partition)
            )
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


async def _partitions(consumer: Any, topic: str) -> list[int]:
    for _ in range(100):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.05)
    raise AssertionError(f"topic {topic} has no partitions")


async def read_topic(bootstrap: Kafka, topic: str, *, limit_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` up to its high watermarks, partition by partition in offset order."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka_settings(bootstrap)),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_DLQ_RECORD_BYTES,
        fetch_max_bytes=MAX_DLQ_RECORD_BYTES * 2,
    )
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[Any]] = {p: [] for p in parts}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s

        def done() -> bool:
            for tp in tps:
                hw = consumer.highwater(tp)
                last = out[tp.partition][-1].offset + 1 if out[tp.partition] else 0
                if hw is None or last < hw:
                    return False
            return True

        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for tp, records in batch.items():
                out[tp.partition].extend(records)
            if not batch and done():
                break
            if loop.time() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {limit_s} s")
        return [r for p in parts for r in out[p]]
    finally:
        await consumer.stop()


async def log_ends(bootstrap: Kafka, topic: str) -> dict[int, int]:
    """The end offset of every partition (from fetch high watermarks)."""
    records = await read_topic(bootstrap, topic)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = r.offset + 1
    return ends
