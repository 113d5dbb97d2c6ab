"""API tokens (CONTRACT §8): bearer tokens bound to one workspace or to all (``*``).

Tokens made by ``segment-worker tokens create`` are stored only as their SHA-256 hex digest in
``api_tokens``; static ones come from ``SEGMENT_WORKER_API_TOKENS`` (``token=workspace,…``).
"""

from __future__ import annotations

import hashlib
import secrets

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
