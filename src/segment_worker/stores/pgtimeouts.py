"""Session timeouts of every PostgreSQL connection the project opens, so that no process can
block another for long: a frozen or runaway session gives up its locks.

Values (why each; measurements in DESIGN.md "Timeouts"):

- ``lock_timeout`` 30 s: the longest legitimate lock wait is a worker batch queued behind a
  management unit that holds every partition lock — a rule change recomputing 1M customers
  holds them 4–7 s in the bench. Advisory-lock waits count too (``pg_advisory_lock`` obeys it).
- ``statement_timeout`` 60 s for batch, tick and API statements (a 2,000-record batch's
  statements take milliseconds to ~1 s); management units (recompute, imports) raise it for
  their own transaction to ``RECOMPUTE_STATEMENT_TIMEOUT`` with ``SET LOCAL`` (``local_settings``).
- ``idle_in_transaction_session_timeout`` 60 s: a transaction idle that long belongs to a
  frozen process (SIGSTOP, a VM paused) or a leaked connection; its backend is ended and its
  locks and transaction go with it. It is the backstop: a new partition owner ends a stale
  owner's backend itself after ``CLAIM_LOCK_TIMEOUT`` (``stores.fencing``).

A timeout surfaces as ``asyncpg`` ``LockNotAvailableError`` / ``QueryCanceledError`` /
``IdleInTransactionSessionTimeoutError``: transient errors (``is_timeout``), retried with
backoff, never poison.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# How long a new owner waits for a partition's row or advisory lock before it ends the stale
# owner's backend that holds it (a live owner lets go within one batch: its revocation waits for
# the batch in flight, and a batch's statements take well under a second).
CLAIM_LOCK_TIMEOUT = 5.0
# Management units (rule changes, imports, deletes over a whole workspace): 1M customers take
# 4–7 s in the bench; ten minutes leaves room for 50M+ before a statement is cancelled.
RECOMPUTE_STATEMENT_TIMEOUT = 600.0


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Session timeouts in seconds; 0 disables one (PostgreSQL's meaning)."""

    lock: float = 30.0
    statement: float = 60.0
    idle_in_transaction: float = 60.0

    def server_settings(self, application_name: str) -> dict[str, str]:
        """asyncpg ``server_settings`` (startup parameters) for a connection named
        ``application_name`` (at most 63 bytes are kept by PostgreSQL)."""
        return {
            "application_name": application_name[:63],
            "lock_timeout": _ms(self.lock),
            "statement_timeout": _ms(self.statement),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction),
        }


DEFAULT_TIMEOUTS = Timeouts()
# ``migrate``: DDL may rebuild an index over a big table (no statement limit), but it must not
# queue behind a running worker for ever while every other session queues behind it.
MIGRATE_TIMEOUTS = Timeouts(lock=60.0, statement=0.0, idle_in_transaction=60.0)

_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)


def is_timeout(exc: BaseException) -> bool:
    """A lock, statement or idle-in-transaction timeout (transient: retry, never poison)."""
    return isinstance(exc, _TIMEOUT_ERRORS)


async def set_local_statement_timeout(conn: asyncpg.Connection, seconds: float) -> None:
    """Raise (or lower) the statement timeout for the rest of the current transaction only."""
    await conn.execute(f"SET LOCAL statement_timeout = {int(seconds * 1000)}")
