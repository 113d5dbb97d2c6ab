"""``PartitionState``: which input partitions one worker owns and where each of them stands.

One object holds what the batch loop, the rebalance callbacks, the ticker and the outbox share
(modelled on aiokafka's ``SubscriptionState``): the partitions *owned* (claimed in PostgreSQL,
with the epoch that fences every write), which of them are *ready* (positioned at their stored
offsets; the others are paused), how often each was *moved* (rewound or positioned: records
fetched before a move are stale), and the offsets consumed but not yet committed to Kafka.

It does no I/O and never awaits, so a method cannot interleave with another; callers change it
under the worker's lock (``Worker._lock``), except ``take_commits``, which only the batch loop
calls between batches. Who calls each method is said on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class PartitionState:
    """Owned partitions with their epochs, readiness, move counts and offsets to commit."""

    def __init__(self) -> None:
        self._epochs: dict[int, int] = {}  # owned partition → epoch claimed
        self._unready: set[int] = set()  # assigned or rewound, not (re)positioned yet: paused
        self._moves: dict[int, int] = {}  # partition → times rewound or positioned
        self._to_commit: dict[int, int] = {}  # partition → next offset, not committed to Kafka

    # -- reading ----------------------------------------------------------------------------------

    @property
    def owned(self) -> Mapping[int, int]:
        """Owned partition → epoch (a read-only view; probes, the outbox, tests)."""
        return self._epochs

    @property
    def moves(self) -> Mapping[int, int]:
        """Partition → move count: ``fetching`` compares it with the count when getmany answered."""
        return self._moves

    def ready(self) -> dict[int, int]:
        """The owned partitions that are positioned, with their epochs: what a batch or a tick may
        write (the batch loop, the ticker)."""
        return {p: e for p, e in self._epochs.items() if p not in self._unready}

    def unready(self) -> set[int]:
        """Owned partitions waiting to be positioned (the batch loop positions them first)."""
        return self._unready & self._epochs.keys()

    def has_unready(self) -> bool:
        """Anything to position before the next fetch (the batch loop)."""
        return bool(self._unready)

    def pending_commits(self) -> bool:
        """Offsets consumed and not yet committed to Kafka (``Worker.close``)."""
        return bool(self._to_commit)

    # -- changing ---------------------------------------------------------------------------------

    def assigned(self, partitions: Iterable[int]) -> None:
        """The group assigned ``partitions``: unready until claimed and positioned
        (``on_partitions_assigned``, before the claim)."""
        self._unready |= set(partitions)

    def claimed(self, epochs: Mapping[int, int]) -> None:
        """``claim_partitions`` answered these epochs: the partitions are owned from now on
        (``on_partitions_assigned``)."""
        self._epochs.update(epochs)

    def moving(self, partitions: Iterable[int]) -> None:
        """About to seek ``partitions``: records fetched so far are stale (positioning, before the
        seek; the partitions are paused, so no fetch can answer theirs in between)."""
        for p in partitions:
            self._moves[p] = self._moves.get(p, 0) + 1

    def positioned(self, partitions: Iterable[int]) -> None:
        """``partitions`` were sought to their stored offsets: ready; their uncommitted offsets are
        dropped (PostgreSQL holds the truth). Called by positioning, after the seek."""
        parts = set(partitions)
        for p in parts:
            self._to_commit.pop(p, None)
        self._unready -= parts

    def rewound(self, partitions: Iterable[int]) -> None:
        """A batch over ``partitions`` failed: re-read them from the stored offsets (the batch
        loop; the caller pauses them)."""
        parts = set(partitions)
        self.moving(parts)
        self._unready |= parts

    def lost(self, partitions: Iterable[int]) -> None:
        """``partitions`` were revoked, or claimed by another worker (fenced): forget them
        (the rebalance callback, the batch loop, the ticker)."""
        parts = set(partitions)
        for p in parts:
            self._epochs.pop(p, None)
        self._unready -= parts

    def keep_only_owned(self) -> None:
        """Forget unready marks of partitions no longer owned (the batch loop, before positioning)."""
        self._unready &= self._epochs.keys()

    def consumed(self, next_offsets: Mapping[int, int]) -> None:
        """A batch committed these positions in PostgreSQL: commit them to Kafka later (the batch
        loop)."""
        self._to_commit.update(next_offsets)

    def take_commits(self) -> dict[int, int]:
        """The offsets to commit to Kafka now, forgotten here (the batch loop, ``Worker.close``)."""
        offsets, self._to_commit = self._to_commit, {}
        return offsets

    def clear(self) -> None:
        """The worker closed: it owns nothing (``Worker.close``)."""
        self._epochs.clear()
        self._unready.clear()
        self._to_commit.clear()
