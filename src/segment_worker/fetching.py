"""Fetching ahead: one ``getmany`` and the parsing of its records, runnable while a batch commits,
and the rule deciding which of those records may still be applied when their turn comes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from .batch import Sorted, sort_records


@dataclass(frozen=True, slots=True)
class Fetched:
    """One ``getmany``'s records, parsed per input partition."""

    parts: dict[int, Sorted]
    moves: dict[int, int]  # the worker's per-partition move counts when getmany answered
    records: int
    error: KafkaError | None


async def fetch(
    consumer: Any, topic: str, partitions: int, moves: Mapping[int, int], *, timeout_ms: int, max_records: int
) -> Fetched:
    """``getmany`` (never call it under the worker's lock), then parse each partition's records
    (``partitions``: the input topic's count, for the key check)."""
    try:
        data = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    except KafkaError as exc:
        return Fetched({}, {}, 0, exc)
    # aiokafka returns only records consistent with seeks and pauses made before getmany
    # answered; the positions moved after this instant are told apart by ``usable``.
    at_answer = dict(moves)
    parts: dict[int, Sorted] = {}
    total = 0
    for tp, rs in data.items():
        if tp.topic == topic and rs:
            parts[tp.partition] = sort_records(rs, partitions)
            total += len(rs)
            await asyncio.sleep(0)  # let a batch in flight proceed between partitions
    return Fetched(parts, at_answer, total, None)


def usable(fetched: Fetched, ready: Set[int], moves: Mapping[int, int]) -> Sorted:
    """The records of ``fetched`` still to apply (call under the worker's lock): only partitions
    still ``ready`` (the group may have moved them), and not positioned since the fetch (rewound
    and re-sought: it was fetched from before the seek, which already set where it is read again)."""
    return Sorted.merge(
        s for p, s in fetched.parts.items() if p in ready and moves.get(p, 0) == fetched.moves.get(p, 0)
    )
