"""`segment-worker reconcile` as an operator runs it (a real process) against drift injected into
Redis: `--check` reports and changes nothing (exit 1), a plain run repairs (exit 0), then `--check`
finds nothing (exit 0)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from helpers.service import opt_out, seed, tags, upsert
from segment_worker.cli.main import main
from segment_worker.service.context import ServiceContext
from segment_worker.service.members import add_members
from segment_worker.service.segments import create_segment
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.stores.reconcile import rebuild_and_diff
from segment_worker.stores.redis import read_set


async def _reconcile(*args: str, database_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    env |= {"SEGMENT_WORKER_DATABASE_URL": database_url, "SEGMENT_WORKER_REDIS_URL": redis_url}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "segment_worker.cli", "reconcile", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


async def _snapshot(redis: Redis, keys: list[str]) -> dict[str, set[str]]:
    return {k: await read_set(redis, k) for k in keys}


async def test_check_reports_drift_and_changes_nothing_then_reconcile_repairs(
    ctx: ServiceContext, workspace_id: str, pg_dsn: str, redis_url: str
) -> None:
    ws, other = workspace_id, f"{workspace_id}-other"
    await seed(ctx, ws, {
        "c1": [upsert(name="Ann"), tags("vip")],
        "c2": [tags("vip"), opt_out()],
        "c3": [upsert(name="Cy")],
    })
    vips = await create_segment(ctx, ws, name="VIPs", type="dynamic",
                                rules={"field": "tags", "op": "has", "value": "vip"})
    listed = await create_segment(ctx, ws, name="List", type="static")
    await add_members(ctx, ws, listed.id, ["c3"])
    await seed(ctx, other, {"o1": [opt_out()]})
    vip_key, list_key, opt_key = segment_key(ws, vips.id), segment_key(ws, listed.id), optout_key(ws)
    stray_key = segment_key(ws, uuid.uuid4())  # a set no segment in PostgreSQL explains
    truth = {vip_key: {"c1", "c2"}, list_key: {"c3"}, opt_key: {"c2"}, stray_key: set()}
    keys = list(truth)
    assert await _snapshot(ctx.redis, keys) == truth  # the writers left Redis right

    # Drift of every kind: missing and extra members, a lost key, a stray key, and another
    # workspace's drift that a --workspace run must leave alone.
    await ctx.redis.srem(vip_key, "c1")
    await ctx.redis.sadd(vip_key, "ghost")
    await ctx.redis.delete(list_key)
    await ctx.redis.sadd(opt_key, "c1")
    await ctx.redis.sadd(stray_key, "s1", "s2")
    await ctx.redis.sadd(optout_key(other), "ghost-other")
    drifted = await _snapshot(ctx.redis, keys)

    check = await _reconcile("--check", "--workspace", ws, database_url=pg_dsn, redis_url=redis_url)
    assert check.returncode == 1, check.stderr
    out = check.stdout
    assert f"{vip_key}: 1 missing ['c1'], 1 extra ['ghost']" in out
    assert f"{list_key}: 1 missing ['c3'], 0 extra []" in out
    assert f"{opt_key}: 0 missing [], 1 extra ['c1']" in out
    assert f"{stray_key}: 0 missing [], 2 extra ['s1', 's2']" in out
    assert "drift found" in out and "4 of" in out and "nothing changed" in out
    assert optout_key(other) not in out  # only the asked workspace was looked at
    assert await _snapshot(ctx.redis, keys) == drifted  # --check repaired nothing

    fix = await _reconcile("--workspace", ws, database_url=pg_dsn, redis_url=redis_url)
    assert fix.returncode == 0, fix.stderr
    assert f"{vip_key}: 1 missing ['c1'], 1 extra ['ghost']" in fix.stdout
    assert "drift repaired in 4 of" in fix.stdout
    assert await _snapshot(ctx.redis, keys) == truth
    assert not await ctx.redis.exists(stray_key)
    assert await read_set(ctx.redis, optout_key(other)) == {"o1", "ghost-other"}  # not its workspace

    again = await _reconcile("--check", "--workspace", ws, database_url=pg_dsn, redis_url=redis_url)
    assert again.returncode == 0, again.stderr
    assert "no drift" in again.stdout

    await ctx.redis.srem(optout_key(other), "ghost-other")


async def test_progress_is_reported_per_key(ctx: ServiceContext, workspace_id: str) -> None:
    await seed(ctx, workspace_id, {"c1": [tags("a")], "c2": [opt_out()]})
    for name in ("A", "B"):
        await create_segment(ctx, workspace_id, name=name, type="dynamic",
                             rules={"field": "tags", "op": "has", "value": "a"})
    calls: list[tuple[int, int]] = []
    report = await rebuild_and_diff(ctx.pool, ctx.redis, workspace_id, repair=False,
                                    progress=lambda done, total: calls.append((done, total)))
    assert report.keys_checked == 3 and not report.has_drift  # two segment sets and the opt-out set
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_reconcile_names_what_is_missing_or_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(f"SEGMENT_WORKER_{name}", raising=False)
    unset = CliRunner().invoke(main, ["reconcile", "--check"])
    assert unset.exit_code == 2  # a failure, not drift (1)
    assert "SEGMENT_WORKER_DATABASE_URL and SEGMENT_WORKER_REDIS_URL must be set" in unset.output

    monkeypatch.setenv("SEGMENT_WORKER_DATABASE_URL", "postgresql://x@127.0.0.1:1/x")
    monkeypatch.setenv("SEGMENT_WORKER_REDIS_URL", "redis://127.0.0.1:1/0")
    bad = CliRunner().invoke(main, ["reconcile", "--workspace", "a:b"])
    assert bad.exit_code == 2
    assert "must not contain ':'" in bad.output
