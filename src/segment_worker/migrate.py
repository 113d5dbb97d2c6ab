"""Schema migrations: numbered SQL files in ``segment_worker/migrations``, applied in order, once.

A kept tool (alembic, yoyo) would bring SQLAlchemy or a second driver for a handful of SQL files;
this runner is small, uses asyncpg, and is serialised by an advisory lock so several processes
may call it at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg

_MIGRATION_LOCK = 0x53570001  # any constant distinct from partition locks
_NAME_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with the package, by version."""
    found = []
    for entry in resources.files("segment_worker.migrations").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda x: x.version)
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations to the database at ``dsn``; return the names applied."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate_conn(conn)
    finally:
        await conn.close()


async def migrate_conn(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations on an open connection (each in its own transaction)."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
            applied.append(mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """``migrate --status``: what the database has applied (name, when) and what is pending."""

    applied: tuple[tuple[str, datetime], ...]
    pending: tuple[str, ...]
    unknown: tuple[str, ...]  # applied by a newer release than this one (a rollback's tell-tale)


async def status(dsn: str) -> MigrationStatus:
    """Compare the database's ``schema_migrations`` with the migrations shipped; changes nothing."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        rows = (
            await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
            if exists
            else []
        )
    finally:
        await conn.close()
    done = {r["version"] for r in rows}
    shipped = {m.version for m in available()}
    return MigrationStatus(
        applied=tuple((r["name"], r["applied_at"]) for r in rows if r["version"] in shipped),
        pending=tuple(m.name for m in available() if m.version not in done),
        unknown=tuple(r["name"] for r in rows if r["version"] not in shipped),
    )
