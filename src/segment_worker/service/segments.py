"""Segments: create, read, list, edit, delete, duplicate, and the five defaults (CONTRACT §5, §10).

Every change that moves membership runs in one unit over all input partitions and returns only
when the new membership is committed, in Redis and in the outbox: ``member_count`` is final.
Writers of one workspace's segments serialise on its ``workspaces`` row (taken after the
partition locks, like every unit), which keeps names unique and the 500-segment limit exact.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from ..errors import Conflict, NotFound, ValidationFailed
from ..partitioning import partition_for
from ..rules.validate import rule_to_json
from ..stores import postgres as pg
from ..text import fold
from .context import ServiceContext
from .pagination import Page, check_limit, cursor_error, decode_cursor, like_pattern, page_of
from .recompute import MANUAL, recompute, set_membership
from .ruleset import compile_json, now_context
from .units import ServiceUnit, count_transitions, unit
from .unset import UNSET, Unset
from .workspaces import (
    all_partitions,
    bump_catalog,
    check_workspace_id,
    input_partition_count,
    load_catalog,
    lock_workspace,
)

SEGMENT_LIMIT = 500
SegmentType = Literal["static", "dynamic"]

# CONTRACT §10 "Default segments".
DEFAULT_SEGMENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Created in the last 7 days", {"field": "created_at", "op": "in_last_days", "value": 7}),
    ("Inactive for more than 30 days", {"field": "last_incoming_at", "op": "older_than_days", "value": 30}),
    ("Has tags", {"field": "tags", "op": "has_any_tag"}),
    ("Country known", {"field": "country", "op": "is_not_empty"}),
    ("Language known", {"field": "language", "op": "is_not_empty"}),
)


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment as answered by the API."""

    id: UUID
    workspace_id: str
    name: str
    description: str | None
    type: SegmentType
    rules: Any
    created_at: datetime
    updated_at: datetime
    member_count: int = 0


@dataclass(frozen=True, slots=True)
class DefaultsResult:
    """The default segments created, and the names skipped because a segment had them already."""

    created: tuple[Segment, ...]
    skipped: tuple[str, ...]


_COLUMNS = "id, workspace_id, name, description, type, rules, created_at, updated_at"
_COUNT = "COALESCE((SELECT sum(count) FROM segment_counts k WHERE k.segment_id = s.id), 0)::bigint"


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        description=row["description"],
        type=row["type"],
        rules=row["rules"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        member_count=row["member_count"] if "member_count" in row else 0,
    )


def parse_segment_id(segment_id: str | UUID) -> UUID:
    """``segment_id`` as a UUID; NotFound when it cannot be one (no such segment can exist)."""
    if isinstance(segment_id, UUID):
        return segment_id
    try:
        return UUID(segment_id)
    except ValueError:
        raise NotFound(f"segment {segment_id!r} not found", context={"segment_id": segment_id}) from None


def check_name(name: str) -> str:
    """A segment name: surrounding whitespace dropped, 1–100 characters."""
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= 100:
        raise ValidationFailed(
            "a segment name must be 1–100 characters",
            details=[{"path": "$.name", "message": f"is {len(cleaned)} characters long; 1–100 are allowed"}],
        )
    return cleaned


def check_description(description: str | None) -> str | None:
    """At most 500 characters; empty means none."""
    if description is None or not description.strip():
        return None
    if len(description) > 500:
        raise ValidationFailed(
            "a segment description is at most 500 characters",
            details=[{"path": "$.description", "message": f"is {len(description)} characters long"}],
        )
    return description


async def fetch_segment(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, segment_id: UUID, *, lock: bool = False
) -> Segment:
    """One segment of the workspace with its member count; NotFound otherwise."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, {_COUNT} AS member_count FROM segments s WHERE id = $1 AND workspace_id = $2"
        + (" FOR UPDATE" if lock else ""),
        segment_id,
        workspace_id,
    )
    if row is None:
        raise NotFound(f"segment {segment_id} not found", context={"segment_id": str(segment_id)})
    return _segment(row)


async def _member_count(conn: asyncpg.Connection, segment_id: UUID) -> int:
    return (await pg.segment_member_counts(conn, [segment_id]))[segment_id]


async def _check_room(conn: asyncpg.Connection, workspace_id: str, adding: int) -> None:
    n = await conn.fetchval("SELECT count(*) FROM segments WHERE workspace_id = $1", workspace_id)
    if n + adding > SEGMENT_LIMIT:
        raise Conflict(
            f"a workspace can have at most {SEGMENT_LIMIT} segments; this one has {n}",
            context={"limit": SEGMENT_LIMIT, "segments": n},
        )


async def _check_name_free(
    conn: asyncpg.Connection, workspace_id: str, name: str, except_id: UUID | None = None
) -> None:
    other = await conn.fetchval(
        "SELECT name FROM segments WHERE workspace_id = $1 AND name_folded = $2 AND id IS DISTINCT FROM $3",
        workspace_id,
        fold(name),
        except_id,
    )
    if other is not None:
        raise Conflict(
            f"a segment named {other!r} already exists in this workspace (names ignore case)",
            context={"name": name},
        )


async def _insert(
    u: ServiceUnit, workspace_id: str, name: str, description: str | None, type_: SegmentType, rules: Any
) -> Segment:
    await _check_name_free(u.conn, workspace_id, name)
    seg = Segment(uuid.uuid4(), workspace_id, name, description, type_, rules, u.at, u.at)
    await u.conn.execute(
        "INSERT INTO segments (id, workspace_id, name, name_folded, description, type, rules, created_at,"
        " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        seg.id,
        workspace_id,
        name,
        fold(name),
        description,
        type_,
        rules,
        u.at,
    )
    return seg


async def _populate(u: ServiceUnit, seg: Segment, source: Segment | None = None) -> Segment:
    """Compute a new or edited segment's membership in ``u``: rules for a dynamic one, the
    source's members for a static duplicate."""
    if seg.type == "dynamic":
        catalog = await load_catalog(u.conn, seg.workspace_id)
        compiled = compile_json(seg.rules, catalog)
        await recompute(u.conn, seg.workspace_id, seg.id, seg.name, compiled, now_context(catalog), u.at)
    elif source is not None:
        await set_membership(
            u.conn,
            seg.workspace_id,
            seg.id,
            seg.name,
            f"SELECT customer_id FROM memberships WHERE segment_id = '{source.id}' AND is_member",
            member=True,
            cause=MANUAL,
            at=u.at,
            partitions=u.partitions,
        )
    return replace(seg, member_count=await _member_count(u.conn, seg.id))


