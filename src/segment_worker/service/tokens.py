"""API tokens (CONTRACT §8): bearer tokens bound to one workspace or to all (``*``).

Tokens made by ``segment-worker tokens create`` are stored only as their SHA-256 hex digest in
``api_tokens``; static ones come from ``SEGMENT_WORKER_API_TOKENS`` (``token=workspace,…``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..config import Settings
from ..errors import ConfigError
from .workspaces import check_workspace_id

ALL_WORKSPACES = "*"
TOKEN_PREFIX = "swt_"


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def static_tokens(settings: Settings) -> dict[str, str]:
    """Token hash → workspace (or ``*``) of ``SEGMENT_WORKER_API_TOKENS``; ConfigError when malformed."""
    out: dict[str, str] = {}
    for entry in (settings.api_tokens or "").split(","):
        if not entry.strip():
            continue
        token, sep, workspace = entry.strip().partition("=")
        if not sep or not token or not workspace:
            raise ConfigError(
                "SEGMENT_WORKER_API_TOKENS must be 'token=workspace' entries separated by commas"
                f" (workspace '*' for all); got an entry {entry.strip()[:8]!r}…",
            )
        if workspace != ALL_WORKSPACES:
            check_workspace_id(workspace)
        out[hash_token(token)] = workspace
    return out


async def create_token(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> str:
    """A new random token bound to ``workspace_id`` (``*`` = every workspace); only its hash is kept."""
    if workspace_id != ALL_WORKSPACES:
        check_workspace_id(workspace_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_hash, workspace_id) VALUES ($1, $2)", hash_token(token), workspace_id
    )
    return token


async def token_workspace(
    conn: asyncpg.Connection | asyncpg.Pool, token: str, static: dict[str, str]
) -> str | None:
    """The workspace (or ``*``) a presented token is bound to; None for an unknown token."""
    digest = hash_token(token)
    if digest in static:
        return static[digest]
    found: str | None = await conn.fetchval(
        "SELECT workspace_id FROM api_tokens WHERE token_hash = $1", digest
    )
    return found


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What ``tokens list`` shows of a stored token: never the token, never its hash."""

    id: int
    workspace_id: str
    created_at: datetime


async def list_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str | None = None
) -> list[StoredToken]:
    """The stored tokens, oldest first; with ``workspace_id``, those that can use it (its own and
    the ``*`` ones)."""
    rows = await conn.fetch(
        "SELECT id, workspace_id, created_at FROM api_tokens"
        " WHERE $1::text IS NULL OR workspace_id IN ($1, '*') ORDER BY created_at, id",
        workspace_id,
    )
    return [StoredToken(r["id"], r["workspace_id"], r["created_at"]) for r in rows]


async def revoke_token(conn: asyncpg.Connection | asyncpg.Pool, token_id: int) -> StoredToken | None:
    """Delete the stored token ``token_id`` (it stops working at once: every request looks it up);
    answers what was revoked, or None when there is no such token."""
    row = await conn.fetchrow(
        "DELETE FROM api_tokens WHERE id = $1 RETURNING id, workspace_id, created_at", token_id
    )
    return StoredToken(row["id"], row["workspace_id"], row["created_at"]) if row is not None else None
