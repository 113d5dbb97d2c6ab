"""Typed errors of the stores, on the project's ``SegmentWorkerError`` (``retriable``, ``context``).

Each is also an instance of the matching general error where there is one (``FencedError`` of
``segment_worker.errors.FencedError``, the transient ones of ``StoreUnavailable``), so callers may
catch either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import errors


class StoreError(errors.SegmentWorkerError):
    """A store operation failed; ``retriable`` tells whether the same call may succeed later."""

    code = "store_error"


class FencedError(StoreError, errors.FencedError):
    """This writer no longer owns a partition: another one claimed it with a newer epoch.

    Not retriable: the writer must drop the partition (its caches and in-flight batch).
    """

    code = "fenced"

    def __init__(self, expected: Mapping[int, int], found: Mapping[int, int | None]) -> None:
        self.expected = dict(expected)
        self.found = dict(found)
        self.partitions = sorted(p for p, e in self.expected.items() if self.found.get(p) != e)
        detail = ", ".join(
            f"partition {p}: ours {self.expected[p]}, now {self.found.get(p)}" for p in self.partitions
        )
        super().__init__(
            f"fenced: partitions claimed by another owner ({detail})",
            retriable=False,
            context={"partitions": self.partitions, "expected": self.expected, "found": self.found},
        )


class MembershipConflictError(StoreError):
    """Transitions do not continue the stored membership (seq or enter/exit order): the writer's
    view of memberships is stale or wrong. Retrying the same transitions cannot help; reload the
    memberships and recompute."""

    code = "membership_conflict"


class LockTimeoutError(StoreError, errors.StoreUnavailable):
    """The partition locks were not obtained in time (another unit holds them). Retriable."""

    code = "lock_timeout"
    default_retriable = True

    def __init__(self, partitions: Sequence[int], timeout: float) -> None:
        self.partitions = list(partitions)
        super().__init__(
            f"partition locks {self.partitions} not obtained within {timeout:g} s",
            context={"partitions": self.partitions, "timeout_s": timeout},
        )


class RedisApplyError(StoreError, errors.StoreUnavailable):
    """PostgreSQL committed, but applying the Redis side failed.

    The ops stay pending (transitions past the Redis cursors, ``redis_ops`` rows); the next unit on
    these partitions or ``replay_redis_ops`` applies them, and the outbox of these partitions is held
    back until then. Retriable.
    """

    code = "redis_unavailable"
    default_retriable = True

    def __init__(self, partitions: Sequence[int], cause: BaseException) -> None:
        self.partitions = list(partitions)
        super().__init__(
            f"committed in PostgreSQL but Redis writes for partitions {self.partitions} failed"
            f" ({type(cause).__name__}: {cause}); they stay pending and are replayed",
            context={"partitions": self.partitions},
        )
