"""Attribute declarations (CONTRACT §3, §10): the typed custom fields rules may read.

While a segment's rules use an attribute, its type cannot change and its options can only grow
(Conflict). Declaring or retyping a ``date``/``datetime`` attribute rebuilds its typed copies
(``customer_times``, read by the ticker) under every partition lock, so no worker batch saves a
customer against the old declaration meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..errors import Conflict, NotFound, ValidationFailed
from ..rules.model import ATTRIBUTE_TYPES, FieldType
from ..stores import postgres as pg
from ..text import fold
from .context import ServiceContext
from .pagination import Page, check_limit, decode_cursor, page_of
from .recompute import dynamic_segments
from .units import unit
from .workspaces import all_partitions, bump_catalog, check_workspace_id, load_catalog, lock_workspace

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
MAX_OPTIONS = 500
_CHOICE_TYPES = (FieldType.SELECT, FieldType.MULTI_SELECT)
_TIME_TYPES = (FieldType.DATE.value, FieldType.DATETIME.value)


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """An attribute as declared by a caller."""

    name: str
    type: str
    options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Attribute:
    """A declared attribute of a workspace."""

    name: str
    type: str
    options: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime


def _problem(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"path": path, "message": message}])


def check_spec(spec: AttributeSpec, path: str = "$") -> AttributeSpec:
    """``spec`` with options trimmed; ValidationFailed naming the path of the first problem."""
    if not NAME_RE.match(spec.name):
        raise _problem(
            f"{path}.name",
            f"attribute name {spec.name!r} must be 1–64 letters, digits, '_' or '-' (not starting with '-')",
        )
    if spec.type not in {t.value for t in ATTRIBUTE_TYPES}:
        allowed = ", ".join(sorted(t.value for t in ATTRIBUTE_TYPES))
        raise _problem(f"{path}.type", f"type must be one of {allowed}, not {spec.type!r}")
    if spec.options is None:
        return spec
    if FieldType(spec.type) not in _CHOICE_TYPES:
        raise _problem(f"{path}.options", "only select and multi_select attributes have options")
    options = tuple(o.strip() for o in spec.options)
    if not options or len(options) > MAX_OPTIONS:
        raise _problem(f"{path}.options", f"options must hold 1–{MAX_OPTIONS} values")
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not option:
            raise _problem(f"{path}.options[{i}]", "an option must not be empty")
        if fold(option) in seen:
            raise _problem(f"{path}.options[{i}]", f"option {option!r} is listed twice (options ignore case)")
        seen.add(fold(option))
    return AttributeSpec(spec.name, spec.type, options)


def _attribute(row: asyncpg.Record) -> Attribute:
    options = row["options"]
    return Attribute(
        row["name"],
        row["type"],
        tuple(options) if options is not None else None,
        row["created_at"],
        row["updated_at"],
    )


async def _users(conn: asyncpg.Connection, workspace_id: str, name: str) -> list[str]:
    """Names of the segments whose rules read ``attributes.<name>``."""
    segments = await dynamic_segments(conn, workspace_id, await load_catalog(conn, workspace_id))
    return sorted(s.name for s in segments if f"attributes.{name}" in s.compiled.fields)


def _check_change(current: Attribute, spec: AttributeSpec, users: Sequence[str]) -> None:
    if not users:
        return
    used_by = ", ".join(repr(u) for u in users)
    if spec.type != current.type:
        raise Conflict(
            f"attribute {spec.name!r} is used by segment(s) {used_by};"
            f" its type ({current.type}) cannot change",
            context={"attribute": spec.name, "segments": list(users)},
        )
    if current.options is None:
        narrowed = spec.options is not None
    else:
        kept = {fold(o) for o in spec.options} if spec.options is not None else None
        narrowed = kept is not None and not {fold(o) for o in current.options} <= kept
    if narrowed:
        raise Conflict(
            f"attribute {spec.name!r} is used by segment(s) {used_by}; its options can only grow",
            context={"attribute": spec.name, "segments": list(users)},
        )


async def put_attributes(
    ctx: ServiceContext, workspace_id: str, specs: Sequence[AttributeSpec]
) -> list[tuple[Attribute, bool]]:
    """Declare or redeclare attributes in one transaction; answers each with whether it is new."""
    check_workspace_id(workspace_id)
    specs = [check_spec(s, f"$.items[{i}]" if len(specs) > 1 else "$") for i, s in enumerate(specs)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _problem("$.items", "an attribute is declared twice in one request")
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT name, type FROM attribute_defs WHERE workspace_id = $1 AND name = ANY($2::text[])",
            workspace_id,
            names,
        )
        timed = any(s.type in _TIME_TYPES for s in specs) or any(r["type"] in _TIME_TYPES for r in rows)
        partitions = await all_partitions(conn, ctx.settings) if timed else []
    out: list[tuple[Attribute, bool]] = []
    async with unit(ctx, partitions) as u:
        await lock_workspace(u.conn, workspace_id)
        for spec in specs:
            row = await u.conn.fetchrow(
                "SELECT name, type, options, created_at, updated_at FROM attribute_defs"
                " WHERE workspace_id = $1 AND name = $2",
                workspace_id,
                spec.name,
            )
            if row is not None:
                _check_change(_attribute(row), spec, await _users(u.conn, workspace_id, spec.name))
            saved = await u.conn.fetchrow(
                "INSERT INTO attribute_defs AS a (workspace_id, name, type, options, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $5)"
                " ON CONFLICT (workspace_id, name) DO UPDATE"
                " SET type = EXCLUDED.type, options = EXCLUDED.options, updated_at = EXCLUDED.updated_at"
                " RETURNING name, type, options, created_at, updated_at",
                workspace_id,
                spec.name,
                spec.type,
                list(spec.options) if spec.options is not None else None,
                u.at,
            )
            out.append((_attribute(saved), row is None))
        retimed = [s.name for s in specs if s.type in _TIME_TYPES] + [
            r["name"] for r in rows if r["type"] in _TIME_TYPES
        ]
        if retimed:
            await pg.refresh_customer_times(u.conn, workspace_id, sorted(set(retimed)))
        await bump_catalog(u.conn, workspace_id)
    return out


async def get_attribute(ctx: ServiceContext, workspace_id: str, name: str) -> Attribute:
    """One declared attribute; NotFound otherwise."""
    row = await ctx.pool.fetchrow(
        "SELECT name, type, options, created_at, updated_at FROM attribute_defs"
        " WHERE workspace_id = $1 AND name = $2",
        workspace_id,
        name,
    )
    if row is None:
        raise NotFound(f"attribute {name!r} is not declared", context={"attribute": name})
    return _attribute(row)


async def list_attributes(
    ctx: ServiceContext, workspace_id: str, *, limit: int = 50, cursor: str | None = None
) -> Page[Attribute]:
    """Declared attributes by name."""
    check_limit(limit)
    after = decode_cursor(cursor, 1)
    async with ctx.pool.acquire() as conn:
        total = await conn.fetchval(
            "SELECT count(*) FROM attribute_defs WHERE workspace_id = $1", workspace_id
        )
        rows = await conn.fetch(
            "SELECT name, type, options, created_at, updated_at FROM attribute_defs"
            " WHERE workspace_id = $1 AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3",
            workspace_id,
            str(after[0]) if after else None,
            limit + 1,
        )
    return page_of([_attribute(r) for r in rows], limit, total, lambda a: (a.name,))
