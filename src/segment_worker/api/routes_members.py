"""Segment members: list, add, remove, CSV import (and its sample), candidates to add."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from ..csvimport import MAX_BYTES, SAMPLE_CSV, CsvFileError, CsvProblem
from ..errors import ValidationFailed
from ..service import members as svc
from ..service.segments import get_segment
from .auth import WORKSPACE_PREFIX, Context, Workspace
from .models import (
    AddedOut,
    CustomerSummaryOut,
    ImportOut,
    InvalidRowOut,
    MemberOut,
    MembersIn,
    Page,
    RemovedOut,
)
from .routes_segments import customer_out
from .routes_workspace import Cursor, Limit

router = APIRouter(prefix=WORKSPACE_PREFIX, tags=["members"])
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file

_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _too_large() -> CsvFileError:
    return CsvFileError(
        CsvProblem.TOO_LARGE,
        f"the file is larger than {MAX_BYTES} bytes (10 MB), the most an import takes",
        {"max_bytes": MAX_BYTES},
    )


async def read_upload(request: Request) -> bytes:
    """The CSV file of an import: a raw body (``text/csv``) or the ``file`` part of a multipart
    form; never more than 10 MB + 1 byte is kept (more is a 413)."""
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BYTES + (_MULTIPART_SLACK if multipart else 0):
        raise _too_large()
    if multipart:
        async with request.form(max_files=1, max_fields=10) as form:  # closes the spooled files
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ValidationFailed(
                    "a multipart import needs the CSV in a part named 'file'",
                    details=[{"path": "$.file", "message": "is required"}],
                )
            data = await upload.read(MAX_BYTES + 1)
    else:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > MAX_BYTES:
                break
        data = bytes(buf)
    if len(data) > MAX_BYTES:
        raise _too_large()
    return data


@router.get("/segments/{segment_id}/members", response_model=Page[MemberOut])
async def list_members(
    ws: Workspace, ctx: Context, segment_id: str, limit: Limit = 50, cursor: Cursor = None
) -> Page[MemberOut]:
    """Members, most recently joined first, each with opt-out, attributes, tags and joined_at."""
    page = await svc.list_members(ctx, ws, segment_id, limit=limit, cursor=cursor)
    items = [MemberOut(**customer_out(c).model_dump(), joined_at=c.joined_at) for c in page.items]
    return Page(items=items, next_cursor=page.next_cursor, total=page.total)


@router.post("/segments/{segment_id}/members", response_model=AddedOut)
async def add_members(ws: Workspace, ctx: Context, segment_id: str, body: MembersIn) -> AddedOut:
    """Add existing customers to a static segment (409 for a dynamic one)."""
    r = await svc.add_members(ctx, ws, segment_id, body.customer_ids)
    return AddedOut(added=r.added, already_members=r.already_members, not_found=list(r.not_found))


@router.delete("/segments/{segment_id}/members", response_model=RemovedOut)
async def remove_members(ws: Workspace, ctx: Context, segment_id: str, body: MembersIn) -> RemovedOut:
    """Remove customers from a static segment (409 for a dynamic one)."""
    r = await svc.remove_members(ctx, ws, segment_id, body.customer_ids)
    return RemovedOut(removed=r.removed, not_members=r.not_members, not_found=list(r.not_found))


@router.post("/segments/{segment_id}/import", response_model=ImportOut, openapi_extra=_IMPORT_BODY)
async def import_csv(ws: Workspace, ctx: Context, segment_id: str, request: Request) -> ImportOut:
    """Import a CSV (≤ 10 MB, header with ``phone``, optional ``name``; comma or semicolon;
    UTF-8 with or without BOM) into a static segment. Unknown phones create customers."""
    r = await svc.import_csv(ctx, ws, segment_id, await read_upload(request))
    return ImportOut(
        added=r.added,
        already_members=r.already_members,
        created=r.created,
        invalid=[InvalidRowOut(line=i.line, value=i.value, reason=i.reason) for i in r.invalid],
    )


@router.get(
    "/segments/{segment_id}/import/sample.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def sample_csv(ws: Workspace, ctx: Context, segment_id: str) -> Response:
    """A sample import file (``phone,name``)."""
    await get_segment(ctx, ws, segment_id)
    return Response(
        SAMPLE_CSV,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="segment-import-sample.csv"'},
    )


@router.get("/segments/{segment_id}/candidates", response_model=Page[CustomerSummaryOut],
              name="list_candidates")
async def candidates(
    ws: Workspace,
    ctx: Context,
    segment_id: str,
    q: Annotated[str | None, Query(description="Part of a name or phone number")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CustomerSummaryOut]:
    """Customers not yet in a static segment, by id, optionally filtered by name or phone."""
    page = await svc.candidates(ctx, ws, segment_id, q=q, limit=limit, cursor=cursor)
    return Page(items=[customer_out(c) for c in page.items], next_cursor=page.next_cursor, total=page.total)
