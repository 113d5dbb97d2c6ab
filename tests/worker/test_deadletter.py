"""The DLQ never drops a record (issue 13, CONTRACT §2, §10): send failures are retried with backoff
and, past the bound, fail the batch without committing past the record; a copy refused at every
size still goes out, truncated. Against the real broker; failures come from a thin wrapper around
the real producer (Tansu enforces no sizes, so sizes are refused by the producer's own
``max_request_size``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import produce, read_topic
from helpers.scenario import T0, create_workspace, encode, event, wait_caught_up
from segment_worker.config import Settings
from segment_worker.kafka import producer
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.worker import deadletter, loop
from segment_worker.worker.deadletter import (
    LAST_KEY_BYTES,
    DeadLetter,
    DeadLetterUndelivered,
    SourceRecord,
    publish_dead_letters,
)
from segment_worker.worker.failures import Backoff

pytestmark = pytest.mark.timeout(120)


class FlakyProducer:
    """The real producer, except that the first ``failures`` sends to ``topic`` fail: half of them
    at ``send`` and half at delivery (the future), as a broker connection lost either way would."""

    def __init__(self, real: Any, topic: str, failures: int) -> None:
        self.real = real
        self.topic = topic
        self.failures = failures
        self.attempts = 0

    async def send(self, topic: str, **kwargs: Any) -> Any:
        if topic == self.topic:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                if self.failures % 2:
                    raise KafkaConnectionError("injected: broker connection lost at send")
                await self.real.send(topic, **kwargs)  # reaches the broker or not: at-least-once
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(KafkaConnectionError("injected: delivery failed"))
                return fut
        return await self.real.send(topic, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _letter(value: bytes, *, headers: tuple[tuple[str, bytes], ...] = (), key: bytes = b"k") -> DeadLetter:
    return DeadLetter(SourceRecord("in", 3, 42, key, value, headers), "value is too big", "oversized")


async def test_a_copy_refused_even_empty_goes_out_with_only_our_headers(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("dlq")
    # The source's own headers (8 kB) and key (3 kB) alone exceed the request size: the ladder's
    # sizes 1,032,192 / 65,536 / 0 of the value are all refused; the last rung fits.
    letter = _letter(b"y" * 200_000, headers=(("trace", b"t" * 8000),), key=b"K" * 3000)
    async with producer(kafka_bootstrap, max_request_size=4000) as prod:
        await publish_dead_letters(prod, topic, [letter])
    (rec,) = await read_topic(kafka_bootstrap, topic)
    headers = dict(rec.headers)
    assert rec.value == b""
    assert rec.key == b"K" * LAST_KEY_BYTES
    assert headers == {
        "error": b"value is too big",
        "source-topic": b"in",
        "source-partition": b"3",
        "source-offset": b"42",
        "truncated": b"true",
    }


async def test_a_copy_no_size_fits_fails_the_batch_instead_of_being_dropped(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("dlq")
    letter = DeadLetter(SourceRecord("in", 3, 42, b"k", b"y" * 1000), "r" * 5000, "poison")
    async with producer(kafka_bootstrap, max_request_size=600) as prod:  # our 1 kB reason does not fit
        with pytest.raises(DeadLetterUndelivered) as err:
            await publish_dead_letters(prod, topic, [letter])
    assert err.value.retriable
    assert await read_topic(kafka_bootstrap, topic) == []


async def test_send_failures_are_retried_with_backoff_then_delivered(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("dlq")
    letters = [_letter(f"v{i}".encode()) for i in range(3)]
    async with producer(kafka_bootstrap) as prod:
        flaky = FlakyProducer(prod, topic, failures=4)
        await publish_dead_letters(flaky, topic, letters, attempts=5, backoff=Backoff(0.01, 0.05))
    got = [r.value for r in await read_topic(kafka_bootstrap, topic)]
    assert set(got) == {b"v0", b"v1", b"v2"}  # every one delivered (a failed delivery may repeat one)
    assert flaky.attempts > 3


async def test_send_failures_past_the_bound_fail_as_transient(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("dlq")
    async with producer(kafka_bootstrap) as prod:
        flaky = FlakyProducer(prod, topic, failures=10**6)
        with pytest.raises(DeadLetterUndelivered) as err:
            await publish_dead_letters(flaky, topic, [_letter(b"v")], attempts=3, backoff=Backoff(0.01, 0.02))
    assert err.value.retriable and flaky.attempts == 3


async def test_a_worker_whose_dlq_sends_fail_retries_the_batch_and_loses_nothing(
    unique_settings: Settings,
    workspace_id: str,
    redis_url: str,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s, ws = unique_settings, workspace_id
    monkeypatch.setattr(deadletter, "SEND_BACKOFF", (0.01, 0.05))
    flaky: list[FlakyProducer] = []
    real_create = loop.create_producer

    def create(*args: Any, **kwargs: Any) -> FlakyProducer:
        # More failures than one batch's 5 rounds of 3 copies: the first batch fails as transient.
        flaky.append(FlakyProducer(real_create(*args, **kwargs), s.topic_dlq, failures=18))
        return flaky[-1]

    monkeypatch.setattr(loop, "create_producer", create)
    good = [event(ws, f"g{i}", "customer.tags_added", {"tags": ["vip"]}, T0) for i in range(12)]
    bad = [(f"{ws}:b{i}".encode(), b"{not json " + str(i).encode()) for i in range(3)]
    records = [encode(g) for g in good[:6]] + bad + [encode(g) for g in good[6:]]
    conn = await pg.connect(s.require_database_url())
    redis = Redis.from_url(redis_url)
    try:
        w = await create_workspace(conn, ws, segments={"VIP": {"field": "tags", "op": "has", "value": "vip"}})
        ends = await produce(kafka_bootstrap, s.topic_events, records)
        async with WorkerHarness(s) as h:
            await wait_caught_up(conn, s.consumer_group, s.topic_events, ends, workspace_id=ws)
            failed_batches = h.metric("segment_worker_errors_total", {"stage": "batch"})
        members = {m.decode() for m in await redis.smembers(segment_key(ws, w.segments["VIP"]))}
    finally:
        await conn.close()
        await redis.aclose()
    assert failed_batches >= 1  # the DLQ failures did fail a batch: nothing was committed past them
    assert members == {f"g{i}" for i in range(12)}
    dlq = await read_topic(kafka_bootstrap, s.topic_dlq)
    # processed + dead-lettered = input: every bad record is in the DLQ (at least once).
    assert {r.value for r in dlq} == {v for _, v in bad}
    assert all(dict(r.headers)["error"].startswith(b"not valid JSON") for r in dlq)


async def test_send_retries_stop_at_the_time_budget(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's transaction and locks are held while the DLQ is retried: past the budget no new
    round starts, however many attempts are left."""
    monkeypatch.setattr(deadletter, "SEND_BUDGET_SECONDS", 0.0)
    topic = unique_name("dlq")
    async with producer(kafka_bootstrap) as prod:
        flaky = FlakyProducer(prod, topic, failures=10**6)
        with pytest.raises(DeadLetterUndelivered, match="after 1 attempts"):
            await publish_dead_letters(flaky, topic, [_letter(b"v")], attempts=5, backoff=Backoff(0.01, 0.02))
    assert flaky.attempts == 1
