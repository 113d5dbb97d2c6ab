import asyncpg

from segment_worker.migrate import available, migrate


async def test_migrations_apply_once_and_create_the_contract_view(pg_dsn: str) -> None:
    assert await migrate(pg_dsn) == []  # the fixture applied them already
    conn = await asyncpg.connect(pg_dsn)
    try:
        cols = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'segment_memberships'"
            " ORDER BY ordinal_position")]
        assert cols == ["workspace_id", "segment_id", "customer_id", "joined_at"]
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        versions = [r["version"] for r in rows]
        assert versions == [m.version for m in available()]
    finally:
        await conn.close()
