"""Producing the fault suite's input and reading its outputs back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from faults.oracle import Produced
from helpers.kafka_io import Kafka, Record, kafka_settings, read_topic
from segment_worker.kafka import producer


async def produce_tracked(bootstrap: Kafka, topic: str, records: Iterable[Record]) -> list[Produced]:
    """Send ``records`` in order (default partitioner, by key) and answer where each one landed."""
    recs = list(records)
    async with producer(kafka_settings(bootstrap), linger_ms=20) as prod:
        futures = [await prod.send(topic, value=v, key=k) for k, v in recs]
        metas = await asyncio.gather(*futures)
    return [Produced(k, v, m.partition, m.offset) for (k, v), m in zip(recs, metas, strict=True)]


async def produce_paced(
    bootstrap: Kafka, topic: str, records: Sequence[Record], *, rate: float, chunk: int = 100
) -> list[Produced]:
    """Send ``records`` at about ``rate`` records/s, ``chunk`` at a time (a steady stream)."""
    out: list[Produced] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with producer(kafka_settings(bootstrap), linger_ms=5) as prod:
        for i in range(0, len(records), chunk):
            part = records[i : i + chunk]
            futures = [await prod.send(topic, value=v, key=k) for k, v in part]
            metas = await asyncio.gather(*futures)
            out += [Produced(k, v, m.partition, m.offset) for (k, v), m in zip(part, metas, strict=True)]
            ahead = start + (i + len(part)) / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return out


def ends(produced: Sequence[Produced]) -> dict[int, int]:
    """Per partition, the offset after the last produced record."""
    out: dict[int, int] = {}
    for r in produced:
        out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
    return out


async def read_all(bootstrap: str, topic: str, limit_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` (empty if the topic does not exist)."""
    return await read_topic(bootstrap, topic, limit_s=limit_s)
