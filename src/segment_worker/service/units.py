"""Units of work of management operations: every membership change runs under the partition
locks of the customers it touches, in one transaction, with Redis applied after commit
(``stores.unit.partition_unit``), so the change is final when the call returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from ..stores.unit import partition_unit
from ..timeutil import utc_ms
from .context import ServiceContext


@dataclass(frozen=True, slots=True)
class ServiceUnit:
    """An open unit: its transaction's connection and its time (``joined_at`` / event ``time``)."""

    conn: asyncpg.Connection
    partitions: tuple[int, ...]
    at: datetime


# The transitions the open unit wrote, (kind, cause kind) → count: reported to the context once the
# unit committed (``ServiceContext.transition_sinks``: the API's transitions counter). A context
# variable, so that the writers (``recompute``) need no extra argument through every operation.
_TALLY: ContextVar[Counter[tuple[str, str]] | None] = ContextVar("sw_unit_tally", default=None)


def count_transitions(
    cause: Mapping[str, str], *, entered: int = 0, exited: int = 0, deleted: int = 0
) -> None:
    """Count transitions written in the open unit (no-op outside one)."""
    tally = _TALLY.get()
    if tally is None:
        return
    kind = cause.get("kind", "manual")
    for name, n in (("entered", entered), ("exited", exited), ("deleted", deleted)):
        if n:
            tally[(name, kind)] += n


@asynccontextmanager
async def unit(ctx: ServiceContext, partitions: Iterable[int]) -> AsyncIterator[ServiceUnit]:
    """Lock ``partitions``, open the transaction; on a clean exit commit and apply Redis."""
    tally: Counter[tuple[str, str]] = Counter()
    token = _TALLY.set(tally)
    try:
        # bump_generation: the owning workers must drop their cached states and memberships.
        async with partition_unit(ctx.pool, ctx.redis, sorted(set(partitions)), bump_generation=True) as u:
            # Taken once the locks are held: the closest instant to the commit that we can know.
            yield ServiceUnit(u.conn, u.partitions, utc_ms(datetime.now(UTC)))
    finally:
        _TALLY.reset(token)
    # Reached only when the unit committed: a rolled-back unit wrote no transition.
    if tally:
        for sink in ctx.transition_sinks:
            sink(tally)