def _check_shape(type_: str, rules: Any) -> None:
    if type_ not in ("static", "dynamic"):
        raise ValidationFailed(
            "type must be 'static' or 'dynamic'",
            details=[{"path": "$.type", "message": "must be 'static' or 'dynamic'"}],
        )
    if type_ == "static" and rules is not None:
        raise ValidationFailed(
            "a static segment has no rules (its members are added, removed or imported)",
            details=[{"path": "$.rules", "message": "only dynamic segments have rules"}],
        )
    if type_ == "dynamic" and rules is None:
        raise ValidationFailed(
            'a dynamic segment needs rules ({"all": []} matches every customer)',
            details=[{"path": "$.rules", "message": "is required for a dynamic segment"}],
        )


async def _unit_partitions(ctx: ServiceContext) -> list[int]:
    async with ctx.pool.acquire() as conn:
        return await all_partitions(conn, ctx.settings)


async def create_segment(
    ctx: ServiceContext,
    workspace_id: str,
    *,
    name: str,
    type: SegmentType,
    description: str | None = None,
    rules: Any = None,
) -> Segment:
    """Create a segment; a dynamic one is populated (enter events, cause ``rules_changed``)."""
    check_workspace_id(workspace_id)
    name, description = check_name(name), check_description(description)
    _check_shape(type, rules)
    if type == "dynamic":  # fail fast, before taking every partition lock; store the canonical form
        rules = rule_to_json(compile_json(rules, await load_catalog(ctx.pool, workspace_id)).rule)
    async with unit(ctx, await _unit_partitions(ctx) if type == "dynamic" else []) as u:
        await lock_workspace(u.conn, workspace_id)
        await _check_room(u.conn, workspace_id, 1)
        seg = await _insert(u, workspace_id, name, description, type, rules)
        seg = await _populate(u, seg)
        await bump_catalog(u.conn, workspace_id)
    return seg


async def get_segment(ctx: ServiceContext, workspace_id: str, segment_id: str | UUID) -> Segment:
    """One segment with its member count."""
    return await fetch_segment(ctx.pool, workspace_id, parse_segment_id(segment_id))


async def list_segments(
    ctx: ServiceContext,
    workspace_id: str,
    *,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Segment]:
    """Segments newest first; ``q`` keeps those whose name contains it (ignoring case)."""
    check_limit(limit)
    after = decode_cursor(cursor, 2)
    try:
        after_at = datetime.fromisoformat(str(after[0])) if after else None
        after_id = UUID(str(after[1])) if after else None
    except ValueError:
        raise cursor_error() from None
    pattern = like_pattern(fold(q)) if q else None
    where = "workspace_id = $1 AND ($2::text IS NULL OR name_folded LIKE $2)"
    async with ctx.pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM segments WHERE {where}", workspace_id, pattern)
        rows = await conn.fetch(
            f"SELECT {_COLUMNS}, {_COUNT} AS member_count FROM segments s WHERE {where}"
            " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
            " ORDER BY created_at DESC, id DESC LIMIT $5",
            workspace_id,
            pattern,
            after_at,
            after_id,
            limit + 1,
        )
    segments = [_segment(r) for r in rows]
    return page_of(segments, limit, total, lambda s: (s.created_at.isoformat(), str(s.id)))


