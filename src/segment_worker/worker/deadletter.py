"""Records the worker does not apply itself: dead letters (bad input) and re-keyed records.

Both are published, and their delivery awaited, before the batch's unit of work commits its
offsets, so a crash in between re-publishes them (at-least-once) rather than losing them.

The DLQ never drops a record (processed + dead-lettered = input): a send that fails is retried
with backoff a bounded number of times, then ``DeadLetterUndelivered`` (retriable) fails the batch,
whose offsets therefore never pass an undelivered copy; a copy refused as too large goes out
truncated (CONTRACT §10), down to an empty value with only our headers, and if even that is
refused the batch fails the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ..errors import StoreUnavailable
from .failures import Backoff

log = logging.getLogger(__name__)

# When the broker (or our producer) refuses a whole oversized DLQ copy, these prefixes are tried in
# turn (CONTRACT §10: a truncated copy with header ``truncated: true``). The first fits a broker
# with Kafka's default ``message.max.bytes`` (1,048,588) with room for headers and batch overhead.
TRUNCATED_SIZES = (1_032_192, 65_536, 0)
# The last rung: no value, none of the source's headers, the key and our reason cut to these
# (a key or headers alone may be what is too large). Our headers then take about 1.3 kB.
LAST_KEY_BYTES = 256
LAST_REASON_BYTES = 1024
# Sends of one batch's copies: this many rounds (with jittered backoff between) before the batch
# fails as transient; aiokafka itself retries each send within its request timeout first.
SEND_ATTEMPTS = 5
SEND_BACKOFF = (0.1, 2.0)  # initial, cap (seconds)
# … and no new round starts after this long: the batch's transaction and partition locks are held
# meanwhile, and one round against a broker that is down can take aiokafka's request timeout (40 s).
SEND_BUDGET_SECONDS = 30.0
_SEND_ERRORS = (KafkaError, OSError)


class DeadLetterUndelivered(StoreUnavailable):
    """A DLQ copy could not be delivered: the batch fails (retriable) and commits nothing past it."""

    code = "dead_letter_undelivered"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """What the worker keeps of an input record it does not apply."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1  # the record's Kafka timestamp (ms; end-to-end latency), -1: none

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
            timestamp=record.timestamp,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A bad record and why it is bad (a human-readable reason, CONTRACT §2)."""

    source: SourceRecord
    reason: str
    # The ``reason`` label of ``segment_worker_dlq_records`` (``events.DLQ_REASONS``).
    kind: str = "invalid_event"

    def headers(self, *, truncated: bool = False, minimal: bool = False) -> list[tuple[str, bytes]]:
        """The source's headers plus ours (ours replace any of the same name); ``minimal``: ours
        alone, the reason cut to ``LAST_REASON_BYTES`` (the last rung of the truncation ladder)."""
        error = self.reason.encode("utf-8", "replace")
        ours = {
            "error": error[:LAST_REASON_BYTES] if minimal else error,
            "source-topic": self.source.topic.encode(),
            "source-partition": str(self.source.partition).encode(),
            "source-offset": str(self.source.offset).encode(),
        }
        if truncated:
            ours["truncated"] = b"true"
        if minimal:
            return list(ours.items())
        kept = [(k, v) for k, v in self.source.headers if k not in ours]
        return kept + list(ours.items())


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """A good record under the wrong key (or in the wrong partition) and the key it should have."""

    source: SourceRecord
    key: bytes


async def publish_dead_letters(
    producer: Any,
    topic: str,
    letters: Sequence[DeadLetter],
    *,
    attempts: int = SEND_ATTEMPTS,
    backoff: Backoff | None = None,
) -> None:
    """Send every letter to the DLQ topic, value unchanged, and wait until all are delivered.

    A copy the producer or broker refuses as too large is sent truncated (header ``truncated``).
    Other send errors are retried ``attempts`` times in all, with ``backoff`` between rounds; then
    ``DeadLetterUndelivered`` is raised (the batch is retried later, which is safe: DLQ copies are
    at-least-once). Nothing is ever dropped.
    """
    for letter in letters:
        src = letter.source
        log.warning("%s[%d]@%d goes to the DLQ: %s", src.topic, src.partition, src.offset, letter.reason,
                    extra={"partition": src.partition, "offset": src.offset})
    delays = backoff or Backoff(*SEND_BACKOFF)
    pending = list(letters)
    deadline = asyncio.get_running_loop().time() + SEND_BUDGET_SECONDS
    for attempt in range(1, attempts + 1):
        failed: list[DeadLetter] = []
        last: BaseException | None = None
        sent: list[tuple[DeadLetter, asyncio.Future[Any] | None]] = []
        for letter in pending:
            try:
                fut = await producer.send(
                    topic, value=letter.source.value, key=letter.source.key, headers=letter.headers()
                )
            except MessageSizeTooLargeError:
                fut = None
            except _SEND_ERRORS as exc:
                failed.append(letter)
                last = exc
                continue
            sent.append((letter, fut))
        for letter, fut in sent:
            try:
                if fut is not None:
                    try:
                        await fut
                        continue
                    except MessageSizeTooLargeError:
                        pass
                await _send_truncated(producer, topic, letter)
            except _SEND_ERRORS as exc:
                failed.append(letter)
                last = exc
        if not failed:
            return
        pending = failed
        log.warning(
            "DLQ: %d of %d copies not delivered (attempt %d of %d): %s: %s",
            len(failed), len(letters), attempt, attempts, type(last).__name__, last,
        )
        if attempt == attempts or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(delays.next())
    first = pending[0].source
    raise DeadLetterUndelivered(
        f"{len(pending)} DLQ copies not delivered after {attempt} attempts ({type(last).__name__}: {last})",
        context={"topic": topic, "first": f"{first.topic}[{first.partition}]@{first.offset}"},
    )


async def _send_truncated(producer: Any, topic: str, letter: DeadLetter) -> None:
    """The truncation ladder; raises ``DeadLetterUndelivered`` when every rung is refused as too
    large, and lets other send errors through (the caller retries them)."""
    value = letter.source.value or b""
    key = letter.source.key
    rungs = [(size, key, letter.headers(truncated=True)) for size in TRUNCATED_SIZES]
    cut = None if key is None else key[:LAST_KEY_BYTES]
    rungs.append((0, cut, letter.headers(truncated=True, minimal=True)))
    for size, rung_key, headers in rungs:
        try:
            fut = await producer.send(topic, value=value[:size], key=rung_key, headers=headers)
            await fut
        except MessageSizeTooLargeError:
            continue
        log.warning(
            "DLQ copy of %s[%d]@%d (%d bytes) refused as too large; sent the first %d bytes (truncated)%s",
            letter.source.topic,
            letter.source.partition,
            letter.source.offset,
            len(value),
            min(size, len(value)),
            "" if rung_key is key else ", with only our headers and the key cut",
        )
        return
    # Not even an empty copy fits: fail the batch rather than commit past a record never delivered.
    raise DeadLetterUndelivered(
        f"the DLQ refused every copy of {letter.source.topic}[{letter.source.partition}]"
        f"@{letter.source.offset} as too large, even an empty one",
        context={"topic": topic, "reason": letter.reason},
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
