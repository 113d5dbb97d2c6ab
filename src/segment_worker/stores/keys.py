"""Redis key names (CONTRACT §6). The ``{<ws>}`` hash tag keeps a workspace's keys in one Redis
Cluster slot, so multi-key commands over one workspace (SUNIONSTORE for audiences) stay legal."""

from __future__ import annotations

from uuid import UUID


def segment_key(workspace_id: str, segment_id: UUID | str) -> str:
    """``sw:{<ws>}:seg:<segment_id>``: the customer ids of a segment's members."""
    return f"sw:{{{workspace_id}}}:seg:{segment_id}"


def optout_key(workspace_id: str) -> str:
    """``sw:{<ws>}:optout``: the customer ids with ``marketing_opt_out`` true."""
    return f"sw:{{{workspace_id}}}:optout"


def audience_key(workspace_id: str, audience_id: UUID | str) -> str:
    """``sw:{<ws>}:aud:<audience_id>``: a materialised campaign audience."""
    return f"sw:{{{workspace_id}}}:aud:{audience_id}"


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for SCAN MATCH patterns."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
