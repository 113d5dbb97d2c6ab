"""Static segment members: add, remove, CSV import; and reading members and candidates.

Adds and removes run in one unit over the owning partitions of the customers touched; an
import also creates the customers its unknown phones name (``customer_id`` = E.164 phone, in
their owning partition) and puts them in the dynamic segments they match (cause ``import``).
A dynamic segment's members cannot be edited: Conflict, "membership is controlled by its rules".
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ..csvimport import InvalidRow, parse_csv
from ..errors import Conflict, ValidationFailed
from ..partitioning import customer_partition
from ..text import fold
from ..timeutil import to_micros
from .context import ServiceContext
from .pagination import Page, check_limit, cursor_error, decode_cursor, like_pattern, page_of
from .recompute import IMPORT, MANUAL, dynamic_segments, id_table, recompute, set_membership
from .ruleset import now_context
from .segments import Segment, fetch_segment, parse_segment_id
from .units import ServiceUnit, unit
from .workspaces import get_workspace, input_partition_count, load_catalog

MAX_IDS_PER_CALL = 10_000


@dataclass(frozen=True, slots=True)
class AddResult:
    """``POST /members``: how many became members, how many were already, ids that do not exist."""

    added: int
    already_members: int
    not_found: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveResult:
    """``DELETE /members``: how many left, how many were not members, ids that do not exist."""

    removed: int
    not_members: int
    not_found: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """``POST /import``: counts of customers added, already members, created; the invalid rows."""

    added: int
    already_members: int
    created: int
    invalid: tuple[InvalidRow, ...]


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """A customer as listed among members, candidates and search results."""

    customer_id: str
    name: str | None
    phone: str | None
    email: str | None
    marketing_opt_out: bool
    tags: tuple[str, ...]
    attributes: dict[str, Any]
    joined_at: datetime | None = None


SUMMARY_COLUMNS = (
    "c.customer_id, c.name, c.phone, c.email, c.marketing_opt_out, c.tags, c.tag_labels, c.attrs"
)


def summary(row: asyncpg.Record) -> CustomerSummary:
    """A ``CustomerSummary`` from a row of ``SUMMARY_COLUMNS`` (and ``joined_at`` when selected)."""
    labels = row["tag_labels"] or {}
    return CustomerSummary(
        customer_id=row["customer_id"],
        name=row["name"],
        phone=row["phone"],
        email=row["email"],
        marketing_opt_out=row["marketing_opt_out"],
        tags=tuple(labels.get(t, t) for t in sorted(row["tags"])),
        attributes=dict(row["attrs"] or {}),
        joined_at=row["joined_at"] if "joined_at" in row else None,
    )


def _static(seg: Segment) -> Segment:
    if seg.type != "static":
        raise Conflict(
            f"segment {seg.name!r} is dynamic: its membership is controlled by its rules",
            context={"segment_id": str(seg.id)},
        )
    return seg


def _ids(customer_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        raise ValidationFailed(
            "customer_ids must not be empty", details=[{"path": "$.customer_ids", "message": "is empty"}]
        )
    if len(ids) > MAX_IDS_PER_CALL:
        raise ValidationFailed(
            f"at most {MAX_IDS_PER_CALL} customer ids per call",
            details=[{"path": "$.customer_ids", "message": f"has {len(ids)} distinct ids"}],
        )
    return ids


async def _existing(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, ids: Sequence[str]
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT customer_id, partition FROM customers"
        " WHERE workspace_id = $1 AND customer_id = ANY($2::text[]) AND NOT deleted",
        workspace_id,
        list(ids),
    )
    return {r["customer_id"]: r["partition"] for r in rows}


async def _locked_static(u: ServiceUnit, workspace_id: str, segment_id: UUID) -> Segment:
    # Row lock: a concurrent delete of the segment waits for us (or we find it gone: NotFound).
    return _static(await fetch_segment(u.conn, workspace_id, segment_id, lock=True))


async def add_members(
    ctx: ServiceContext, workspace_id: str, segment_id: str | UUID, customer_ids: Sequence[str]
) -> AddResult:
    """Add existing customers to a static segment (cause ``manual``)."""
    sid = parse_segment_id(segment_id)
    _static(await fetch_segment(ctx.pool, workspace_id, sid))
    ids = _ids(customer_ids)
    parts = set((await _existing(ctx.pool, workspace_id, ids)).values())
    async with unit(ctx, parts) as u:
        seg = await _locked_static(u, workspace_id, sid)
        # Only customers of the partitions held: one created meanwhile elsewhere counts as not found.
        found = {c for c, p in (await _existing(u.conn, workspace_id, ids)).items() if p in parts}
        changed = await set_membership(
            u.conn,
            workspace_id,
            sid,
            seg.name,
            await id_table(u.conn, "sw_add", found),
            member=True,
            cause=MANUAL,
            at=u.at,
            partitions=sorted(parts),
        )
    return AddResult(len(changed), len(found) - len(changed), tuple(c for c in ids if c not in found))


async def remove_members(
    ctx: ServiceContext, workspace_id: str, segment_id: str | UUID, customer_ids: Sequence[str]
) -> RemoveResult:
    """Remove customers from a static segment (cause ``manual``)."""
    sid = parse_segment_id(segment_id)
    _static(await fetch_segment(ctx.pool, workspace_id, sid))
    ids = _ids(customer_ids)
    rows = await ctx.pool.fetch(
        "SELECT DISTINCT partition FROM memberships WHERE segment_id = $1 AND customer_id = ANY($2::text[])"
        " AND is_member",
        sid,
        ids,
    )
    parts = {r["partition"] for r in rows}
    async with unit(ctx, parts) as u:
        seg = await _locked_static(u, workspace_id, sid)
        changed = await set_membership(
            u.conn,
            workspace_id,
            sid,
            seg.name,
            await id_table(u.conn, "sw_remove", ids),
            member=False,
            cause=MANUAL,
            at=u.at,
            partitions=sorted(parts),
        )
        existing = set(await _existing(u.conn, workspace_id, ids))
    left = {t.customer_id for t in changed}
    known = existing | left
    return RemoveResult(len(left), len(known) - len(left), tuple(c for c in ids if c not in known))


# Resolve the file's phones (temporary table sw_import) to customers, creating the unknown ones,
# into sw_import_members. A phone matching existing customers names them; another phone becomes
# a customer whose id is that phone — unless that id is taken: a tombstone older than this import
# comes back to life, a live customer is left as it is (never overwrite a name) and joins.
_IMPORT_CUSTOMERS = """
WITH matched AS MATERIALIZED (
    SELECT c.customer_id, s.phone FROM sw_import s
    JOIN customers c ON c.workspace_id = $1 AND c.phone_f = s.phone AND NOT c.deleted
    WHERE c.partition = ANY($2::int[])
),
created AS (
    INSERT INTO customers AS c (workspace_id, customer_id, partition, phone, phone_f, name, name_f,
                                created_at, first_seen_us, versions, updated_at)
    SELECT $1, s.phone, s.partition, s.phone, s.phone, s.name, s.name_f, $3, $4,
           jsonb_build_object('f:phone', $5::jsonb, 's:last', $5::jsonb)
             || CASE WHEN s.name IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('f:name', $5::jsonb) END,
           now()
    FROM sw_import s WHERE NOT EXISTS (SELECT 1 FROM matched m WHERE m.phone = s.phone)
    ON CONFLICT (workspace_id, customer_id) DO UPDATE
    SET deleted = false, phone = EXCLUDED.phone, phone_f = EXCLUDED.phone_f, name = EXCLUDED.name,
        name_f = EXCLUDED.name_f, created_at = EXCLUDED.created_at, first_seen_us = EXCLUDED.first_seen_us,
        versions = sw_versions_merge(c.versions, EXCLUDED.versions), updated_at = now()
    WHERE c.deleted AND COALESCE(c.deleted_us, 0) < EXCLUDED.first_seen_us
    RETURNING c.customer_id
)
INSERT INTO sw_import_members (customer_id, created)
SELECT customer_id, true FROM created
UNION ALL SELECT customer_id, false FROM matched
UNION ALL SELECT c.customer_id, false FROM sw_import s
    JOIN customers c ON c.workspace_id = $1 AND c.customer_id = s.phone AND NOT c.deleted
    WHERE NOT EXISTS (SELECT 1 FROM matched m WHERE m.phone = s.phone)
