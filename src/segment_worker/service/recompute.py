"""Membership changes of management operations, as set-based SQL through ``stores.postgres``'s
``diff_segment`` (one statement per segment, whatever the number of customers): a dynamic
segment's recompute, and static adds/removes (the candidates forced in or out). Call inside a
unit holding the partitions of every customer touched."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from .. import tracing
from ..rules.compiled import CompiledRule
from ..rules.model import Catalog
from ..rules.timectx import TimeContext
from ..state import Transition
from ..stores import postgres as pg
from .ruleset import compile_json
from .units import count_transitions


@dataclass(frozen=True, slots=True)
class DynamicSegment:
    """A stored dynamic segment with its rule compiled against the current catalogue."""

    id: UUID
    name: str
    compiled: CompiledRule


RULES_CHANGED = {"kind": "rules_changed"}
MANUAL = {"kind": "manual"}
IMPORT = {"kind": "import"}


async def recompute(
    conn: asyncpg.Connection,
    workspace_id: str,
    segment_id: UUID,
    segment_name: str,
    compiled: CompiledRule,
    tctx: TimeContext,
    at: datetime,
    *,
    cause: dict[str, str] = RULES_CHANGED,
    candidates_sql: str | None = None,
) -> int:
    """Bring a dynamic segment to exactly the customers its rule matches (of those
    ``candidates_sql`` selects, when given: a parameterless SELECT of one ``customer_id`` column).
    Answers how many customers entered or exited."""
    where, params = compiled.sql_where(tctx, 1)
    entered, exited = await pg.diff_segment_tally(
        conn,
        workspace_id,
        segment_id,
        segment_name,
        where,
        params,
        candidates_sql=candidates_sql,
        cause=tracing.with_trace(cause),
        at=at,
    )
    count_transitions(cause, entered=entered, exited=exited)
    return entered + exited


async def id_table(conn: asyncpg.Connection, name: str, ids: Iterable[str]) -> str:
    """Copy customer ids into a temporary table (dropped at commit) and analyse it, so the
    planner sizes its joins right (an ``unnest`` of an array parameter is guessed at 10 rows,
    which makes a 100k-customer change quadratic). Answers a SELECT of its ``customer_id``."""
    await conn.execute(f"CREATE TEMP TABLE {name} (customer_id text PRIMARY KEY) ON COMMIT DROP")
    await conn.copy_records_to_table(name, records=((c,) for c in dict.fromkeys(ids)))
    await conn.execute(f"ANALYZE {name}")
    return f"SELECT customer_id FROM {name}"


async def set_membership(
    conn: asyncpg.Connection,
    workspace_id: str,
    segment_id: UUID,
    segment_name: str,
    candidates_sql: str,
    *,
    member: bool,
    cause: dict[str, str],
    at: datetime,
    partitions: Sequence[int],
) -> list[Transition]:
    """Make every existing customer of ``partitions`` that ``candidates_sql`` selects (one
    ``customer_id`` column, no parameters) a member (``member``) or not: a static segment's add
    or remove."""
    written = await pg.diff_segment(
        conn,
        workspace_id,
        segment_id,
        segment_name,
        "true" if member else "false",
        [],
        partitions=partitions,
        candidates_sql=candidates_sql,
        cause=tracing.with_trace(cause),
        at=at,
    )
    entered = sum(t.kind == "entered" for t in written)
    count_transitions(cause, entered=entered, exited=len(written) - entered)
    return written


async def dynamic_segments(
    conn: asyncpg.Connection, workspace_id: str, catalog: Catalog
) -> list[DynamicSegment]:
    """The workspace's dynamic segments, oldest first, compiled against ``catalog``."""
    rows = await conn.fetch(
        "SELECT id, name, rules FROM segments WHERE workspace_id = $1 AND type = 'dynamic'"
        " ORDER BY created_at, id",
        workspace_id,
    )
    return [DynamicSegment(r["id"], r["name"], compile_json(r["rules"], catalog)) for r in rows]
