"""Customers through the API: state with memberships, transition history, rule search, segment
explanations and edit previews, and edits published as input events (CONTRACT §8, §10)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from ..apply import declared_value_problem, exists
from ..errors import Conflict, NotFound, ValidationFailed
from ..events import EventError, parse_event, transition_id
from ..rules.explain import explain as explain_rule
from ..state import CustomerState
from ..stores import postgres as pg
from ..text import fold
from ..timeutil import format_ms
from .context import ServiceContext
from .members import SUMMARY_COLUMNS, CustomerSummary, summary
from .pagination import Page, check_limit, decode_cursor, page_of
from .ruleset import compile_json, now_context
from .segments import SegmentType, fetch_segment, parse_segment_id
from .workspaces import check_workspace_id, load_catalog

SAMPLE_SIZE = 10


@dataclass(frozen=True, slots=True)
class SegmentMembership:
    """A segment the customer is in."""

    segment_id: UUID
    segment_name: str
    type: SegmentType
    joined_at: datetime | None


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer's current state and memberships."""

    state: CustomerState
    memberships: tuple[SegmentMembership, ...]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One enter/exit of the customer, as the CloudEvent carried it."""

    id: str
    type: Literal["segment.entered", "segment.exited"]
    segment_id: UUID
    segment_name: str
    seq: int
    cause: dict[str, Any]
    time: str


@dataclass(frozen=True, slots=True)
class EditPreview:
    """What saving proposed rules would do to a segment now."""

    would_enter: int
    would_exit: int
    sample_enter: tuple[CustomerSummary, ...]
    sample_exit: tuple[CustomerSummary, ...]


async def load_state(ctx: ServiceContext, workspace_id: str, customer_id: str) -> CustomerState:
    """A live customer's state; NotFound for one never seen or deleted."""
    async with ctx.pool.acquire() as conn:
        records = await pg.load_records(conn, [(workspace_id, customer_id)])
    state = records[(workspace_id, customer_id)].state
    if state is None or not exists(state) or state.deleted:
        raise NotFound(f"customer {customer_id!r} not found", context={"customer_id": customer_id})
    return state


async def get_customer(ctx: ServiceContext, workspace_id: str, customer_id: str) -> Customer:
    """State and current memberships (most recent first)."""
    state = await load_state(ctx, workspace_id, customer_id)
    rows = await ctx.pool.fetch(
        "SELECT m.segment_id, s.name, s.type, m.joined_at FROM memberships m"
        " JOIN segments s ON s.id = m.segment_id"
        " WHERE m.workspace_id = $1 AND m.customer_id = $2 AND m.is_member"
        " ORDER BY m.joined_at DESC, s.name",
        workspace_id,
        customer_id,
    )
    return Customer(
        state, tuple(SegmentMembership(r["segment_id"], r["name"], r["type"], r["joined_at"]) for r in rows)
    )


