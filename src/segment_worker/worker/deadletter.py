"""Records the worker does not apply itself: dead letters (bad input) and re-keyed records.

Both are published, and their delivery awaited, before the batch's unit of work commits its
offsets, so a crash in between re-publishes them (at-least-once) rather than losing them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

log = logging.getLogger(__name__)

# When the broker (or our producer) refuses a whole oversized DLQ copy, these prefixes are tried in
# turn (CONTRACT §10: a truncated copy with header ``truncated: true``). The first fits a broker
# with Kafka's default ``message.max.bytes`` (1,048,588) with room for headers and batch overhead.
TRUNCATED_SIZES = (1_032_192, 65_536, 0)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """What the worker keeps of an input record it does not apply."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, record: Any) -> SourceRecord:
        """From an aiokafka ``ConsumerRecord``."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bad record and why it is bad (a human-readable reason, CONTRACT §2)."""

    source: SourceRecord
    reason: str

    def headers(self, *, truncated: bool = False) -> list[tuple[str, bytes]]:
        """The source's headers plus ours (ours replace any of the same name)."""
        ours = {
            "error": self.reason.encode("utf-8", "replace"),
            "source-topic": self.source.topic.encode(),
            "source-partition": str(self.source.partition).encode(),
            "source-offset": str(self.source.offset).encode(),
        }
        if truncated:
            ours["truncated"] = b"true"
        kept = [(k, v) for k, v in self.source.headers if k not in ours]
        return kept + list(ours.items())


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """A good record under the wrong key (or in the wrong partition) and the key it should have."""

    source: SourceRecord
    key: bytes


async def publish_dead_letters(producer: Any, topic: str, letters: Sequence[DeadLetter]) -> None:
    """Send every letter to the DLQ topic, value unchanged, and wait until all are delivered.

    A copy the producer or broker refuses as too large is sent truncated (header ``truncated``);
    other send errors propagate (the batch is then retried, which is safe: DLQ copies are
    at-least-once).
    """
    pending: list[tuple[DeadLetter, asyncio.Future[Any] | None]] = []
    for letter in letters:
        src = letter.source
        log.warning("%s[%d]@%d goes to the DLQ: %s", src.topic, src.partition, src.offset, letter.reason,
                    extra={"partition": src.partition, "offset": src.offset})
        try:
            fut = await producer.send(
                topic, value=letter.source.value, key=letter.source.key, headers=letter.headers()
            )
        except MessageSizeTooLargeError:
            fut = None
        pending.append((letter, fut))
    for letter, fut in pending:
        if fut is not None:
            try:
                await fut
                continue
            except MessageSizeTooLargeError:
                pass
        await _send_truncated(producer, topic, letter)


async def _send_truncated(producer: Any, topic: str, letter: DeadLetter) -> None:
    value = letter.source.value or b""
    for size in TRUNCATED_SIZES:
        try:
            fut = await producer.send(
                topic, value=value[:size], key=letter.source.key, headers=letter.headers(truncated=True)
            )
            await fut
        except MessageSizeTooLargeError:
            continue
        log.warning(
            "DLQ copy of %s[%d]@%d (%d bytes) refused as too large; sent the first %d bytes (truncated)",
            letter.source.topic,
            letter.source.partition,
            letter.source.offset,
            len(value),
            min(size, len(value)),
        )
        return
    # Not even an empty copy fits: nothing more can be done without stopping on bad input.
    log.error(
        "DLQ refused every copy of %s[%d]@%d (reason: %s)",
        letter.source.topic,
        letter.source.partition,
        letter.source.offset,
        letter.reason,
    )


async def publish_rekeyed(producer: Any, topic: str, records: Sequence[Rekeyed]) -> None:
    """Re-publish each record to ``topic`` under its right key; wait until all are delivered.

    The producer's default partitioner then puts it in its owning partition, where the owner
    applies it: so one customer always has one writer (CONTRACT §10).
    """
    futures = []
    for item in records:
        headers = [*item.source.headers, ("rekeyed-from", item.source.key or b"")]
        futures.append(await producer.send(topic, value=item.source.value, key=item.key, headers=headers))
    for fut in futures:
        await fut
