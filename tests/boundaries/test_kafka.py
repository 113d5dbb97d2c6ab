"""Kafka helpers against a real broker: topic creation, client factories, error translation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from segment_worker import kafka
from segment_worker.config import Settings
from segment_worker.embedded import free_port
from segment_worker.errors import ConfigError, NotFound, RecordTooLarge, StoreUnavailable


def _settings(bootstrap: str, unique_name: Callable[[str], str], partitions: int = 5) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_events=unique_name("in"),
        topic_membership=unique_name("out"),
        topic_dlq=unique_name("dlq"),
        input_partitions=partitions,
    )


async def test_ensure_topics_creates_missing_topics_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=5)
    expected = {settings.topic_events: 5, settings.topic_membership: 5, settings.topic_dlq: 5}
    assert await kafka.ensure_topics(settings) == expected
    assert await kafka.ensure_topics(settings) == expected  # idempotent
    assert await kafka.input_partition_count(settings) == 5
    assert await kafka.topic_partition_count(settings, settings.topic_dlq) == 5


async def test_an_existing_input_topic_keeps_its_partition_count(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=6)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic_events, 2, 1)])
    finally:
        await admin.close()
    counts = await kafka.ensure_topics(settings)
    assert counts == {settings.topic_events: 2, settings.topic_membership: 6, settings.topic_dlq: 6}
    assert await kafka.input_partition_count(settings) == 2


async def test_partition_count_of_a_missing_topic_is_not_found(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    with pytest.raises(NotFound) as info:
        await kafka.input_partition_count(_settings(kafka_bootstrap, unique_name))
    assert not info.value.retriable


async def test_a_record_over_one_megabyte_goes_through_whole(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """The DLQ must keep a copy of an oversized event whole (CONTRACT §10): aiokafka's defaults
    (1 MB request size) would refuse it."""
    settings = _settings(kafka_bootstrap, unique_name, partitions=1)
    await kafka.ensure_topics(settings)
    value = b"x" * (3 * 1024 * 1024)
    headers = [("error", b"record is 3145728 bytes; at most 1048576 are allowed"), ("source-offset", b"7")]
    async with kafka.producer(settings) as prod:
        await prod.send_and_wait(settings.topic_dlq, value, key=b"ws1:c1", headers=headers)
    async with kafka.consumer(settings, settings.topic_dlq, group_id=None) as cons:
        got = await cons.getmany(timeout_ms=10_000)
    records = [r for batch in got.values() for r in batch]
    assert len(records) == 1
    got_one = records[0]
    assert (got_one.key, len(got_one.value), list(got_one.headers)) == (b"ws1:c1", len(value), headers)


async def test_consumer_group_commit_roundtrip(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=1)
    await kafka.ensure_topics(settings)
    async with kafka.producer(Settings(kafka_bootstrap=kafka_bootstrap)) as prod:
        for i in range(3):
            await prod.send(settings.topic_events, f"e{i}".encode(), key=b"ws:c")
    group = unique_name("group")
    async with kafka.consumer(settings, settings.topic_events, group_id=group) as cons:
        seen: list[bytes] = []
        while len(seen) < 3:
            got = await cons.getmany(timeout_ms=10_000)
            assert got, "no records within 10 s"
            for tp, batch in got.items():
                seen.extend(r.value for r in batch)
                await cons.commit({tp: batch[-1].offset + 1})
        assert seen == [b"e0", b"e1", b"e2"]
    async with kafka.consumer(Settings(kafka_bootstrap=kafka_bootstrap), group_id=group) as cons:
        assert await cons.committed(TopicPartition(settings.topic_events, 0)) == 3


async def test_errors_are_translated_at_the_boundary(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    with pytest.raises(StoreUnavailable) as down:
        nobody = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
        async with kafka.producer(nobody, request_timeout_ms=2000):
            pass
    assert down.value.retriable and down.value.context["system"] == "kafka"

    async with kafka.producer(Settings(kafka_bootstrap=kafka_bootstrap), max_request_size=1024) as prod:
        with pytest.raises(RecordTooLarge) as big, kafka.kafka_errors("send", topic="t"):
            await prod.send(unique_name("t"), b"y" * 4096)
    assert not big.value.retriable and big.value.context["topic"] == "t"

    with pytest.raises(ConfigError):
        kafka.create_producer(Settings(kafka_bootstrap=kafka_bootstrap), enable_idempotence=True)
