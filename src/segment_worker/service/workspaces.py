"""Workspaces: settings (timezone, phone region), the rule catalogue, and the input topic's size.

A workspace exists once anything names it (CONTRACT §10): reads of an unknown one answer its
defaults and empty lists; writes create its row first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import phonenumbers

from ..config import Settings
from ..errors import ValidationFailed
from ..rules.model import Catalog, FieldDef, FieldType
from ..stores import postgres as pg
from ..text import workspace_id_problem
from ..timeutil import zone
from .context import ServiceContext
from .recompute import dynamic_segments, recompute
from .ruleset import now_context
from .units import unit
from .unset import UNSET, Unset


@dataclass(frozen=True, slots=True)
class Workspace:
    """A workspace's settings; ``default_region`` reads national phone numbers in imports."""

    id: str
    timezone: str = "UTC"
    default_region: str | None = None


def check_workspace_id(workspace_id: str) -> str:
    """``workspace_id`` when valid (an id without ``: { } /`` or whitespace); ValidationFailed otherwise."""
    problem = workspace_id_problem(workspace_id)
    if problem is not None:
        raise ValidationFailed(
            f"workspace id {workspace_id!r} {problem}",
            details=[{"path": "$.workspace_id", "message": problem}],
        )
    return workspace_id


def check_timezone(name: str) -> str:
    """``name`` when it is an IANA timezone; ValidationFailed naming it otherwise."""
    try:
        zone(name)
    except ValueError as exc:
        raise ValidationFailed(str(exc), details=[{"path": "$.timezone", "message": str(exc)}]) from None
    return name


def check_region(region: str | None) -> str | None:
    """``region`` upper-cased when phone numbers can be read in it (ISO 3166-1 alpha-2)."""
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        message = f"{region!r} is not a region phone numbers can be read in (ISO 3166-1 alpha-2, e.g. 'OM')"
        raise ValidationFailed(message, details=[{"path": "$.default_region", "message": message}])
    return code


async def get_workspace(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> Workspace:
    """The workspace's settings (the defaults for one never named)."""
    row = await conn.fetchrow(
        "SELECT id, timezone, default_region FROM workspaces WHERE id = $1", workspace_id
    )
    if row is None:
        return Workspace(workspace_id)
    return Workspace(row["id"], row["timezone"], row["default_region"])


async def ensure_workspace(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Create the workspace row (with defaults) if it does not exist."""
    await conn.execute("INSERT INTO workspaces (id) VALUES ($1) ON CONFLICT DO NOTHING", workspace_id)


async def lock_workspace(conn: asyncpg.Connection, workspace_id: str) -> Workspace:
    """Create if needed and row-lock the workspace until the transaction ends.

    Serialises writers of one workspace's segments and attributes (name uniqueness, the segment
    limit, attribute checks). Callers that also take partition locks take those first.
    """
    await ensure_workspace(conn, workspace_id)
    row = await conn.fetchrow(
        "SELECT id, timezone, default_region FROM workspaces WHERE id = $1 FOR UPDATE", workspace_id
    )
    assert row is not None
    return Workspace(row["id"], row["timezone"], row["default_region"])


async def bump_catalog(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Tell workers the workspace's segments, attributes or timezone changed (they reload)."""
    await conn.execute(
        "UPDATE workspaces SET catalog_version = catalog_version + 1 WHERE id = $1", workspace_id
    )


def field_def(name: str, type_: str, options: Any) -> FieldDef:
    """The rule catalogue entry of a declared attribute."""
    return FieldDef(f"attributes.{name}", FieldType(type_), tuple(options) if options is not None else None)


async def load_catalog(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> Catalog:
    """Built-in fields, declared attributes and timezone: what rules are validated against."""
    ws = await get_workspace(conn, workspace_id)
    rows = await conn.fetch(
        "SELECT name, type, options FROM attribute_defs WHERE workspace_id = $1", workspace_id
    )
    attributes: Mapping[str, FieldDef] = {
        r["name"]: field_def(r["name"], r["type"], r["options"]) for r in rows
    }
    return Catalog.for_workspace(attributes, timezone=ws.timezone)


async def input_partition_count(conn: asyncpg.Connection, settings: Settings) -> int:
    """Partitions of the input topic: as recorded when the project created it, else the setting."""
    n = await pg.input_partitions(conn, settings.topic_events)
    return n if n is not None else settings.input_partitions


async def all_partitions(conn: asyncpg.Connection, settings: Settings) -> list[int]:
    """Every partition of the input topic plus any other a row is stored under: what a unit that
    recomputes or deletes a whole segment locks."""
    n = await input_partition_count(conn, settings)
    return sorted(set(range(n)) | set(await pg.known_partitions(conn)))


async def update_workspace(
    ctx: ServiceContext,
    workspace_id: str,
    *,
    timezone: str | Unset = UNSET,
    default_region: str | Unset | None = UNSET,
) -> Workspace:
    """Change the timezone and/or phone region (fields not sent keep their value). A new timezone
    recomputes every dynamic segment whose rules read a date or datetime (cause ``rules_changed``)."""
    check_workspace_id(workspace_id)
    tz = check_timezone(timezone) if not isinstance(timezone, Unset) else None
    region = check_region(default_region) if not isinstance(default_region, Unset) else None
    current = await get_workspace(ctx.pool, workspace_id)
    moving = tz is not None and tz != current.timezone
    async with ctx.pool.acquire() as conn:
        partitions = await all_partitions(conn, ctx.settings) if moving else []
    async with unit(ctx, partitions) as u:
        ws = await lock_workspace(u.conn, workspace_id)
        ws = Workspace(
            ws.id,
            tz if tz is not None else ws.timezone,
            region if not isinstance(default_region, Unset) else ws.default_region,
        )
        await u.conn.execute(
            "UPDATE workspaces SET timezone = $2, default_region = $3 WHERE id = $1",
            ws.id,
            ws.timezone,
            ws.default_region,
        )
        if moving:
            catalog = await load_catalog(u.conn, workspace_id)
            tctx = now_context(catalog)
            for seg in await dynamic_segments(u.conn, workspace_id, catalog):
                if seg.compiled.timezone_dependent:
                    await recompute(u.conn, workspace_id, seg.id, seg.name, seg.compiled, tctx, u.at)
            await bump_catalog(u.conn, workspace_id)
    return ws
