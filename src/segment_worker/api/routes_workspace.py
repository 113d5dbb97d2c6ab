"""Workspace settings, attribute declarations and campaign audiences."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ..service import attributes as attrs
from ..service.audiences import create_audience
from ..service.unset import UNSET
from ..service.workspaces import get_workspace, update_workspace
from .auth import WORKSPACE_PREFIX, Context, Workspace
from .models import (
    AttributeIn,
    AttributeOut,
    AttributesIn,
    AttributesOut,
    AudienceIn,
    AudienceOut,
    Page,
    WorkspaceOut,
    WorkspaceUpdate,
)

router = APIRouter(prefix=WORKSPACE_PREFIX, tags=["workspace"])
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (default 50, max 500)")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]


def _attribute(a: attrs.Attribute) -> AttributeOut:
    return AttributeOut(
        name=a.name,
        type=a.type,
        options=list(a.options) if a.options is not None else None,
        created_at=a.created_at,
        updated_at=a.updated_at,
    )


@router.get("", response_model=WorkspaceOut)
async def read_workspace(ws: Workspace, ctx: Context) -> WorkspaceOut:
    """The workspace's settings (defaults for a workspace never named)."""
    w = await get_workspace(ctx.pool, ws)
    return WorkspaceOut(id=w.id, timezone=w.timezone, default_region=w.default_region)


@router.put("", response_model=WorkspaceOut)
async def put_workspace(ws: Workspace, ctx: Context, body: WorkspaceUpdate) -> WorkspaceOut:
    """Set the timezone (recomputes calendar-dependent segments) and/or the phone region."""
    given = body.model_fields_set
    w = await update_workspace(
        ctx,
        ws,
        timezone=body.timezone if "timezone" in given and body.timezone is not None else UNSET,
        default_region=body.default_region if "default_region" in given else UNSET,
    )
    return WorkspaceOut(id=w.id, timezone=w.timezone, default_region=w.default_region)


@router.get("/attributes", response_model=Page[AttributeOut])
async def list_attributes(
    ws: Workspace, ctx: Context, limit: Limit = 50, cursor: Cursor = None
) -> Page[AttributeOut]:
    """Declared attributes, by name."""
    page = await attrs.list_attributes(ctx, ws, limit=limit, cursor=cursor)
    return Page(items=[_attribute(a) for a in page.items], next_cursor=page.next_cursor, total=page.total)


@router.put("/attributes", response_model=AttributesOut)
async def put_attributes(ws: Workspace, ctx: Context, body: AttributesIn) -> AttributesOut:
    """Declare or redeclare several attributes at once (others are left as they are)."""
    specs = [
        attrs.AttributeSpec(i.name, i.type, tuple(i.options) if i.options is not None else None)
        for i in body.items
    ]
    saved = await attrs.put_attributes(ctx, ws, specs)
    return AttributesOut(items=[_attribute(a) for a, _ in saved])


@router.get("/attributes/{name}", response_model=AttributeOut)
async def read_attribute(ws: Workspace, ctx: Context, name: str) -> AttributeOut:
    """One declared attribute."""
    return _attribute(await attrs.get_attribute(ctx, ws, name))


@router.put("/attributes/{name}", response_model=AttributeOut, responses={201: {"model": AttributeOut}})
async def put_attribute(
    ws: Workspace, ctx: Context, name: str, body: AttributeIn, response: Response
) -> AttributeOut:
    """Declare (201) or redeclare (200) an attribute. While a segment uses it, its type cannot
    change and its options can only grow (409)."""
    spec = attrs.AttributeSpec(name, body.type, tuple(body.options) if body.options is not None else None)
    [(saved, created)] = await attrs.put_attributes(ctx, ws, [spec])
    response.status_code = 201 if created else 200
    return _attribute(saved)


@router.post("/audiences", status_code=201, response_model=AudienceOut, tags=["audiences"],
              name="create_audience")
async def post_audience(ws: Workspace, ctx: Context, body: AudienceIn) -> AudienceOut:
    """Materialise the union of segments (minus opted-out customers) into a Redis set with a TTL."""
    a = await create_audience(ctx, ws, body.segment_ids, exclude_opted_out=body.exclude_opted_out)
    return AudienceOut(audience_id=a.audience_id, redis_key=a.redis_key, count=a.count)
