"""Telling a record's fault from the infrastructure's, and how long to wait before a retry.

``classify`` sorts an exception from a batch into one of three kinds:

- ``fenced``: another worker owns the partition (handled by the loop, as before).
- ``poison``: an error that one input record can cause — Python value/arithmetic/type errors
  (``OverflowError: date value out of range``), PostgreSQL data exceptions (SQLSTATE class 22),
  integrity violations (23) and program limits (54: "index row size … exceeds maximum"), and
  asyncpg's client-side ``DataError`` (a parameter it cannot encode). The batch is re-run split
  (``batch.BatchProcessor.run_isolating``) to find the record; a record that fails alone is
  dead-lettered.
- ``transient``: everything else — lost connections, timeouts (a statement, lock or idle-in-
  transaction timeout included: they come from load or locks, never from one record, since every
  per-record write is a keyed upsert), serialization failures, a read-only standby, a schema that
  does not match (class 42: a migration not run), Redis and Kafka errors, our retriable
  ``StoreUnavailable``. These retry the whole batch after a jittered backoff and never dead-letter:
  an error the worker cannot pin on a record must not cost good input.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

import asyncpg

from ..errors import BadInput, FencedError

Kind = Literal["fenced", "poison", "transient"]

# SQLSTATE classes a value in one record can cause (PostgreSQL Appendix A).
_POISON_SQLSTATE_CLASSES = frozenset(("22", "23", "54"))
_POISON_PYTHON = (ArithmeticError, ValueError, TypeError, LookupError, AttributeError, AssertionError,
                  RecursionError)


def classify(exc: BaseException) -> Kind:
    """Whether ``exc`` (raised by a batch) is a fencing, a record's fault, or transient."""
    if isinstance(exc, FencedError):
        return "fenced"
    if isinstance(exc, asyncpg.DataError):  # client side: a parameter asyncpg cannot encode
        return "poison"
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return "poison" if state[:2] in _POISON_SQLSTATE_CLASSES else "transient"
    if isinstance(exc, BadInput):
        return "poison"
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return "transient"  # OSError covers ConnectionError and TimeoutError
    if isinstance(exc, _POISON_PYTHON):
        return "poison"
    return "transient"


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in
    ``[0, min(cap, initial * 2**n)]``, so workers that failed together (a failover) do not retry in
    lockstep (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015). ``reset`` after a
    success."""

    def __init__(self, initial: float, cap: float, *, rng: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.cap = cap
        self.attempts = 0
        self._rng = rng

    def next(self) -> float:
        """The next delay in seconds (and count the attempt)."""
        ceiling = min(self.cap, self.initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return float(self._rng() * ceiling)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempts = 0