ON CONFLICT (customer_id) DO NOTHING
"""


async def import_csv(
    ctx: ServiceContext, workspace_id: str, segment_id: str | UUID, data: bytes
) -> ImportResult:
    """Import a CSV file into a static segment (cause ``import``); the valid rows atomically.

    Raises ``CsvFileError`` when the file as a whole is unusable (size, encoding, header).
    """
    sid = parse_segment_id(segment_id)
    _static(await fetch_segment(ctx.pool, workspace_id, sid))
    ws = await get_workspace(ctx.pool, workspace_id)
    parsed = await asyncio.to_thread(parse_csv, data, ws.default_region)  # CPU-bound: keep the loop free
    phones = [r.phone for r in parsed.rows]
    async with ctx.pool.acquire() as conn:
        n = await input_partition_count(conn, ctx.settings)
        rows = await conn.fetch(
            "SELECT DISTINCT partition FROM customers WHERE workspace_id = $1 AND phone_f = ANY($2::text[])"
            " AND NOT deleted",
            workspace_id,
            phones,
        )
    owners = [customer_partition(workspace_id, p, n) for p in phones]
    parts = {r["partition"] for r in rows} | set(owners)
    async with unit(ctx, parts) as u:
        seg = await _locked_static(u, workspace_id, sid)
        await u.conn.execute(
            "CREATE TEMP TABLE sw_import (phone text PRIMARY KEY, name text, name_f text, partition int)"
            " ON COMMIT DROP;"
            " CREATE TEMP TABLE sw_import_members (customer_id text PRIMARY KEY, created bool NOT NULL)"
            " ON COMMIT DROP"
        )
        await u.conn.copy_records_to_table(
            "sw_import",
            records=[
                (r.phone, r.name, fold(r.name) if r.name else None, p)
                for r, p in zip(parsed.rows, owners, strict=True)
            ],
        )
        await u.conn.execute("ANALYZE sw_import")
        stamp = [to_micros(u.at), f"import:{uuid.uuid4()}"]
        await u.conn.execute(_IMPORT_CUSTOMERS, workspace_id, sorted(parts), u.at, stamp[0], stamp)
        await u.conn.execute("ANALYZE sw_import_members")
        counts = await u.conn.fetchrow(
            "SELECT count(*) AS members, count(*) FILTER (WHERE created) AS created FROM sw_import_members"
        )
        assert counts is not None
        changed = await set_membership(
            u.conn,
            workspace_id,
            sid,
            seg.name,
            "SELECT customer_id FROM sw_import_members",
            member=True,
            cause=IMPORT,
            at=u.at,
            partitions=sorted(parts),
        )
        if counts["created"]:
            await _join_dynamic_segments(
                u, workspace_id, "SELECT customer_id FROM sw_import_members WHERE created"
            )
    return ImportResult(len(changed), counts["members"] - len(changed), counts["created"], parsed.invalid)


async def _join_dynamic_segments(u: ServiceUnit, workspace_id: str, candidates_sql: str) -> None:
    """New customers enter the dynamic segments they match (cause ``import``)."""
    catalog = await load_catalog(u.conn, workspace_id)
    tctx = now_context(catalog)
    for seg in await dynamic_segments(u.conn, workspace_id, catalog):
        await recompute(
            u.conn,
            workspace_id,
            seg.id,
            seg.name,
            seg.compiled,
            tctx,
            u.at,
            cause=IMPORT,
            candidates_sql=candidates_sql,
        )


async def list_members(
    ctx: ServiceContext,
    workspace_id: str,
    segment_id: str | UUID,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[CustomerSummary]:
    """A segment's members, most recently joined first, each with opt-out, attributes and tags."""
    check_limit(limit)
    sid = parse_segment_id(segment_id)
    seg = await fetch_segment(ctx.pool, workspace_id, sid)
    after = decode_cursor(cursor, 2)
    try:
        after_at = datetime.fromisoformat(str(after[0])) if after else None
    except ValueError:
        raise cursor_error() from None
    rows = await ctx.pool.fetch(
        f"SELECT {SUMMARY_COLUMNS}, m.joined_at FROM memberships m"
        " JOIN customers c ON c.workspace_id = m.workspace_id AND c.customer_id = m.customer_id"
        " WHERE m.segment_id = $1 AND m.is_member"
        " AND ($2::timestamptz IS NULL OR (m.joined_at, m.customer_id) < ($2, $3::text))"
        " ORDER BY m.joined_at DESC, m.customer_id DESC LIMIT $4",
        sid,
        after_at,
        str(after[1]) if after else None,
        limit + 1,
    )
    items = [summary(r) for r in rows]
    return page_of(
        items,
        limit,
        seg.member_count,
        lambda c: (c.joined_at.isoformat() if c.joined_at else None, c.customer_id),
    )


