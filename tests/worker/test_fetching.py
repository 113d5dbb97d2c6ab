"""The worker's fetch on a real broker: a fetch answered from aiokafka's prefetch buffer is topped
up with what arrived while the batch before ran; a fetch that had to wait is not; a failing top-up
loses nothing; a partition sought during the top-up keeps only what was read after the seek."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from helpers.kafka_io import produce
from segment_worker import kafka
from segment_worker.config import Settings
from segment_worker.worker.fetching import fetch, usable


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    name = unique_name("fetch")
    await kafka.ensure_topics(
        Settings(kafka_bootstrap=kafka_bootstrap, topic_events=name, topic_membership=unique_name("out"),
                 topic_dlq=unique_name("dlq"), input_partitions=1),
    )
    return name


@pytest.fixture
async def consumers(kafka_bootstrap: str, topic: str) -> AsyncIterator[list[AIOKafkaConsumer]]:
    made: list[AIOKafkaConsumer] = []
    for _ in range(2):
        settings = Settings(kafka_bootstrap=kafka_bootstrap)
        c = kafka.create_consumer(settings, group_id=None, fetch_max_wait_ms=50)
        await c.start()
        c.assign([TopicPartition(topic, 0)])
        made.append(c)
    yield made
    for c in made:
        await c.stop()


async def _values(consumer: AIOKafkaConsumer, topic: str, top_up_ms: int) -> list[bytes]:
    got = await fetch(consumer, topic, 1, {}, timeout_ms=2000, max_records=100, top_up_ms=top_up_ms)
    assert got.error is None
    return [d.source.value or b"" for s in got.parts.values() for d in s.dead]


def _records(tag: str) -> list[tuple[bytes, bytes]]:
    # Not customer events: fetch sorts them to the dead letters, in order, with their values.
    return [(b"k", f"{tag}{i}".encode()) for i in range(5)]


async def test_a_fetch_from_the_prefetch_buffer_takes_what_arrived_since(
    kafka_bootstrap: str, topic: str, consumers: list[AIOKafkaConsumer]
) -> None:
    topped, plain = consumers
    t0 = time.monotonic()
    # The fetch starts on an empty buffer, before the records exist: produced first, they could
    # reach aiokafka's background prefetch before getmany ran, which then answers at once and
    # rightly tops up (seen once in CI: 3.0 s).
    waiting = asyncio.create_task(_values(topped, topic, 3000))
    await asyncio.sleep(0.2)
    await produce(kafka_bootstrap, topic, _records("a"), partition=0)
    assert await waiting == [f"a{i}".encode() for i in range(5)]
    assert time.monotonic() - t0 < 2.5  # it waited for the records: no top-up after it
    assert len(await _values(plain, topic, 0)) == 5
    # While "a batch runs": the next records are prefetched into aiokafka's buffer, and the ones
    # after them stay on the broker (a buffered partition is not fetched again).
    await produce(kafka_bootstrap, topic, _records("b"), partition=0)
    await asyncio.sleep(1.0)
    await produce(kafka_bootstrap, topic, _records("c"), partition=0)
    await asyncio.sleep(0.3)
    late = [f"c{i}".encode() for i in range(5)]
    without = await _values(plain, topic, 0)
    assert without and not set(late) & set(without), "aiokafka no longer answers from its buffer alone"
    assert await _values(topped, topic, 3000) == [f"{t}{i}".encode() for t in "bc" for i in range(5)]


async def test_a_partition_sought_during_the_top_up_keeps_only_what_was_read_after_the_seek(
    kafka_bootstrap: str, topic: str, consumers: list[AIOKafkaConsumer]
) -> None:
    # A batch failed while the next fetch was being topped up, and the loop rewound and sought its
    # partition again before the top-up answered (the worker's moves: rewound, then positioned).
    # The records answered at once came from before the seek: applied, they would skip the failed
    # batch's records for ever (seen in CI: a batch of 16 lost). Every record is read again from
    # the sought offset instead, none of the stale ones.
    consumer, _ = consumers
    tp = TopicPartition(topic, 0)
    await produce(kafka_bootstrap, topic, _records("a"), partition=0)
    first = await consumer.getmany(tp, timeout_ms=3000, max_records=2)  # the rest stays buffered
    assert [r.value for r in first[tp]] == [b"a0", b"a1"]
    moves = {0: 0}
    fetching = asyncio.create_task(fetch(consumer, topic, 1, moves, timeout_ms=2000, max_records=100,
                                         top_up_ms=3000))
    await asyncio.sleep(0.3)  # answered at once from the buffer (a2..a4); the top-up is waiting
    consumer.pause(tp)  # the batch's failure: rewound …
    moves[0] += 1
    moves[0] += 1  # … then positioned again from the stored offset
    consumer.seek(tp, 0)
    consumer.resume(tp)
    got = await fetching
    assert got.error is None
    applied = usable(got, {0}, moves)
    assert [d.source.value for d in applied.dead] == [f"a{i}".encode() for i in range(5)]


class _FailsOnTopUp:
    """Answers from its "buffer" at once, then fails, as a broker connection that drops between
    the two fetches."""

    def __init__(self, topic: str) -> None:
        self.calls = 0
        self.records = {TopicPartition(topic, 0): [
            ConsumerRecord(topic, 0, i, 0, 0, b"k", f"a{i}".encode(), None, 1, 2, []) for i in range(3)
        ]}

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.calls += 1
        if self.calls > 1:
            raise KafkaConnectionError("gone")
        return self.records


async def test_a_failed_top_up_keeps_the_records_taken_already() -> None:
    consumer = _FailsOnTopUp("t")
    got = await fetch(consumer, "t", 1, {}, timeout_ms=100, max_records=100, top_up_ms=50)
    assert consumer.calls == 2 and got.error is None
    assert [d.source.value for s in got.parts.values() for d in s.dead] == [b"a0", b"a1", b"a2"]