async def update_segment(
    ctx: ServiceContext,
    workspace_id: str,
    segment_id: str | UUID,
    *,
    name: str | Unset = UNSET,
    description: str | Unset | None = UNSET,
    rules: Any = UNSET,
    type: str | Unset = UNSET,
) -> Segment:
    """Edit name, description or (dynamic) rules; new rules recompute membership at once."""
    sid = parse_segment_id(segment_id)
    current = await fetch_segment(ctx.pool, workspace_id, sid)
    if type is not UNSET and type != current.type:
        raise ValidationFailed(
            f"a segment's type cannot change (this one is {current.type}); create a new segment instead",
            details=[{"path": "$.type", "message": f"must stay {current.type!r}"}],
        )
    if rules is not UNSET:
        _check_shape(current.type, rules)
        if current.type == "static":
            rules = UNSET  # a static segment's "rules": null changes nothing
        else:
            rules = rule_to_json(compile_json(rules, await load_catalog(ctx.pool, workspace_id)).rule)
    new_name = check_name(name) if not isinstance(name, Unset) else None
    new_description = check_description(description) if not isinstance(description, Unset) else None
    recompute_needed = rules is not UNSET
    async with unit(ctx, await _unit_partitions(ctx) if recompute_needed else []) as u:
        await lock_workspace(u.conn, workspace_id)
        seg = await fetch_segment(u.conn, workspace_id, sid, lock=True)
        if new_name is not None:
            await _check_name_free(u.conn, workspace_id, new_name, except_id=sid)
        seg = replace(
            seg,
            name=new_name if new_name is not None else seg.name,
            description=new_description if not isinstance(description, Unset) else seg.description,
            rules=rules if rules is not UNSET else seg.rules,
            updated_at=u.at,
        )
        await u.conn.execute(
            "UPDATE segments SET name = $2, name_folded = $3, description = $4, rules = $5, updated_at = $6"
            " WHERE id = $1",
            sid,
            seg.name,
            fold(seg.name),
            seg.description,
            seg.rules,
            u.at,
        )
        if recompute_needed:
            seg = await _populate(u, seg)
        await bump_catalog(u.conn, workspace_id)
    return seg


async def delete_segment(ctx: ServiceContext, workspace_id: str, segment_id: str | UUID) -> None:
    """Delete a segment: its Redis set and memberships go (no exit events); one ``segment.deleted``
    event is queued; customers stay."""
    sid = parse_segment_id(segment_id)
    await fetch_segment(ctx.pool, workspace_id, sid)
    async with unit(ctx, await _unit_partitions(ctx)) as u:
        await lock_workspace(u.conn, workspace_id)
        seg = await fetch_segment(u.conn, workspace_id, sid, lock=True)
        partition = partition_for(f"{workspace_id}:{sid}", await input_partition_count(u.conn, ctx.settings))
        await pg.delete_segment_rows(u.conn, workspace_id, sid, partition=partition)
        await u.conn.execute(
            "INSERT INTO transitions (partition, workspace_id, segment_id, segment_name, customer_id, seq,"
            " kind, cause, at) VALUES ($1, $2, $3, $4, NULL, NULL, 'deleted', $5, $6)",
            partition,
            workspace_id,
            sid,
            seg.name,
            MANUAL,
            u.at,
        )
        count_transitions(MANUAL, deleted=1)
        await u.conn.execute("DELETE FROM segments WHERE id = $1", sid)
        await bump_catalog(u.conn, workspace_id)


async def duplicate_segment(
    ctx: ServiceContext,
    workspace_id: str,
    segment_id: str | UUID,
    *,
    name: str,
    description: str | Unset | None = UNSET,
) -> Segment:
    """A new segment with the source's type and rules, and (static) its members (cause ``manual``)."""
    source = await fetch_segment(ctx.pool, workspace_id, parse_segment_id(segment_id))
    name = check_name(name)
    desc = source.description if isinstance(description, Unset) else check_description(description)
    async with unit(ctx, await _unit_partitions(ctx)) as u:
        await lock_workspace(u.conn, workspace_id)
        source = await fetch_segment(u.conn, workspace_id, source.id)
        await _check_room(u.conn, workspace_id, 1)
        seg = await _insert(u, workspace_id, name, desc, source.type, source.rules)
        seg = await _populate(u, seg, source)
        await bump_catalog(u.conn, workspace_id)
    return seg


async def create_default_segments(ctx: ServiceContext, workspace_id: str) -> DefaultsResult:
    """Add the five default dynamic segments, skipping names the workspace already has."""
    check_workspace_id(workspace_id)
    async with unit(ctx, await _unit_partitions(ctx)) as u:
        await lock_workspace(u.conn, workspace_id)
        rows = await u.conn.fetch("SELECT name_folded FROM segments WHERE workspace_id = $1", workspace_id)
        taken = {r["name_folded"] for r in rows}
        todo = [(n, r) for n, r in DEFAULT_SEGMENTS if fold(n) not in taken]
        await _check_room(u.conn, workspace_id, len(todo))
        created = []
        for name, rules in todo:
            seg = await _insert(u, workspace_id, name, None, "dynamic", rules)
            created.append(await _populate(u, seg))
        if created:
            await bump_catalog(u.conn, workspace_id)
    skipped = tuple(n for n, _ in DEFAULT_SEGMENTS if fold(n) in taken)
    return DefaultsResult(tuple(created), skipped)
