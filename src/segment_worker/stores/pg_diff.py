"""The set-based segment diff behind ``pg_memberships.diff_segment`` (rule changes, static
adds/removes, imports, ticks): find the customers a rule matches, compare with the stored
memberships and write every difference — memberships, counts, transitions (outbox) and the
pending Redis ops — in one statement, so they cannot diverge.

A diff over a whole workspace (no candidate list) is dominated by the scan of ``customers`` with
the rule's jsonb extraction per row. A statement with data-modifying CTEs never runs in parallel,
so that scan is done first as a read of its own into a temporary table (``CREATE TABLE AS`` may
use a parallel plan), and the writing statement reads the table. With a candidate list (ticks,
imports, static changes: a few rows reached by index) one statement is cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from . import OpKind
from .errors import MembershipConflictError
from .keys import segment_key

# Re-created by each full diff; dropped at commit.
MATCHED_TABLE = "sw_diff_matched"

# Memory for the sorts and hashes of a full diff.
DIFF_WORK_MEM = "64MB"

# A diff row: (customer_id, partition, seq, enter).
DiffRow = tuple[str, int, int, bool]


def _filters(partitions_ph: str | None) -> tuple[str, str]:
    """Extra WHERE conditions on ``customers c`` and on the stored rows ``memberships m`` that
    would exit."""
    if partitions_ph is None:
        return "", ""
    cond = f"partition = ANY({partitions_ph}::int[])"
    return f" AND c.{cond}", f" AND m.{cond}"


def _candidates(column: str, value: str) -> str:
    """The candidates, each once, with the workspace or the segment as a column ``column`` of the
    row rather than a constant of the join: a constant is estimated by its own statistics, and a
    workspace or segment newer than them at about one row. Then a plan that re-reads one side per
    row of the other looks cheapest — the customers of a new workspace each compared with every
    candidate: each diff of a 20,000-row import 13 s, 0.23 s this way (docs/PERFORMANCE.md, "A
    candidate diff's candidates joined…"). Joined on the column, the other table is sized by its
    average instead, and the join is a primary-key probe per candidate or a hash join."""
    return f"(SELECT DISTINCT customer_id, {value} AS {column} FROM cand) k"


async def _scan_into_table(
    conn: asyncpg.Connection,
    workspace_id: str,
    where_sql: str,
    params: Sequence[Any],
    partitions: Sequence[int] | None,
) -> None:
    """The customers ``where_sql`` matches, into ``MATCHED_TABLE`` (a parallel scan when the
    planner finds it worth it)."""
    n = len(params)
    c_filter, _ = _filters(f"${n + 2}" if partitions is not None else None)
    args = [*params, workspace_id, *([list(partitions)] if partitions is not None else [])]
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{MATCHED_TABLE}")
    await conn.execute(
        f"""
        CREATE TEMP TABLE {MATCHED_TABLE} ON COMMIT DROP AS
        SELECT c.customer_id, c.partition FROM customers c
        WHERE c.workspace_id = ${n + 1}::text AND NOT c.deleted{c_filter} AND ({where_sql})
        """,
        *args,
    )
    # Without statistics the planner guesses the table's row count from its size only; the
    # joins below are sized right with them (a few ms for 100k rows).
    await conn.execute(f"ANALYZE pg_temp.{MATCHED_TABLE}")


def _changes(seg: str, m_filter: str, *, candidates: bool) -> str:
    """The pairs to change: (customer_id, partition, seq, enter, mtid = ctid of the stored row).

    One pass: the matched customers full-joined to the segment's stored rows — all of them after
    a full scan (at 1M customers ~100k rows over as many heap pages: read once, not once per
    direction), only the candidates' otherwise. A full join is planned as a hash or merge join,
    never as a nested loop. The form before for candidates (matched customers joined to their
    rows, then exiting members ``NOT EXISTS`` in the matched CTE) got a nested-loop anti-join
    re-reading that CTE per stored row whenever the candidates' values were newer than the
    statistics (a tick's fresh interactions always are: estimated at one row) — quadratic: 15,000
    candidates 5.2 s against 0.14 s now (docs/PERFORMANCE.md, "A tick's candidate diff"). Nor is
    anything probed per candidate by force (``LATERAL``): with the workspace a constant estimated
    at one row, such a probe may use an index on ``workspace_id`` alone and read the whole
    workspace each time (a 20k-row import took 92 s that way in a full test run)."""
    columns = "m.customer_id, m.partition, m.seq, m.is_member, m.ctid"
    if candidates:
        stored = (f"SELECT {columns} FROM {_candidates('seg', seg + '::uuid')}"
                  " JOIN memberships m ON m.segment_id = k.seg AND m.customer_id = k.customer_id")
    else:
        stored = f"SELECT {columns} FROM memberships m WHERE m.segment_id = {seg}::uuid"
    return f"""
        SELECT COALESCE(x.customer_id, m.customer_id) AS customer_id,
               COALESCE(x.partition, m.partition) AS partition,
               COALESCE(m.seq, 0) + 1 AS seq, x.customer_id IS NOT NULL AS enter, m.ctid AS mtid
        FROM matched x
        FULL JOIN ({stored}) m ON m.customer_id = x.customer_id
        WHERE CASE WHEN x.customer_id IS NOT NULL THEN m.is_member IS NOT TRUE
                   ELSE m.is_member{m_filter} END
        """


def _statement(n: int, where_sql: str, *, partitions: bool, candidates_sql: str | None, answer: bool) -> str:
    """The writing statement: over ``candidates_sql``'s customers, or (None) over ``MATCHED_TABLE``."""
    ws, seg, name, cz, ts, key, parts = (f"${n + i}" for i in range(1, 8))
    c_filter, m_filter = _filters(parts if partitions else None)
    if candidates_sql is None:
        cand_cte = ""
        matched = f"SELECT customer_id, partition FROM pg_temp.{MATCHED_TABLE}"
    else:
        cand_cte = f"cand(customer_id) AS MATERIALIZED ({candidates_sql}),"
        matched = (
            f"SELECT c.customer_id, c.partition FROM {_candidates('ws', ws + '::text')}"
            " JOIN customers c ON c.workspace_id = k.ws AND c.customer_id = k.customer_id"
            f" WHERE NOT c.deleted{c_filter} AND ({where_sql})"
        )
    changes = _changes(seg, m_filter, candidates=candidates_sql is not None)
    result = (
        "SELECT c.customer_id, c.partition, c.seq, c.enter, b.n FROM changes c, bad b"
        if answer
        else "SELECT count(*) FILTER (WHERE enter), count(*) FILTER (WHERE NOT enter), (SELECT n FROM bad)"
        " FROM changes"
    )
    # Stored rows are updated by ctid (read in this statement's snapshot, under the partition
    # locks every membership writer holds): no second index lookup per row, as an upsert's
    # conflict check would make. ``bad`` counts rows not found that way (never expected).
    return f"""
    WITH {cand_cte}
    matched AS MATERIALIZED ({matched}),
    -- Sorted once, narrow, so the history (transition ids) and the op rows follow (partition,
    -- customer) whatever the join: the readers below keep this order.
    changes AS MATERIALIZED (SELECT * FROM ({changes}) d
                             ORDER BY partition, customer_id),
    upd AS (
        UPDATE memberships m
        SET partition = c.partition, is_member = c.enter, seq = c.seq,
            joined_at = CASE WHEN c.enter THEN {ts}::timestamptz END
        FROM changes c
        WHERE c.mtid IS NOT NULL AND m.ctid = c.mtid
        RETURNING 1
    ),
    ins AS (
        INSERT INTO memberships (segment_id, customer_id, workspace_id, partition, is_member, seq, joined_at)
        SELECT {seg}::uuid, customer_id, {ws}::text, partition, true, seq, {ts}::timestamptz
        FROM changes WHERE mtid IS NULL
    ),
    cnt AS (
        INSERT INTO segment_counts AS s (segment_id, partition, count)
        SELECT {seg}::uuid, partition, sum(CASE WHEN enter THEN 1 ELSE -1 END) FROM changes GROUP BY partition
        ON CONFLICT (segment_id, partition) DO UPDATE SET count = s.count + EXCLUDED.count
    ),
    tr AS (
        INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq, kind,
                                 cause, at)
        SELECT partition, {ws}::text, {seg}::uuid, {name}::text, customer_id, seq,
               CASE WHEN enter THEN 'entered' ELSE 'exited' END, {cz}::text::jsonb, {ts}::timestamptz
        FROM changes
    ),
    ops AS (
        -- One row per (partition, SADD|SREM) with every member (see migration 005): a diff
        -- changes each member once, so the order among these rows does not matter.
        INSERT INTO redis_ops (partition, op, key, members)
        SELECT partition, CASE WHEN enter THEN {int(OpKind.SADD)} ELSE {int(OpKind.SREM)} END, {key}::text,
               array_agg(customer_id)
        FROM changes
        GROUP BY partition, enter
    ),
    bad AS (
        SELECT (SELECT count(*) FROM changes WHERE mtid IS NOT NULL) - (SELECT count(*) FROM upd) AS n
    )
    {result}
    """


async def diff(
    conn: asyncpg.Connection,
    workspace_id: str,
    segment_id: UUID,
    segment_name: str,
    where_sql: str,
    params: Sequence[Any],
    *,
    partitions: Sequence[int] | None,
    candidates_sql: str | None,
    cause: Mapping[str, str],
    at: datetime,
    answer: bool = True,
) -> list[DiffRow] | tuple[int, int]:
    """Run the diff (see ``pg_memberships.diff_segment`` for the arguments). Answers the rows
    written, unordered, when ``answer``; else only how many entered and how many exited."""
    if candidates_sql is None:
        # The writing statement sorts and hashes ~100k rows per 1M customers: at the default 4 MB
        # they spill to disk. Until the unit commits (the caller's transaction).
        await conn.execute(f"SET LOCAL work_mem = '{DIFF_WORK_MEM}'")
        await _scan_into_table(conn, workspace_id, where_sql, params, partitions)
        params = []  # the rule's placeholders are not in the writing statement
    sql = _statement(
        len(params), where_sql, partitions=partitions is not None, candidates_sql=candidates_sql,
        answer=answer,
    )
    args = [
        *params,
        workspace_id,
        segment_id,
        segment_name,
        orjson.dumps(dict(cause)).decode(),
        at,
        segment_key(workspace_id, segment_id),
    ]
    if partitions is not None:
        args.append(list(partitions))
    if not answer:
        row = await conn.fetchrow(sql, *args)
        assert row is not None
        _check(row[2])
        return int(row[0]), int(row[1])
    rows = await conn.fetch(sql, *args)
    if rows:
        _check(rows[0][4])
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _check(bad: int) -> None:
    if bad:
        raise MembershipConflictError(
            f"{bad} stored memberships changed during the diff (a writer without the partition lock?);"
            " nothing was written"
        )
