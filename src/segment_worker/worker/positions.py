"""Consumer positions: where an assigned partition starts (the offset stored in PostgreSQL, or the
log start), and how far behind the log end a worker is.

Brokers differ in what they report: Tansu answers ListOffsets "latest" with the base offset of the
last record batch + 1 (short of the end when that batch holds several records), while the high
watermark of fetch responses is exact. So a stored position past the reported end is confirmed
by a fetch before it is declared lost, and lag takes the larger of both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from ..config import Settings
from ..kafka import create_consumer

log = logging.getLogger(__name__)


async def log_reaches(
    settings: Settings, positions: Mapping[TopicPartition, int], *, wait_s: float = 3.0
) -> set[TopicPartition]:
    """The partitions whose log holds offset ``position - 1`` (so ``position`` is inside the log or
    at its end), found by fetching from there with a group-less consumer."""
    probe = create_consumer(
        settings, group_id=None, auto_offset_reset="none", client_id="segment-worker-probe"
    )
    await probe.start()
    try:
        probe.assign(list(positions))
        for tp, position in positions.items():
            probe.seek(tp, max(0, position - 1))
        found: set[TopicPartition] = set()
        undecided = set(positions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while undecided and loop.time() < deadline:
            try:
                batch = await probe.getmany(*undecided, timeout_ms=200)
            except OffsetOutOfRangeError as exc:  # a broker that says so (Apache Kafka)
                out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else undecided
                undecided -= set(out)
                continue
            for tp in list(undecided):
                hw = probe.highwater(tp)
                if batch.get(tp) or (hw is not None and hw >= positions[tp]):
                    found.add(tp)
                    undecided.discard(tp)
                elif hw is not None:  # a fetch answered and the log ends before the position
                    undecided.discard(tp)
        return found
    finally:
        await probe.stop()


async def seek_stored(
    consumer: Any, settings: Settings, tps: Sequence[TopicPartition], offsets: Mapping[int, int]
) -> None:
    """Seek each partition to its stored next offset; to the log start when none is stored or the
    stored one lies past the log end (a broker that lost its data: logged as a warning)."""
    ends = await consumer.end_offsets(list(tps))
    beyond = {tp: offsets[tp.partition] for tp in tps if offsets.get(tp.partition, 0) > ends[tp]}
    inside = await log_reaches(settings, beyond) if beyond else set()
    for tp in tps:
        stored = offsets.get(tp.partition)
        if tp in beyond and tp not in inside:
            log.warning(
                "stored position %d of %s[%d] is past the log end (did the broker lose its data?);"
                " continuing from the log start",
                stored,
                tp.topic,
                tp.partition,
            )
            stored = None
        if stored is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, stored)


async def consumer_lag(consumer: Any, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Records between each partition's position and its log end (``end_offsets`` or the last
    fetch's high watermark, whichever is larger)."""
    if not tps:
        return {}
    ends = await consumer.end_offsets(list(tps))
    out: dict[TopicPartition, int] = {}
    for tp in tps:
        with contextlib.suppress(Exception):
            position = await asyncio.wait_for(consumer.position(tp), 1.0)
            end = max(ends[tp], consumer.highwater(tp) or 0)
            out[tp] = max(0, end - position)
    return out