async def candidates(
    ctx: ServiceContext,
    workspace_id: str,
    segment_id: str | UUID,
    *,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[CustomerSummary]:
    """Customers not yet in a static segment, whose name or phone contains ``q``, by id."""
    check_limit(limit)
    sid = parse_segment_id(segment_id)
    _static(await fetch_segment(ctx.pool, workspace_id, sid))
    after = decode_cursor(cursor, 1)
    text = like_pattern(fold(q.strip())) if q and q.strip() else None
    digits = "".join(ch for ch in q if ch.isdigit()) if q else ""
    where = (
        "c.workspace_id = $1 AND NOT c.deleted AND NOT EXISTS (SELECT 1 FROM memberships m"
        " WHERE m.segment_id = $2 AND m.customer_id = c.customer_id AND m.is_member)"
        " AND ($3::text IS NULL OR c.name_f LIKE $3 OR c.phone_f LIKE $3 OR c.phone_f LIKE $4)"
    )
    args = [workspace_id, sid, text, like_pattern(digits) if digits else None]
    async with ctx.pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM customers c WHERE {where}", *args)
        rows = await conn.fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM customers c WHERE {where}"
            " AND ($5::text IS NULL OR c.customer_id > $5) ORDER BY c.customer_id LIMIT $6",
            *args,
            str(after[0]) if after else None,
            limit + 1,
        )
    return page_of([summary(r) for r in rows], limit, total, lambda c: (c.customer_id,))
