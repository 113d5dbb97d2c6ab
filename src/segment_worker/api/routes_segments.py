"""Segments: CRUD, duplicate, defaults, edit previews and explanations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ..rules.summary import summarize
from ..service import customers as customers_svc
from ..service import segments as svc
from ..service.members import CustomerSummary
from ..service.unset import UNSET
from .auth import WORKSPACE_PREFIX, Context, Workspace
from .models import (
    CustomerSummaryOut,
    DefaultsOut,
    DuplicateIn,
    ExplainOut,
    Page,
    PreviewIn,
    PreviewOut,
    SegmentCreate,
    SegmentOut,
    SegmentPatch,
)
from .routes_workspace import Cursor, Limit

router = APIRouter(prefix=WORKSPACE_PREFIX, tags=["segments"])


def segment_out(s: svc.Segment) -> SegmentOut:
    """The API form of a segment, with its filter summary."""
    return SegmentOut(
        id=s.id,
        workspace_id=s.workspace_id,
        name=s.name,
        description=s.description,
        type=s.type,
        rules=s.rules,
        filter_summary=summarize(s.rules) if s.rules is not None else "No filters",
        created_at=s.created_at,
        updated_at=s.updated_at,
        member_count=s.member_count,
    )


def customer_out(c: CustomerSummary) -> CustomerSummaryOut:
    """The API form of a customer summary."""
    return CustomerSummaryOut(
        customer_id=c.customer_id,
        name=c.name,
        phone=c.phone,
        email=c.email,
        marketing_opt_out=c.marketing_opt_out,
        tags=list(c.tags),
        attributes=c.attributes,
    )


@router.post("/segments", status_code=201, response_model=SegmentOut)
async def create_segment(ws: Workspace, ctx: Context, body: SegmentCreate) -> SegmentOut:
    """Create a segment. A dynamic one's membership is computed before this answers."""
    seg = await svc.create_segment(
        ctx, ws, name=body.name, type=body.type, description=body.description, rules=body.rules
    )
    return segment_out(seg)


@router.get("/segments", response_model=Page[SegmentOut])
async def list_segments(
    ws: Workspace,
    ctx: Context,
    q: Annotated[str | None, Query(description="Keep segments whose name contains this (any case)")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SegmentOut]:
    """Segments, newest first."""
    page = await svc.list_segments(ctx, ws, q=q, limit=limit, cursor=cursor)
    return Page(items=[segment_out(s) for s in page.items], next_cursor=page.next_cursor, total=page.total)


@router.post("/segments/defaults", status_code=201, response_model=DefaultsOut,
              name="create_default_segments")
async def create_defaults(ws: Workspace, ctx: Context) -> DefaultsOut:
    """Add the five default segments, skipping names that exist."""
    result = await svc.create_default_segments(ctx, ws)
    return DefaultsOut(created=[segment_out(s) for s in result.created], skipped=list(result.skipped))


@router.get("/segments/{segment_id}", response_model=SegmentOut)
async def read_segment(ws: Workspace, ctx: Context, segment_id: str) -> SegmentOut:
    """One segment."""
    return segment_out(await svc.get_segment(ctx, ws, segment_id))


@router.patch("/segments/{segment_id}", response_model=SegmentOut)
async def patch_segment(ws: Workspace, ctx: Context, segment_id: str, body: SegmentPatch) -> SegmentOut:
    """Edit name, description or rules (a dynamic segment is recomputed before this answers)."""
    given = body.model_fields_set
    seg = await svc.update_segment(
        ctx,
        ws,
        segment_id,
        name=body.name if "name" in given and body.name is not None else UNSET,
        description=body.description if "description" in given else UNSET,
        rules=body.rules if "rules" in given else UNSET,
        type=body.type if "type" in given and body.type is not None else UNSET,
    )
    return segment_out(seg)


@router.delete("/segments/{segment_id}", status_code=204, response_class=Response)
async def delete_segment(ws: Workspace, ctx: Context, segment_id: str) -> Response:
    """Delete a segment (customers stay); one segment.deleted event is emitted."""
    await svc.delete_segment(ctx, ws, segment_id)
    return Response(status_code=204)


@router.post("/segments/{segment_id}/duplicate", status_code=201, response_model=SegmentOut)
async def duplicate_segment(ws: Workspace, ctx: Context, segment_id: str, body: DuplicateIn) -> SegmentOut:
    """Copy a segment's type, rules and (static) members under a new name."""
    seg = await svc.duplicate_segment(
        ctx,
        ws,
        segment_id,
        name=body.name,
        description=body.description if "description" in body.model_fields_set else UNSET,
    )
    return segment_out(seg)


@router.post("/segments/{segment_id}/preview-edit", response_model=PreviewOut)
async def preview_edit(ws: Workspace, ctx: Context, segment_id: str, body: PreviewIn) -> PreviewOut:
    """How many customers proposed rules would make enter and exit, with samples; nothing saved."""
    p = await customers_svc.preview_edit(ctx, ws, segment_id, body.rules)
    return PreviewOut(
        would_enter=p.would_enter,
        would_exit=p.would_exit,
        sample_enter=[customer_out(c) for c in p.sample_enter],
        sample_exit=[customer_out(c) for c in p.sample_exit],
    )


@router.get("/segments/{segment_id}/explain/{customer_id}", response_model=ExplainOut,
              name="explain_membership")
async def explain(ws: Workspace, ctx: Context, segment_id: str, customer_id: str) -> ExplainOut:
    """The segment's rule tree evaluated for one customer: each node's result, each value."""
    return ExplainOut.model_validate(await customers_svc.explain(ctx, ws, segment_id, customer_id))
