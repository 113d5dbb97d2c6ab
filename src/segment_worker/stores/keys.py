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


def epochs_key(workspace_id: str) -> str:
    """``sw:{<ws>}:epochs``: a hash partition → the newest owner epoch that wrote the workspace's
    sets (``stores.redis_fenced``); in the workspace's slot, so one script checks and writes."""
    return f"sw:{{{workspace_id}}}:epochs"


def marker_key(workspace_id: str) -> str:
    """``sw:{<ws>}:marker``: ``ok`` once the workspace's sets were rebuilt from PostgreSQL; its
    absence means Redis lost data (``stores.redisheal``)."""
    return f"sw:{{{workspace_id}}}:marker"


def key_workspace(key: str) -> str | None:
    """The workspace of one of our keys (its ``{<ws>}`` hash tag), None for another key."""
    if not key.startswith("sw:{"):
        return None
    end = key.find("}", 4)
    return key[4:end] if end > 4 else None
