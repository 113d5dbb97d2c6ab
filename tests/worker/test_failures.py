"""Which batch failures are a record's fault (isolate, dead-letter) and which are transient (retry the
whole batch after a jittered backoff, never dead-letter): DESIGN.md "Poison and limits"."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from segment_worker.errors import StoreUnavailable
from segment_worker.events import EventError
from segment_worker.stores.errors import FencedError, LockTimeoutError, RedisApplyError
from segment_worker.worker.deadletter import DeadLetterUndelivered
from segment_worker.worker.failures import Backoff, classify

POISON = [
    OverflowError("date value out of range"),
    ValueError("year 10000 is out of range"),
    TypeError("unsupported operand"),
    KeyError("x"),
    asyncpg.exceptions.ProgramLimitExceededError("index row size 5016 exceeds maximum 2712"),
    asyncpg.exceptions.DatetimeFieldOverflowError("date/time field value out of range"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"),
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.DataError("invalid input for query argument $1"),
    EventError("bad"),
]
TRANSIENT = [
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout"),
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError("terminating connection due to idle timeout"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
    asyncpg.exceptions.UndefinedTableError("relation does not exist"),  # a migration not run
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    ConnectionResetError(),
    TimeoutError(),
    OSError("network unreachable"),
    RedisConnectionError("Connection closed by server."),
    RedisTimeoutError("Timeout reading from socket"),
    ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    KafkaConnectionError("broker down"),
    KafkaTimeoutError(),
    StoreUnavailable("down"),
    LockTimeoutError([1], 5.0),
    RedisApplyError([1], RedisConnectionError("gone")),
    DeadLetterUndelivered("DLQ down"),
    RuntimeError("anything not known to be a record's fault"),
]


@pytest.mark.parametrize("exc", POISON, ids=lambda e: type(e).__name__)
def test_errors_one_record_can_cause_are_poison(exc: Exception) -> None:
    assert classify(exc) == "poison"


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_infrastructure_errors_are_transient(exc: Exception) -> None:
    assert classify(exc) == "transient"


def test_fencing_is_its_own_kind() -> None:
    assert classify(FencedError({1: 3}, {1: 4})) == "fenced"


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    top = Backoff(0.1, 5.0, rng=lambda: 1.0)
    assert [round(top.next(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    top.reset()
    assert top.next() == pytest.approx(0.1)
    jittered = Backoff(0.1, 5.0)
    delays = [jittered.next() for _ in range(200)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 150  # spread out, not in lockstep
