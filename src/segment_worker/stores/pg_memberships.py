"""Membership writes: memberships, per-partition counts and transitions (history, outbox and the
Redis ops that mirror them) — always together, in one statement, so they cannot diverge; the
``redis_ops`` rows of what has no transition of its own (opt-outs, a segment's DEL, a diff's rows).

Call these inside a ``stores.unit.partition_unit`` holding the locks of every partition written:
the unit commits, then applies the pending Redis ops (``stores.pg_redisops``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from ..state import Transition
from . import OpKind, OptOutChange, PairPlan, RedisOp, pg_diff, plan_transitions
from .errors import MembershipConflictError
from .keys import optout_key, segment_key

# One primary-key probe per pair that has a stored row, none for a new pair, and no upsert:
# - The continuity check probes the primary key for pairs that continue a stored row (LIMIT 1
#   keeps the subquery from being pulled up into a join, which the planner's custom plans — the
#   first five executions on a connection, where it knows the arrays' length — ran as a hash join
#   over a sequential scan of all memberships: 163 of a batch's 186 ms at 400k memberships,
#   auto_explain, docs/PERFORMANCE.md). The probe keeps the row's ctid, and the row is updated by
#   it: read in this statement's snapshot under the partition locks every membership writer holds,
#   it still names the row.
# - A pair with no stored row (seq 0, ~60% of a churn batch's pairs) is inserted without a probe:
#   if a row exists after all (a stale membership cache), the primary key refuses it and the whole
#   statement with it (mapped to MembershipConflictError below).
# The upsert this replaces probed every pair twice (the check, then ON CONFLICT's own) and locked
# each updated row first: ~10% less PostgreSQL CPU per pair in a micro-benchmark of the statement,
# 5-7% less per churn event in the bench's A/B runs (docs/PERFORMANCE.md).
_WRITE_TRANSITIONS_SQL = """
WITH cur AS MATERIALIZED (
    SELECT i.*, m.mtid, COALESCE(m.seq, 0) <> i.prev OR COALESCE(m.is_member, false) <> i.was_member AS bad
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bool[], $5::text[], $6::int[], $7::bool[], $8::int[],
                $9::timestamptz[]) AS i(seg, cid, prev, was_member, ws, part, member, seq, joined)
    LEFT JOIN LATERAL (
        SELECT m.ctid AS mtid, m.seq, m.is_member FROM memberships m
        WHERE (i.prev > 0 OR i.was_member) AND m.segment_id = i.seg AND m.customer_id = i.cid
        LIMIT 1
    ) m ON true
),
chk AS (SELECT count(*) FILTER (WHERE bad) AS bad FROM cur),
ok AS (SELECT bad = 0 AS ok FROM chk),
upd AS (
    UPDATE memberships m
    SET workspace_id = c.ws, partition = c.part, is_member = c.member, seq = c.seq, joined_at = c.joined
    FROM cur c
    WHERE c.mtid IS NOT NULL AND m.ctid = c.mtid AND (SELECT ok FROM ok)
),
ins AS (
    INSERT INTO memberships (segment_id, customer_id, workspace_id, partition, is_member, seq, joined_at)
    SELECT seg, cid, ws, part, member, seq, joined FROM cur
    WHERE mtid IS NULL AND (SELECT ok FROM ok)
),
cnt AS (
    INSERT INTO segment_counts AS s (segment_id, partition, count)
    SELECT * FROM unnest($10::uuid[], $11::int[], $12::bigint[])
    WHERE (SELECT ok FROM ok)
    ON CONFLICT (segment_id, partition) DO UPDATE SET count = s.count + EXCLUDED.count
),
tr AS (
    INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq, kind,
                             cause, at)
    SELECT p, w, s, n, c, q, k, z::jsonb, a
    FROM unnest($13::int[], $14::text[], $15::uuid[], $16::text[], $17::text[], $18::int[], $19::text[],
                $20::text[], $21::timestamptz[]) WITH ORDINALITY AS t(p, w, s, n, c, q, k, z, a, ord)
    WHERE (SELECT ok FROM ok)
    ORDER BY ord
    RETURNING id
)
SELECT bad, (SELECT array_agg(id ORDER BY id) FROM tr) FROM chk
"""

_INSERT_OPS_SQL = """
INSERT INTO redis_ops (partition, op, key, member)
SELECT p, o, k, m FROM unnest($1::int[], $2::smallint[], $3::text[], $4::text[])
    WITH ORDINALITY AS r(p, o, k, m, ord)
