"""The operator verbs of CONTRACT §9 as real processes against the session's servers: `tokens list`
(ids, workspaces, creation times — never a token or its hash) and `tokens revoke`, `migrate --status`
(applied and pending; migration 009 numbers tokens made before it), `reconcile --json` and its exit
codes (0 ok or repaired, 1 drift with --check, 2 failure)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from typing import Any

import asyncpg

from helpers.service import cli_command, cli_env
from segment_worker.migrate import available
from segment_worker.service.tokens import hash_token, token_workspace
from segment_worker.stores.keys import optout_key


async def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*cli_command(), *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_tokens_list_and_revoke(pg_dsn: str, redis_url: str) -> None:
    env = cli_env(pg_dsn, redis_url)
    ws, other = f"ws-tok-{uuid.uuid4().hex[:8]}", f"ws-tok-{uuid.uuid4().hex[:8]}"
    made = {}
    for scope in (ws, other, "*"):
        created = await _cli("tokens", "create", "--workspace", scope, env=env)
        assert created.returncode == 0, created.stderr
        made[scope] = created.stdout.strip().splitlines()[-1]

    listed = await _cli("tokens", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "WORKSPACE", "CREATED"]
    by_workspace = {r.split()[1]: r.split() for r in rows}
    assert {ws, other, "*"} <= by_workspace.keys()
    for token in made.values():
        assert token not in listed.stdout and hash_token(token) not in listed.stdout
        assert token[4:12] not in listed.stdout and hash_token(token)[:8] not in listed.stdout
    assert all(r[2].endswith("Z") and r[0].isdigit() for r in by_workspace.values())

    mine = await _cli("tokens", "list", "--workspace", ws, env=env)
    mine_ws = {r.split()[1] for r in mine.stdout.splitlines()[1:]}
    assert ws in mine_ws and "*" in mine_ws and other not in mine_ws

    as_json = await _cli("tokens", "list", "--workspace", ws, env=env | {"SEGMENT_WORKER_LOG_FORMAT": "json"})
    docs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {d["workspace"] for d in docs} == mine_ws and all(isinstance(d["id"], int) for d in docs)

    token_id = by_workspace[ws][0]
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await token_workspace(conn, made[ws], {}) == ws
        revoked = await _cli("tokens", "revoke", token_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        assert f"revoked token {token_id} (workspace {ws}" in revoked.stdout
        assert await token_workspace(conn, made[ws], {}) is None  # refused at once (401)
        assert await token_workspace(conn, made[other], {}) == other  # the others still work
    finally:
        await conn.close()
    again = await _cli("tokens", "revoke", token_id, env=env)
    assert again.returncode == 1 and f"no stored token has id {token_id}" in again.stderr
    assert ws not in (await _cli("tokens", "list", env=env)).stdout
    bad = await _cli("tokens", "revoke", "abc", env=env)
    assert bad.returncode == 2  # a usage error


async def test_migrate_status_and_tokens_made_before_ids_existed(empty_database: str, redis_url: str) -> None:
    env = cli_env(empty_database, redis_url)
    names = [m.name for m in available()]
    before = await _cli("migrate", "--status", env=env)
    assert before.returncode == 0, before.stderr
    assert [line.split()[1] for line in before.stdout.splitlines()[:-1]] == names
    assert all(line.startswith("pending ") for line in before.stdout.splitlines()[:-1])
    assert before.stdout.splitlines()[-1] == f"0 applied, {len(names)} pending"

    # A database at 008 with tokens in it (as a release before 009 left it), then the upgrade.
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for mig in available():
            if mig.version <= 8:
                await conn.execute(mig.sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   mig.version, mig.name)
        await conn.execute(
            "INSERT INTO api_tokens (token_hash, workspace_id) VALUES ('h1', 'w1'), ('h2', '*')"
        )
        behind = await _cli("tokens", "list", env=env)
        assert behind.returncode == 1 and "run segment-worker migrate" in behind.stderr
        assert "Traceback" not in behind.stderr
        middle = await _cli("migrate", "--status", env=env)
        assert "pending 009_api_token_ids.sql" in middle.stdout
        assert middle.stdout.count("applied 0") == 8 and " at 20" in middle.stdout
        upgraded = await _cli("migrate", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        ids = await conn.fetch("SELECT id, workspace_id FROM api_tokens ORDER BY id")
        assert [r["workspace_id"] for r in ids] == ["w1", "*"] and all(r["id"] for r in ids)
        made = await _cli("tokens", "create", "--workspace", "w3", env=env)
        assert made.returncode == 0, made.stderr
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM api_tokens") == 3
    finally:
        await conn.close()

    after = await _cli("migrate", "--status", env=env | {"SEGMENT_WORKER_LOG_FORMAT": "json"})
    docs = [json.loads(line) for line in after.stdout.splitlines()]
    assert [d["migration"] for d in docs[:-1]] == names
    assert {d["state"] for d in docs[:-1]} == {"applied"} and all("applied_at" in d for d in docs[:-1])
    assert docs[-1]["pending"] == 0 and docs[-1]["applied"] == len(names)


async def test_reconcile_json_and_exit_codes(pg_dsn: str, redis_url: str, workspace_id: str) -> None:
    from redis.asyncio import Redis

    env = cli_env(pg_dsn, redis_url)
    redis = Redis.from_url(redis_url)
    key = optout_key(workspace_id)
    try:
        await redis.sadd(key, "ghost")  # no such customer opted out in PostgreSQL
        check = await _cli("reconcile", "--check", "--json", "--workspace", workspace_id, env=env)
        assert check.returncode == 1, check.stderr
        report: dict[str, Any] = json.loads(check.stdout)
        assert report["check"] is True and report["repaired"] is False and report["drift"] == 1
        assert report["keys"] == [{"key": key, "missing": 0, "extra": 1, "sample_missing": [],
                                   "sample_extra": ["ghost"]}]
        assert await redis.sismember(key, "ghost")

        fix = await _cli("reconcile", "--json", "--workspace", workspace_id, env=env)
        assert fix.returncode == 0, fix.stderr
        fixed = json.loads(fix.stdout)
        assert fixed["repaired"] is True and fixed["drift"] == 1 and fixed["workspace"] == workspace_id
        assert not await redis.sismember(key, "ghost")

        clean = await _cli("reconcile", "--check", "--json", "--workspace", workspace_id, env=env)
        assert clean.returncode == 0 and json.loads(clean.stdout)["drift"] == 0
    finally:
        await redis.aclose()

    unreachable = cli_env(pg_dsn, "redis://127.0.0.1:1/0")
    down = await _cli("reconcile", "--check", "--json", env=unreachable)
    assert down.returncode == 2 and down.stdout == ""
    assert "cannot reach PostgreSQL or Redis" in down.stderr
    unset = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    assert (await _cli("reconcile", env=unset)).returncode == 2
