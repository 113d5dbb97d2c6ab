"""Bearer-token auth (CONTRACT §8): a token is bound to one workspace or to all (``*``); a token
for another workspace is answered 404, as if the workspace's resources did not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import NotFound
from ..service.context import ServiceContext
from ..service.tokens import ALL_WORKSPACES, token_workspace
from ..service.workspaces import check_workspace_id
from .errors import Unauthorized

# Every workspace route hangs under this path; routes carry it in full (metrics label by route).
WORKSPACE_PREFIX = "/v1/workspaces/{ws}"
_bearer = HTTPBearer(auto_error=False, description="A token from `segment-worker tokens create`")


def context(request: Request) -> ServiceContext:
    """The app's service context (opened in its lifespan)."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


async def workspace(
    request: Request,
    ws: Annotated[str, Path(description="Workspace id", min_length=1, max_length=128)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The path's workspace id, once the bearer token is known and allowed to see it."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    ctx = context(request)
    scope = await token_workspace(ctx.pool, credentials.credentials, request.app.state.static_tokens)
    if scope is None:
        raise Unauthorized("the bearer token is not valid")
    if scope not in (ALL_WORKSPACES, ws):
        raise NotFound(f"workspace {ws!r} not found", context={"workspace_id": ws})
    return check_workspace_id(ws)


Workspace = Annotated[str, Depends(workspace)]
Context = Annotated[ServiceContext, Depends(context)]
