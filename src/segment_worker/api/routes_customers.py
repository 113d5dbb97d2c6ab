"""Customers: rule search (preview before saving), state with memberships, history, edits."""

from __future__ import annotations

from fastapi import APIRouter

from ..membership_events import public_cause
from ..service import customers as svc
from .auth import WORKSPACE_PREFIX, Context, Workspace
from .models import (
    CustomerOut,
    CustomerPatch,
    CustomerSummaryOut,
    EventIdsOut,
    HistoryItemOut,
    MembershipOut,
    Page,
    SearchIn,
)
from .routes_segments import customer_out
from .routes_workspace import Cursor, Limit

router = APIRouter(prefix=WORKSPACE_PREFIX, tags=["customers"])


@router.post("/customers/search", response_model=Page[CustomerSummaryOut], name="search_customers")
async def search(ws: Workspace, ctx: Context, body: SearchIn) -> Page[CustomerSummaryOut]:
    """Customers matching rules now, by id, with the total: a preview before saving a segment."""
    page = await svc.search(ctx, ws, body.rules, limit=body.limit, cursor=body.cursor)
    return Page(items=[customer_out(c) for c in page.items], next_cursor=page.next_cursor, total=page.total)


@router.get("/customers/{customer_id}", response_model=CustomerOut)
async def read_customer(ws: Workspace, ctx: Context, customer_id: str) -> CustomerOut:
    """A customer's state and the segments it is in."""
    c = await svc.get_customer(ctx, ws, customer_id)
    s = c.state
    return CustomerOut(
        customer_id=s.customer_id,
        workspace_id=s.workspace_id,
        phone=s.phone,
        name=s.name,
        email=s.email,
        language=s.language,
        country=s.country,
        platform=s.platform,
        created_at=s.created_at,
        last_interaction_at=s.last_interaction_at,
        last_incoming_at=s.last_incoming_at,
        marketing_opt_out=s.marketing_opt_out,
        tags=[s.tag_labels.get(t, t) for t in sorted(s.tags)],
        attributes=dict(s.attrs),
        memberships=[
            MembershipOut(
                segment_id=m.segment_id, segment_name=m.segment_name, type=m.type, joined_at=m.joined_at
            )
            for m in c.memberships
        ],
    )


@router.get("/customers/{customer_id}/history", response_model=Page[HistoryItemOut])
async def customer_history(
    ws: Workspace, ctx: Context, customer_id: str, limit: Limit = 50, cursor: Cursor = None
) -> Page[HistoryItemOut]:
    """The customer's enter/exit transitions, newest first."""
    page = await svc.history(ctx, ws, customer_id, limit=limit, cursor=cursor)
    items = [
        HistoryItemOut(
            id=h.id,
            type=h.type,
            segment_id=h.segment_id,
            segment_name=h.segment_name,
            seq=h.seq,
            cause=public_cause(h.cause),
            time=h.time,
        )
        for h in page.items
    ]
    return Page(items=items, next_cursor=page.next_cursor, total=page.total)


@router.patch("/customers/{customer_id}", status_code=202, response_model=EventIdsOut)
async def patch_customer(ws: Workspace, ctx: Context, customer_id: str, body: CustomerPatch) -> EventIdsOut:
    """Edit attributes, tags and opt-out: publishes the input events (applied by the worker)."""
    ids = await svc.patch_customer(
        ctx,
        ws,
        customer_id,
        attributes=body.attributes,
        tags_add=body.tags_add,
        tags_remove=body.tags_remove,
        marketing_opt_out=body.marketing_opt_out,
    )
    return EventIdsOut(event_ids=ids)