async def history(
    ctx: ServiceContext, workspace_id: str, customer_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[HistoryEntry]:
    """The customer's enter/exit transitions, newest first (kept after a deletion too)."""
    check_limit(limit)
    after = decode_cursor(cursor, 1)
    async with ctx.pool.acquire() as conn:
        seen = await conn.fetchval(
            "SELECT 1 FROM customers WHERE workspace_id = $1 AND customer_id = $2", workspace_id, customer_id
        )
        if seen is None:
            raise NotFound(f"customer {customer_id!r} not found", context={"customer_id": customer_id})
        where = "workspace_id = $1 AND customer_id = $2"
        total = await conn.fetchval(
            f"SELECT count(*) FROM transitions WHERE {where}", workspace_id, customer_id
        )
        rows = await conn.fetch(
            f"SELECT id, segment_id, segment_name, kind, seq, cause, at FROM transitions WHERE {where}"
            " AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            workspace_id,
            customer_id,
            after[0] if after else None,
            limit + 1,
        )
    entries = [
        (
            r["id"],
            HistoryEntry(
                id=transition_id(workspace_id, r["segment_id"], customer_id, r["seq"]),
                type="segment.entered" if r["kind"] == "entered" else "segment.exited",
                segment_id=r["segment_id"],
                segment_name=r["segment_name"],
                seq=r["seq"],
                cause=r["cause"],
                time=format_ms(r["at"]),
            ),
        )
        for r in rows
    ]
    page = page_of(entries, limit, total, lambda e: (e[0],))
    return Page(tuple(e for _, e in page.items), page.next_cursor, page.total)


async def search(
    ctx: ServiceContext, workspace_id: str, rules: Any, *, limit: int = 50, cursor: str | None = None
) -> Page[CustomerSummary]:
    """Customers matching ``rules`` now, by id: a preview before saving a segment."""
    check_limit(limit)
    check_workspace_id(workspace_id)
    after = decode_cursor(cursor, 1)
    catalog = await load_catalog(ctx.pool, workspace_id)
    compiled = compile_json(rules, catalog)
    where, params = compiled.sql_where(now_context(catalog), 1)
    n = len(params)
    base = f"FROM customers c WHERE c.workspace_id = ${n + 1} AND NOT c.deleted AND ({where})"
    async with ctx.pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) {base}", *params, workspace_id)
        rows = await conn.fetch(
            f"SELECT {SUMMARY_COLUMNS} {base} AND (${n + 2}::text IS NULL OR c.customer_id > ${n + 2})"
            f" ORDER BY c.customer_id LIMIT ${n + 3}",
            *params,
            workspace_id,
            str(after[0]) if after else None,
            limit + 1,
        )
    return page_of([summary(r) for r in rows], limit, total, lambda c: (c.customer_id,))


async def preview_edit(
    ctx: ServiceContext, workspace_id: str, segment_id: str | UUID, rules: Any
) -> EditPreview:
    """How many customers would enter and exit a dynamic segment if ``rules`` were saved now."""
    seg = await fetch_segment(ctx.pool, workspace_id, parse_segment_id(segment_id))
    if seg.type != "dynamic":
        raise ValidationFailed(
            f"segment {seg.name!r} is static: it has no rules to edit",
            details=[{"path": "$.rules", "message": "only dynamic segments have rules"}],
        )
    catalog = await load_catalog(ctx.pool, workspace_id)
    compiled = compile_json(rules, catalog)
    where, params = compiled.sql_where(now_context(catalog), 1)
    n = len(params)
    ws, sid, size = f"${n + 1}", f"${n + 2}", f"${n + 3}"
    sql = f"""
    WITH matched AS MATERIALIZED (
        SELECT c.customer_id FROM customers c WHERE c.workspace_id = {ws} AND NOT c.deleted AND ({where})
    ),
    cur AS MATERIALIZED (SELECT customer_id FROM memberships WHERE segment_id = {sid} AND is_member),
    ent AS (SELECT customer_id FROM matched EXCEPT SELECT customer_id FROM cur),
    ext AS (SELECT customer_id FROM cur EXCEPT SELECT customer_id FROM matched)
    SELECT (SELECT count(*) FROM ent) AS n_enter, (SELECT count(*) FROM ext) AS n_exit,
           ARRAY(SELECT customer_id FROM ent ORDER BY 1 LIMIT {size}) AS s_enter,
           ARRAY(SELECT customer_id FROM ext ORDER BY 1 LIMIT {size}) AS s_exit
    """
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(sql, *params, workspace_id, seg.id, SAMPLE_SIZE)
        assert row is not None
        samples = await conn.fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM customers c"
            " WHERE c.workspace_id = $1 AND c.customer_id = ANY($2::text[])",
            workspace_id,
            [*row["s_enter"], *row["s_exit"]],
        )
    by_id = {s.customer_id: s for s in map(summary, samples)}
    return EditPreview(
        row["n_enter"],
        row["n_exit"],
        tuple(by_id[c] for c in row["s_enter"] if c in by_id),
        tuple(by_id[c] for c in row["s_exit"] if c in by_id),
    )


