"""``segment-worker reconcile`` (a real process) on a Redis Cluster: drift on each of the three
masters is found (SCAN of every master: stray keys included), ``--check`` exits 1 and changes
nothing, a plain run repairs, and ``--check`` then exits 0. Audiences (MULTI/EXEC of
SUNIONSTORE/SDIFFSTORE in one workspace's slot) are built on the cluster."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from redis.crc import key_slot

from helpers.redis_cluster import RedisClusterProcesses
from helpers.service import opt_out, seed, tags, upsert
from segment_worker.service.audiences import create_audience
from segment_worker.service.context import ServiceContext
from segment_worker.service.members import add_members
from segment_worker.service.segments import create_segment
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.stores.redis import read_set


async def _reconcile(*args: str, database_url: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    env |= {"SEGMENT_WORKER_DATABASE_URL": database_url, "SEGMENT_WORKER_REDIS_URL": redis_url}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "segment_worker.cli", "reconcile", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


async def test_reconcile_finds_and_repairs_drift_on_every_master(
    cluster_ctx: ServiceContext, redis_cluster: RedisClusterProcesses, cluster_pg_dsn: str
) -> None:
    ctx, url = cluster_ctx, redis_cluster.url
    # One workspace per master: each one's keys live on its own node.
    spaces = [redis_cluster.workspace_on(node, "rc") for node in redis_cluster.nodes]
    truth: dict[str, set[str]] = {}
    drift_lines: list[str] = []
    for ws in spaces:
        await seed(ctx, ws, {"c1": [upsert(name="Ann"), tags("vip")], "c2": [tags("vip"), opt_out()],
                             "c3": [upsert(name="Cy")]})
        vips = await create_segment(ctx, ws, name="VIPs", type="dynamic",
                                    rules={"field": "tags", "op": "has", "value": "vip"})
        listed = await create_segment(ctx, ws, name="List", type="static")
        await add_members(ctx, ws, listed.id, ["c3"])
        vip_key, list_key = segment_key(ws, vips.id), segment_key(ws, listed.id)
        stray = segment_key(ws, uuid.uuid4())
        truth |= {vip_key: {"c1", "c2"}, list_key: {"c3"}, optout_key(ws): {"c2"}, stray: set()}
        assert {k: await read_set(ctx.redis, k) for k in (vip_key, list_key, optout_key(ws))} == {
            vip_key: {"c1", "c2"}, list_key: {"c3"}, optout_key(ws): {"c2"}}  # the writers got it right
        await ctx.redis.srem(vip_key, "c1")
        await ctx.redis.sadd(vip_key, "ghost")
        await ctx.redis.delete(list_key)
        await ctx.redis.sadd(stray, "s1")  # only a SCAN of this workspace's master finds it
        drift_lines += [f"{vip_key}: 1 missing ['c1'], 1 extra ['ghost']",
                        f"{list_key}: 1 missing ['c3'], 0 extra []", f"{stray}: 0 missing [], 1 extra ['s1']"]
    # The three workspaces really are on three masters.
    assert len({redis_cluster.node_of_slot(key_slot(ws.encode())).port for ws in spaces}) == 3
    drifted = {k: await read_set(ctx.redis, k) for k in truth}

    check = await _reconcile("--check", database_url=cluster_pg_dsn, redis_url=url)
    assert check.returncode == 1, check.stdout + check.stderr
    for line in drift_lines:
        assert line in check.stdout, check.stdout
    assert {k: await read_set(ctx.redis, k) for k in truth} == drifted  # --check changed nothing

    fix = await _reconcile(database_url=cluster_pg_dsn, redis_url=url)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert all(line in fix.stdout for line in drift_lines), fix.stdout
    assert {k: await read_set(ctx.redis, k) for k in truth} == truth

    again = await _reconcile("--check", database_url=cluster_pg_dsn, redis_url=url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no drift" in again.stdout


async def test_audiences_on_the_cluster(
    cluster_ctx: ServiceContext, redis_cluster: RedisClusterProcesses
) -> None:
    ctx = cluster_ctx
    for node in redis_cluster.nodes[:2]:
        ws = redis_cluster.workspace_on(node, "aud")
        await seed(ctx, ws, {"a": [tags("vip")], "b": [tags("vip", "lead")], "c": [tags("lead"), opt_out()],
                             "d": [upsert(name="Dee")]})
        vip = await create_segment(ctx, ws, name="VIP", type="dynamic",
                                   rules={"field": "tags", "op": "has", "value": "vip"})
        lead = await create_segment(ctx, ws, name="Lead", type="dynamic",
                                    rules={"field": "tags", "op": "has", "value": "lead"})
        reachable = await create_audience(ctx, ws, [str(vip.id), str(lead.id)])
        everyone = await create_audience(ctx, ws, [str(vip.id), str(lead.id)], exclude_opted_out=False)
        assert (reachable.count, everyone.count) == (2, 3)
        assert await read_set(ctx.redis, reachable.redis_key) == {"a", "b"}
        assert await read_set(ctx.redis, everyone.redis_key) == {"a", "b", "c"}
        assert 0 < await ctx.redis.ttl(reachable.redis_key) <= ctx.settings.audience_ttl_seconds
        assert redis_cluster.node_of_slot(key_slot(reachable.redis_key.encode())) is node
