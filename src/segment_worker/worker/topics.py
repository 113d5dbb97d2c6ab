"""``TopicGuard``: whether the topics a worker writes are known to exist, and the task that
recreates them when a broker lost them (issue 13, broker restarts).

Why a guard and not only a periodic check: the embedded broker (Tansu, memory storage) answers a
produce to a topic it does not have with success — offset 0, and the record kept nowhere (seen
here: ``RecordMetadata(offset=0)`` after ``delete_topics``, the topic still absent) — so whatever
the outbox sent between a broker restart and the next check was lost while marked sent. Apache
Kafka answers ``UNKNOWN_TOPIC_OR_PARTITION`` instead and aiokafka retries, but the guard costs
nothing there. It is closed (``suspect``) when

- a connection of the worker's consumer or producer to the broker breaks (``kafka.
  on_connection_broken``): what a broker restart looks like from the worker;
- positioning finds that the input log went back (its stored position is past the end, or the
  record before it is another one): the broker lost its data, so the output and DLQ topics too;
- a delivery answers an offset at or below one delivered before to the same partition: a log
  only grows, so that one was recreated under the producer (``delivered``);

and while it is closed the outbox sends nothing and the batch loop applies nothing. The topics
task then checks (and recreates) the topics at once instead of at its next period, reopens the
guard and has the outbox sent.

Who calls what: the outbox calls ``verified`` and ``delivered``; ownership and the worker's
connection callbacks ``suspect``; the batch loop ``verified`` and ``wait_verified``;
``watch_topics`` (the worker's background task) ``wait_check`` and ``confirmed``. All of it runs
on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..config import Settings
from ..kafka import ensure_topics

log = logging.getLogger(__name__)


class TopicGuard:
    """Whether the topics are known to exist; the highest offset delivered per partition."""

    def __init__(self) -> None:
        self._verified = asyncio.Event()
        self._verified.set()  # the worker created or found them at start
        self._check = asyncio.Event()
        self._delivered: dict[tuple[str, int], int] = {}  # (topic, partition) → highest base offset
        self._suspicions = 0  # a check confirms the topics only if none came while it ran

    @property
    def verified(self) -> bool:
        """The topics existed at the last check and nothing since suggests a broker lost them."""
        return self._verified.is_set()

    def suspect(self, why: str) -> None:
        """A broker may have lost its topics (``why`` is logged): close the guard and have the
        topics task check them now."""
        if self._verified.is_set():
            log.warning("%s: holding Kafka sends until the topics are checked (and recreated)", why)
        self._verified.clear()
        self._suspicions += 1
        self._check.set()

    def delivered(self, results: Iterable[Any]) -> bool:
        """Record the ``RecordMetadata`` of deliveries, settled in send order. Answers False (and
        suspects the topics) when one went back: the log was recreated, so those records, and
        what went before them, may be lost and must be sent again."""
        lowest: dict[tuple[str, int], int] = {}
        highest: dict[tuple[str, int], int] = {}
        for md in results:
            tp = (md.topic, md.partition)
            lowest[tp] = min(md.offset, lowest.get(tp, md.offset))
            highest[tp] = max(md.offset, highest.get(tp, md.offset))
        seen = self._delivered
        back = sorted(tp for tp, low in lowest.items() if tp in seen and low <= seen[tp])
        if back:
            topics = {t for t, _ in back}
            # Forget them: once the topics are confirmed, the new log's offsets start again.
            self._delivered = {tp: o for tp, o in self._delivered.items() if tp[0] not in topics}
            first = back[0]
            self.suspect(
                f"delivery to {first[0]}[{first[1]}] answered offset {lowest[first]}, not past an offset"
                " delivered there before (the broker lost the topic)"
            )
            return False
        self._delivered.update(highest)
        return True

    async def wait_verified(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the guard to open; answers whether it is open."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._verified.wait(), seconds)
        return self._verified.is_set()

    async def wait_check(self, period: float) -> int:
        """Until the next check is due: ``period`` seconds (0: never), or at once when suspected
        — or while the guard is still closed (the check before failed: the caller's restart
        backoff paces the retries). Answers the check's ticket for ``confirmed``."""
        if self._verified.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check.wait(), period if period > 0 else None)
        self._check.clear()
        return self._suspicions

    def confirmed(self, ticket: int, *, recreated: bool) -> None:
        """The check that began with ``ticket`` found the topics: open the guard, unless a
        suspicion came while it ran (the next check is due). After a suspicion, or when some had
        to be created again (``recreated``), the offsets delivered before mean nothing: the logs
        may have started again, and whatever was delivered while the guard was closed is sent
        again anyway."""
        if recreated or not self._verified.is_set():
            self._delivered.clear()
        if ticket == self._suspicions:
            self._verified.set()


async def watch_topics(
    settings: Settings,
    guard: TopicGuard,
    period: float,
    *,
    on_input_recreated: Callable[[], Awaitable[None]],
    on_confirmed: Callable[[], Awaitable[None]],
) -> None:
    """The worker's topics task: every ``period`` seconds, or at once when the guard is suspected,
    create the topics a broker lost. A recreated input topic is a new log whose offsets restart at
    0: ``on_input_recreated`` voids the positions stored for the old one (a new incarnation,
    migration 010) and re-reads the owned partitions from the log start, so no record of the new
    log is skipped once it grows past an old position (records of the old log applied before are
    versioned: a replay of them changes nothing). Once confirmed after a suspicion,
    ``on_confirmed`` sends the outbox held back meanwhile. Errors propagate (the worker's guard
    restarts the task; the Kafka guard stays closed meanwhile)."""
    while True:
        ticket = await guard.wait_check(period)
        was_verified = guard.verified
        missing: list[str] = []
        await ensure_topics(settings, missing_out=missing)
        if missing:
            log.warning("Kafka topics %s were missing (did the broker lose its data?); recreated them",
                        missing)
            if settings.topic_events in missing:
                await on_input_recreated()
        guard.confirmed(ticket, recreated=bool(missing))
        if guard.verified and (missing or not was_verified):
            await on_confirmed()
