"""``kafka.on_connection_broken`` against a real broker killed for real: it is what tells a running
worker that the broker may have come back without its logs (``worker.topics``). It wraps a private
aiokafka method, so this goes red if aiokafka changes it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiokafka import TopicPartition

from helpers.own_servers import OwnTansu
from segment_worker import kafka
from segment_worker.config import Settings


async def test_a_broker_killed_under_clients_is_reported_once_per_broken_connection(tmp_path: Path) -> None:
    broker = OwnTansu(tmp_path)
    await broker.start()
    s = Settings(kafka_bootstrap=broker.bootstrap, topic_events="in", topic_membership="out", topic_dlq="dlq",
                 input_partitions=2)
    await kafka.ensure_topics(s)
    producer = kafka.create_producer(s)
    consumer = kafka.create_consumer(s, group_id=None)
    broken = {"producer": 0, "consumer": 0}
    kafka.on_connection_broken(producer, lambda: broken.__setitem__("producer", broken["producer"] + 1))
    kafka.on_connection_broken(consumer, lambda: broken.__setitem__("consumer", broken["consumer"] + 1))
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition("in", 0)])
        await (await producer.send("in", b"v", key=b"k", partition=0))
        assert [r.value for r in (await consumer.getmany(timeout_ms=3000))[TopicPartition("in", 0)]] == [b"v"]
        assert broken == {"producer": 0, "consumer": 0}  # an open connection is not reported

        broker.kill()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not (broken["producer"] and broken["consumer"]):
            assert loop.time() < deadline, f"broken connections not reported: {broken}"
            await asyncio.sleep(0.05)
    finally:
        # Stopping with the broker gone: aiokafka's fetcher task ends cancelled.
        for client in (consumer, producer):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await client.stop()
        broker.kill()
    quiet = dict(broken)
    await asyncio.sleep(0.2)
    assert broken == quiet  # a client stopped on purpose reports nothing
