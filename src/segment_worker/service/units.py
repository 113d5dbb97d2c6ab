"""Units of work of management operations: every membership change runs under the partition
locks of the customers it touches, in one transaction, with Redis applied after commit
(``stores.unit.partition_unit``), so the change is final when the call returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from ..stores.pgtimeouts import RECOMPUTE_STATEMENT_TIMEOUT, set_local_statement_timeout
from ..stores.unit import partition_unit
from ..timeutil import utc_ms
from .context import ServiceContext


@dataclass(frozen=True, slots=True)
class ServiceUnit:
    """An open unit: its transaction's connection and its time (``joined_at`` / event ``time``)."""

    conn: asyncpg.Connection
    partitions: tuple[int, ...]
    at: datetime


@asynccontextmanager
async def unit(ctx: ServiceContext, partitions: Iterable[int]) -> AsyncIterator[ServiceUnit]:
    """Lock ``partitions``, open the transaction; on a clean exit commit and apply Redis."""
    # bump_generation: the owning workers must drop their cached states and memberships.
    async with partition_unit(ctx.pool, ctx.redis, sorted(set(partitions)), bump_generation=True) as u:
        # A rule change or import over a whole workspace runs statements of seconds (4–7 s at 1M
        # customers in the bench): above the session's batch-sized statement timeout.
        await set_local_statement_timeout(u.conn, RECOMPUTE_STATEMENT_TIMEOUT)
        # Taken once the locks are held: the closest instant to the commit that we can know.
        yield ServiceUnit(u.conn, u.partitions, utc_ms(datetime.now(UTC)))