ORDER BY ord
"""


# Connections of open units (``id``): on them transitions are written through
# ``Unit.write_transitions``, which applies their Redis ops; written past it, the unit would move
# the partitions' Redis cursors past ops it never applied.
UNIT_CONNECTIONS: set[int] = set()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def write_transitions(
    conn: asyncpg.Connection, transitions: Sequence[Transition], *, unit: bool = False
) -> list[RedisOp]:
    """Store ``transitions`` (in the given order): update or insert memberships (``joined_at`` = transition
    time on enter, NULL after exit), add count deltas per (segment, partition) and append
    ``transitions`` rows — outbox rows until their partition's outbox cursor passes them, pending
    Redis ops until its Redis cursor does (``pg_redisops``). Answers their SADD/SREM ops on the
    segment keys, with the rows' ids; inside a unit call ``Unit.write_transitions``, which applies
    them from memory after commit (written otherwise, they stay pending until replayed).

    Each pair's first transition must continue the stored row (seq + 1, opposite kind), else
    ``MembershipConflictError`` is raised and nothing is written; the statement may have failed
    in PostgreSQL (a pair written as new that has a row), so roll back the enclosing transaction
    (a unit does).
    """
    if not unit and id(conn) in UNIT_CONNECTIONS:
        raise TypeError("inside a unit of work, write transitions with Unit.write_transitions")
    if not transitions:
        return []
    plan = plan_transitions(transitions)
    pairs = plan.pairs
    deltas = list(plan.count_deltas.items())
    ts = transitions
    try:
        bad, ids = await _write(conn, pairs, deltas, ts)
    except asyncpg.UniqueViolationError as e:
        if e.constraint_name != "memberships_pkey":
            raise
        raise MembershipConflictError(
            "a (segment, customer) pair written as new has a stored membership (stale membership"
            " cache?); nothing was written"
        ) from e
    if bad:
        raise MembershipConflictError(
            f"{bad} of {len(pairs)} (segment, customer) pairs do not continue their stored membership"
            " (stale membership cache?); nothing was written"
        )
    # The ids follow the rows' order: the INSERT draws them from the sequence in ORDER BY ord.
    keys: dict[tuple[str, UUID], str] = {}
    return [
        RedisOp(
            t.partition,
            OpKind.SADD if t.kind == "entered" else OpKind.SREM,
            keys.get((t.workspace_id, t.segment_id))
            or keys.setdefault((t.workspace_id, t.segment_id), segment_key(t.workspace_id, t.segment_id)),
            t.customer_id,
            id_,
        )
        for t, id_ in zip(ts, ids or (), strict=True)
    ]


async def _write(
    conn: asyncpg.Connection, pairs: Sequence[PairPlan], deltas: Sequence[tuple[tuple[UUID, int], int]],
    ts: Sequence[Transition],
) -> tuple[int, list[int] | None]:
    """Run ``_WRITE_TRANSITIONS_SQL``: (pairs that do not continue their row, the new rows' ids
    or None when nothing was written)."""
    bad, ids = await conn.fetchrow(
        _WRITE_TRANSITIONS_SQL,
        [p.segment_id for p in pairs],
        [p.customer_id for p in pairs],
        [p.prev_seq for p in pairs],
        [p.was_member for p in pairs],
        [p.workspace_id for p in pairs],
        [p.partition for p in pairs],
        [p.last.kind == "entered" for p in pairs],
        [p.last.seq for p in pairs],
        [p.last.at if p.last.kind == "entered" else None for p in pairs],
        [k[0] for k, _ in deltas],
        [k[1] for k, _ in deltas],
        [d for _, d in deltas],
        [t.partition for t in ts],
        [t.workspace_id for t in ts],
        [t.segment_id for t in ts],
        [t.segment_name for t in ts],
        [t.customer_id for t in ts],
        [t.seq for t in ts],
        [t.kind for t in ts],
        [_dumps(t.cause) for t in ts],
        [t.at for t in ts],
    )
    return bad, ids


async def insert_redis_ops(conn: asyncpg.Connection, ops: Sequence[RedisOp]) -> None:
    """Queue Redis writes (applied after commit by the unit of work), in the given order."""
    if not ops:
        return
    await conn.execute(
        _INSERT_OPS_SQL,
        [o.partition for o in ops],
        [int(o.op) for o in ops],
        [o.key for o in ops],
        [o.member for o in ops],
    )


def optout_ops(changes: Sequence[OptOutChange]) -> list[RedisOp]:
    """The SADD/SREM ops on ``sw:{ws}:optout`` of ``changes`` (last change per customer wins)."""
    last = {(c.workspace_id, c.customer_id): c for c in changes}
    return [
        RedisOp(
            c.partition,
            OpKind.SADD if c.opted_out else OpKind.SREM,
            optout_key(c.workspace_id),
            c.customer_id,
        )
        for c in last.values()
    ]


async def write_optout(conn: asyncpg.Connection, changes: Sequence[OptOutChange]) -> None:
    """Queue the opt-out set changes (``customers.marketing_opt_out`` is saved with the state)."""
    await insert_redis_ops(conn, optout_ops(changes))


async def diff_segment(
    conn: asyncpg.Connection,
    workspace_id: str,
    segment_id: UUID,
    segment_name: str,
    where_sql: str,
    params: Sequence[Any],
    *,
    partitions: Sequence[int] | None = None,
    candidates_sql: str | None = None,
    cause: Mapping[str, str],
    at: datetime,
) -> list[Transition]:
    """Recompute a dynamic segment in SQL and write the differences like ``write_transitions``.

    ``where_sql`` is a boolean expression over ``customers c`` using placeholders ``$1..$n`` for
    ``params``. Only non-deleted customers of the workspace are considered, and — when given —
    only those of ``partitions`` and those whose ``customer_id`` is returned by ``candidates_sql``
    (a SELECT of one column, sharing the same ``$1..$n`` parameters; the ticker's flip ranges).
    Customers matching and not members enter (seq = stored + 1, or 1); members not matching exit.
    Answers the transitions written, ordered by (partition, customer_id).
    """
    rows = await pg_diff.diff(
        conn,
        workspace_id,
        segment_id,
        segment_name,
        where_sql,
        params,
        partitions=partitions,
        candidates_sql=candidates_sql,
        cause=cause,
        at=at,
    )
    assert isinstance(rows, list)
    # Each pair changes once per diff, so the order of the rows written does not matter; the
    # answer is sorted here rather than by a server-side sort that spills to disk on big diffs.
    rows.sort(key=lambda r: (r[1], r[0]))
    cause_d = dict(cause)
    return [
        Transition(
            workspace_id=workspace_id,
            segment_id=segment_id,
            segment_name=segment_name,
            customer_id=customer_id,
            partition=partition,
            seq=seq,
            kind="entered" if enter else "exited",
            cause=cause_d,
            at=at,
        )
        for customer_id, partition, seq, enter in rows
    ]



async def diff_segment_tally(
    conn: asyncpg.Connection,
    workspace_id: str,
    segment_id: UUID,
    segment_name: str,
    where_sql: str,
    params: Sequence[Any],
    *,
    partitions: Sequence[int] | None = None,
    candidates_sql: str | None = None,
    cause: Mapping[str, str],
    at: datetime,
) -> tuple[int, int]:
    """``diff_segment`` answering only how many customers entered and how many exited: a rule
    change over a large workspace writes ~100k transitions, which its caller need not read back."""
    counts = await pg_diff.diff(
        conn,
        workspace_id,
        segment_id,
        segment_name,
        where_sql,
        params,
        partitions=partitions,
        candidates_sql=candidates_sql,
        cause=cause,
        at=at,
        answer=False,
    )
    assert isinstance(counts, tuple)
    return counts


async def delete_segment_rows(
    conn: asyncpg.Connection, workspace_id: str, segment_id: UUID, *, partition: int
) -> int:
    """Remove a segment's memberships and counts and queue a DEL of its Redis set (under
    ``partition``, which the unit must hold; a deletion should hold every partition so no writer
    adds members meanwhile). ``transitions`` stay as history; the caller adds the
    ``segment.deleted`` outbox row. Answers how many customers were members."""
    n: int = await conn.fetchval(
        """
        WITH m AS (DELETE FROM memberships WHERE segment_id = $1 RETURNING is_member),
        c AS (DELETE FROM segment_counts WHERE segment_id = $1),
        o AS (INSERT INTO redis_ops (partition, op, key) VALUES ($2, $3, $4))
        SELECT count(*) FILTER (WHERE is_member) FROM m
        """,
        segment_id,
        partition,
        int(OpKind.DEL),
        segment_key(workspace_id, segment_id),
    )
    return n


async def segment_member_counts(conn: asyncpg.Connection, segment_ids: Sequence[UUID]) -> dict[UUID, int]:
    """Current member count of each segment (0 for one without members)."""
    rows = await conn.fetch(
        "SELECT segment_id, sum(count)::bigint AS n FROM segment_counts WHERE segment_id = ANY($1::uuid[])"
        " GROUP BY segment_id",
        list(segment_ids),
    )
    out = dict.fromkeys(segment_ids, 0)
    out.update({r["segment_id"]: r["n"] for r in rows})
    return out
