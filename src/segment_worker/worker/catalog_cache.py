"""Each workspace's catalogue as the worker needs it: attribute definitions, timezone and compiled
segments, cached and reloaded when ``workspaces.catalog_version`` moves.

API writers bump ``catalog_version`` in the same transaction as the change (segments, attributes,
timezone) and under the partition locks, so a worker that checks the version inside its batch
transaction (which holds its partitions' locks) always evaluates a batch against a whole catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from ..engine import SegmentDef, WorkspaceView, build_view
from ..rules.compiled import CompiledRule, compile_rule
from ..rules.model import ATTRIBUTE_TYPES, Catalog, FieldDef, FieldType
from ..rules.validate import RuleError, parse_rule
from ..timeutil import zone

log = logging.getLogger(__name__)

# The version of a workspace without a row: one the API never writes, so creating the row reloads.
MISSING = -1


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One workspace's loaded catalogue."""

    workspace_id: str
    version: int
    view: WorkspaceView
    # Dynamic segments whose truth can change with time alone (the ticker's work list).
    time_relative: tuple[tuple[SegmentDef, CompiledRule], ...]

    @property
    def timezone(self) -> str:
        return self.view.catalog.timezone


def _json(value: Any) -> Any:
    # Connections from stores.postgres decode jsonb already; a JSON string here would mean options
    # or rules stored as a string — a writer's bug that must not be papered over by decoding it.
    if isinstance(value, str | bytes):
        raise TypeError(f"expected decoded jsonb (a pool from stores.postgres), got {type(value).__name__}")
    return value


def _attribute(row: Mapping[str, Any]) -> FieldDef | None:
    try:
        ftype = FieldType(row["type"])
    except ValueError:
        ftype = None
    if ftype is None or ftype not in ATTRIBUTE_TYPES:
        log.error(
            "workspace %s: attribute %r has unknown type %r; ignored",
            row["workspace_id"],
            row["name"],
            row["type"],
        )
        return None
    options = _json(row["options"])
    return FieldDef(f"attributes.{row['name']}", ftype, tuple(options) if options is not None else None)


def _segment(row: Mapping[str, Any], catalog: Catalog) -> tuple[SegmentDef, CompiledRule | None] | None:
    sid: UUID = row["id"]
    if row["type"] != "dynamic":
        return SegmentDef(sid, row["workspace_id"], row["name"], "static"), None
    try:
        compiled = compile_rule(parse_rule(_json(row["rules"]), catalog), catalog)
    except RuleError as exc:
        # The API validates rules and refuses catalogue changes that would break one, so this is
        # a stored rule from an older version: keep the worker running and say which one.
        log.error(
            "workspace %s: segment %s (%s) has an invalid rule, skipped: %s",
            row["workspace_id"],
            sid,
            row["name"],
            exc,
        )
        return None
    return SegmentDef(sid, row["workspace_id"], row["name"], "dynamic", compiled), compiled


async def load_entries(conn: asyncpg.Connection, workspaces: Iterable[str]) -> dict[str, CatalogEntry]:
    """Load the catalogue of each workspace (three queries whatever their number).

    A workspace without a row gets the defaults (UTC, no attributes, no segments)."""
    ids = sorted(set(workspaces))
    if not ids:
        return {}
    ws_rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, timezone, default_region, catalog_version FROM workspaces WHERE id = ANY($1::text[])",
            ids,
        )
    }
    attrs: dict[str, dict[str, FieldDef]] = {w: {} for w in ids}
    for r in await conn.fetch(
        "SELECT workspace_id, name, type, options FROM attribute_defs WHERE workspace_id = ANY($1::text[])"
        " ORDER BY workspace_id, name",
        ids,
    ):
        fd = _attribute(r)
        if fd is not None:
            attrs[r["workspace_id"]][fd.key] = fd
    seg_rows: dict[str, list[Any]] = {w: [] for w in ids}
    for r in await conn.fetch(
        "SELECT workspace_id, id, name, type, rules FROM segments WHERE workspace_id = ANY($1::text[])"
        " ORDER BY workspace_id, created_at, id",
        ids,
    ):
        seg_rows[r["workspace_id"]].append(r)
    out: dict[str, CatalogEntry] = {}
    for ws in ids:
        row = ws_rows.get(ws)
        tz = row["timezone"] if row is not None else "UTC"
        try:
            zone(tz)
        except ValueError:
            log.error("workspace %s: unknown timezone %r, using UTC", ws, tz)
            tz = "UTC"
        catalog = Catalog.for_workspace(attrs[ws], tz)
        segments: list[SegmentDef] = []
        timed: list[tuple[SegmentDef, CompiledRule]] = []
        for srow in seg_rows[ws]:
            made = _segment(srow, catalog)
            if made is None:
                continue
            seg, compiled = made
            segments.append(seg)
            if compiled is not None and compiled.time_relative:
                timed.append((seg, compiled))
        view = build_view(ws, catalog, segments, row["default_region"] if row is not None else None)
        version = row["catalog_version"] if row is not None else MISSING
        out[ws] = CatalogEntry(ws, version, view, tuple(timed))
    return out


class CatalogCache:
    """Workspace catalogues by id, revalidated against ``catalog_version`` on each use."""

    def __init__(self) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        self.reloads = 0  # workspaces (re)loaded so far, for tests and logs

    def clear(self) -> None:
        """Forget every catalogue."""
        self._entries.clear()

    async def entries(self, conn: asyncpg.Connection, workspaces: Iterable[str]) -> dict[str, CatalogEntry]:
        """The current catalogue of each workspace: one version query, then reloads of the stale.

        Call it inside the batch transaction, after the partition locks are taken."""
        ids = sorted(set(workspaces))
        if not ids:
            return {}
        rows = await conn.fetch("SELECT id, catalog_version FROM workspaces WHERE id = ANY($1::text[])", ids)
        versions = {r["id"]: r["catalog_version"] for r in rows}
        stale = [
            w for w in ids if (e := self._entries.get(w)) is None or e.version != versions.get(w, MISSING)
        ]
        if stale:
            loaded = await load_entries(conn, stale)
            self._entries.update(loaded)
            self.reloads += len(loaded)
        return {w: self._entries[w] for w in ids}

    async def views(self, conn: asyncpg.Connection, workspaces: Iterable[str]) -> dict[str, WorkspaceView]:
        """``entries`` reduced to the engine's views."""
        return {w: e.view for w, e in (await self.entries(conn, workspaces)).items()}

    async def with_time_relative(self, conn: asyncpg.Connection) -> list[CatalogEntry]:
        """The current catalogue of every workspace that has a time-relative dynamic segment."""
        rows = await conn.fetch("SELECT DISTINCT workspace_id FROM segments WHERE type = 'dynamic'")
        entries = await self.entries(conn, [r["workspace_id"] for r in rows])
        return [e for e in entries.values() if e.time_relative]
