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
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from ..config import Settings
from ..errors import SegmentWorkerError
from ..kafka import create_consumer

log = logging.getLogger(__name__)


def record_fingerprint(record: Any) -> tuple[int, int]:
    """(Kafka timestamp in ms, signed 64-bit BLAKE2b of key and value) of a consumer record: what
    is stored with the position after it, to tell on assignment whether the log still holds that
    record (``seek_stored``; a log recreated while no worker watched it holds another one)."""
    h = hashlib.blake2b(digest_size=8)
    key = record.key
    h.update(b"\xff" if key is None else len(key).to_bytes(4, "big") + key)  # key/value boundary
    h.update(record.value or b"")
    return int(record.timestamp), int.from_bytes(h.digest(), "big", signed=True)


_REACHED = object()  # the log holds the offset (high watermark past it); the record not fetched yet


async def _probe_before(
    settings: Settings, positions: Mapping[TopicPartition, int], *, wait_s: float, need_record: bool
) -> dict[TopicPartition, Any]:
    """Fetch each partition's record at ``position - 1`` with a group-less consumer. Answers, per
    partition decided within ``wait_s``: the record, ``None`` when the log does not hold that
    offset, or (``need_record`` false) ``_REACHED`` when the high watermark shows it does."""
    probe = create_consumer(
        settings, group_id=None, auto_offset_reset="none", client_id="segment-worker-probe"
    )
    await probe.start()
    try:
        probe.assign(list(positions))
        for tp, position in positions.items():
            probe.seek(tp, max(0, position - 1))
        found: dict[TopicPartition, Any] = {}
        undecided = set(positions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while undecided and loop.time() < deadline:
            try:
                batch = await probe.getmany(*undecided, timeout_ms=200)
            except OffsetOutOfRangeError as exc:  # a broker that says so (Apache Kafka)
                out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else undecided
                for tp in set(out) & undecided:
                    found[tp] = None
                undecided -= set(out)
                continue
            for tp in list(undecided):
                want = positions[tp] - 1
                records = batch.get(tp) or []
                hw = probe.highwater(tp)
                at = [r for r in records if r.offset == want]
                if at:
                    found[tp] = at[0]
                elif records and not need_record:
                    found[tp] = _REACHED
                elif any(r.offset > want for r in records):  # the offset is not in the log
                    found[tp] = None
                elif hw is not None and hw >= positions[tp]:
                    if need_record:
                        continue  # the log holds it: its fetch answers on a next round
                    found[tp] = _REACHED
                elif hw is not None:  # a fetch answered and the log ends before the position
                    found[tp] = None
                else:
                    continue
                undecided.discard(tp)
        return found
    finally:
        await probe.stop()


async def log_reaches(
    settings: Settings, positions: Mapping[TopicPartition, int], *, wait_s: float = 3.0
) -> set[TopicPartition]:
    """The partitions whose log holds offset ``position - 1`` (so ``position`` is inside the log or
    at its end), found by fetching from there with a group-less consumer."""
    found = await _probe_before(settings, positions, wait_s=wait_s, need_record=False)
    return {tp for tp, r in found.items() if r is not None}


async def log_went_back(
    settings: Settings,
    positions: Mapping[TopicPartition, int],
    fingerprints: Mapping[TopicPartition, tuple[int, int]],
    *,
    wait_s: float = 3.0,
) -> set[TopicPartition]:
    """The partitions whose log no longer holds the record consumed before their stored position
    (missing, or another fingerprint): the log was recreated or went back. Raises a retriable
    ``SegmentWorkerError`` when a partition stays undecided (the broker did not answer in time)."""
    found = await _probe_before(settings, positions, wait_s=wait_s, need_record=True)
    undecided = sorted(f"{tp.topic}[{tp.partition}]" for tp in set(positions) - set(found))
    if undecided:
        raise SegmentWorkerError(
            "cannot fetch the records before the stored positions", retriable=True,
            context={"partitions": undecided, "wait_s": wait_s},
        )
    return {tp for tp, r in found.items() if r is None or record_fingerprint(r) != fingerprints[tp]}


async def seek_stored(
    consumer: Any,
    settings: Settings,
    tps: Sequence[TopicPartition],
    offsets: Mapping[int, int],
    fingerprints: Mapping[int, tuple[int, int]] | None = None,
) -> set[TopicPartition]:
    """Seek each partition to its stored next offset; to the log start when none is stored, when
    the stored one lies past the log end (a broker that lost its data), or when the record before
    it is not the one consumed there (its stored fingerprint: a log recreated while no worker
    watched it, issue 13) — the last two logged as warnings, and answered (the log went back).
    Events are versioned: a replay from the log start changes nothing."""
    prints = fingerprints or {}
    # A stored fingerprint checks the record before the position itself, which also tells a
    # position past the log end; positions stored without one (before migration 011) get the
    # end check alone.
    checked = {
        tp: offsets[tp.partition] for tp in tps if offsets.get(tp.partition, 0) > 0 and tp.partition in prints
    }
    stored_prints = {tp: prints[tp.partition] for tp in checked}
    went_back = await log_went_back(settings, checked, stored_prints) if checked else set()
    ends = await consumer.end_offsets(list(tps))
    beyond = {
        tp: offsets[tp.partition]
        for tp in tps
        if tp not in checked and offsets.get(tp.partition, 0) > ends[tp]
    }
    inside = await log_reaches(settings, beyond) if beyond else set()
    lost: set[TopicPartition] = set()
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
            lost.add(tp)
        elif tp in went_back:
            log.warning(
                "the record before stored position %d of %s[%d] is missing or not the one consumed"
                " there (the topic was recreated or its log went back); continuing from the log start",
                stored,
                tp.topic,
                tp.partition,
            )
            stored = None
            lost.add(tp)
        if stored is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, stored)
    return lost


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