async def explain(
    ctx: ServiceContext, workspace_id: str, segment_id: str | UUID, customer_id: str
) -> dict[str, Any]:
    """``{"matches", "rule"}``: the segment's rule tree with each node's result and each
    condition's value for this customer (why in, why out)."""
    seg = await fetch_segment(ctx.pool, workspace_id, parse_segment_id(segment_id))
    if seg.type != "dynamic":
        raise Conflict(
            f"segment {seg.name!r} is static: it has no rules; its members were added by hand or import",
            context={"segment_id": str(seg.id)},
        )
    state = await load_state(ctx, workspace_id, customer_id)
    catalog = await load_catalog(ctx.pool, workspace_id)
    compiled = compile_json(seg.rules, catalog)
    return explain_rule(compiled.rule, catalog, state, now_context(catalog))


async def patch_customer(
    ctx: ServiceContext,
    workspace_id: str,
    customer_id: str,
    *,
    attributes: dict[str, Any] | None = None,
    tags_add: Sequence[str] | None = None,
    tags_remove: Sequence[str] | None = None,
    marketing_opt_out: bool | None = None,
) -> list[str]:
    """Publish the input events of an edit (Edit Customer); answers their ``event_id``s.

    The worker applies them like any other event, so the edit follows the usual order rules.
    """
    await load_state(ctx, workspace_id, customer_id)
    catalog = await load_catalog(ctx.pool, workspace_id)
    problems = []
    for name, value in (attributes or {}).items():
        fd = catalog.fields.get(f"attributes.{name}")
        problem = declared_value_problem(name, value, fd) if fd is not None else None
        if problem is not None:
            problems.append({"path": f"$.attributes.{name}", "message": problem.split(": ", 1)[-1]})
    if problems:
        raise ValidationFailed(f"invalid attribute value: {problems[0]['message']}", details=problems)
    payloads: list[tuple[str, dict[str, Any]]] = []
    if attributes:
        payloads.append(("customer.attributes_set", {"attributes": attributes}))
    if tags_add:
        payloads.append(("customer.tags_added", {"tags": list(tags_add)}))
    if tags_remove:
        payloads.append(("customer.tags_removed", {"tags": list(tags_remove)}))
    if marketing_opt_out is not None:
        payloads.append(("customer.opt_out_set", {"marketing_opt_out": marketing_opt_out}))
    both = {fold(t) for t in tags_add or ()} & {fold(t) for t in tags_remove or ()}
    if both:
        raise ValidationFailed(
            f"a tag cannot be added and removed in one edit: {', '.join(sorted(both))}",
            details=[{"path": "$.tags_remove", "message": "names a tag that tags_add names too"}],
        )
    if not payloads:
        raise ValidationFailed(
            "nothing to change: send attributes, tags_add, tags_remove or marketing_opt_out",
            details=[{"path": "$", "message": "no change given"}],
        )
    occurred_at = format_ms(datetime.now(UTC))
    key = f"{workspace_id}:{customer_id}".encode()
    records: list[tuple[bytes, bytes]] = []
    ids: list[str] = []
    for type_, data in payloads:
        event_id = f"api-{uuid.uuid4()}"
        value = orjson.dumps(
            {
                "event_id": event_id,
                "type": type_,
                "workspace_id": workspace_id,
                "customer_id": customer_id,
                "occurred_at": occurred_at,
                "data": data,
            }
        )
        try:
            parse_event(value)  # what the worker would dead-letter is refused here
        except EventError as exc:
            raise ValidationFailed(exc.reason, details=[{"path": "$", "message": exc.reason}]) from None
        records.append((key, value))
        ids.append(event_id)
    await ctx.publisher.publish(ctx.settings.topic_events, records)
    return ids
