"""``segment-worker bench`` cannot rot: its workload is checked (pure), its seed against the SQL
evaluator, and the whole benchmark runs at tiny sizes on the session's real servers (< 30 s)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis
from rich.console import Console

from segment_worker.bench import baselines
from segment_worker.bench.chart import chart_available, write_chart
from segment_worker.bench.evaluator import RuleEvaluator
from segment_worker.bench.report import results_table, targets_table
from segment_worker.bench.results import Results, percentile, summarize
from segment_worker.bench.runner import BenchOptions, Ui, run_bench
from segment_worker.bench.seed import build_chunk, rules_document, seed_workspace
from segment_worker.bench.segments import kind_counts, segment_specs
from segment_worker.bench.servers import Servers
from segment_worker.bench.workload import WorkloadSpec, customer_events, stream_events
from segment_worker.cli.main import main
from segment_worker.config import Settings
from segment_worker.rules.timectx import TimeContext
from segment_worker.service.context import ServiceContext
from segment_worker.service.recompute import dynamic_segments
from segment_worker.service.workspaces import load_catalog
from segment_worker.stores.pg_customers import read_versions

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


# -- the workload (pure) ----------------------------------------------------------------------------


def test_stream_is_reproducible_and_has_the_issues_mix() -> None:
    spec = WorkloadSpec(customers=5000, events=20_000, seed=3)
    a = list(stream_events(spec, "ws", tag="t", start=NOW))
    assert a == list(stream_events(spec, "ws", tag="t", start=NOW))
    assert a != list(stream_events(spec, "ws", tag="u", start=NOW))
    kinds = Counter(e["type"] for e in a)
    share = {k: n / len(a) for k, n in kinds.items()}
    assert share["customer.attributes_set"] == pytest.approx(0.50, abs=0.02)
    assert share["customer.tags_added"] + share["customer.tags_removed"] == pytest.approx(0.20, abs=0.02)
    assert share["customer.interaction"] == pytest.approx(0.20, abs=0.02)
    assert share["customer.opt_out_set"] == pytest.approx(0.05, abs=0.01)
    assert share["customer.upserted"] == pytest.approx(0.05, abs=0.01)
    # Skewed keys: the hottest 1% of customers get about 30% of the events.
    hot = {f"c{i:07d}" for i in range(spec.hot_customers)}
    assert sum(e["customer_id"] in hot for e in a) / len(a) == pytest.approx(0.30, abs=0.03)
    assert len({e["event_id"] for e in a}) == len(a)


def test_segments_have_the_issues_mix() -> None:
    assert kind_counts(200) == {"broad": 5, "medium": 20, "time": 20, "swap": 1, "narrow": 154}
    specs = segment_specs(200, 42)
    assert specs == segment_specs(200, 42)
    assert len({s["name"].casefold() for s in specs}) == 200
    ops = {c["op"] for s in specs for c in _conditions(s["rules"])}
    # Every field type's operators appear, time-relative ones included.
    assert {"eq", "in", "between", "contains_any", "has", "is_false", "starts_with", "in_last_days",
            "anniversary_today", "not_contains_any"} <= ops
    nested = [json.dumps(s["rules"]) for s in specs]
    assert any('"not"' in n for n in nested) and any('"any"' in n and '"all"' in n for n in nested)


def _conditions(rule: dict[str, Any]) -> list[dict[str, Any]]:
    if "field" in rule:
        return [rule]
    if "not" in rule:
        return _conditions(rule["not"])
    return [c for sub in rule.get("all", rule.get("any", [])) for c in _conditions(sub)]


def test_segment_sizes_range_from_most_to_few_customers() -> None:
    spec = WorkloadSpec(customers=2000, segments=200, seed=42)
    from segment_worker.bench import seed as seed_mod

    seed_mod._compile(rules_document(spec))
    _, members = build_chunk(spec, "ws", 0, spec.customers, NOW, 12)
    sizes = Counter(k for m in members for k in m)
    kinds = [s["kind"] for s in segment_specs(200, 42)]
    share = [sizes[k] / spec.customers for k in range(200)]
    assert all(share[k] > 0.75 for k in range(200) if kinds[k] == "broad")
    assert 0.07 < share[kinds.index("swap")] < 0.13
    narrow = [share[k] for k in range(200) if kinds[k] == "narrow"]
    assert sum(v < 0.05 for v in narrow) > len(narrow) / 2  # many match few


def test_the_framework_evaluator_agrees_with_the_seeded_memberships() -> None:
    spec = WorkloadSpec(customers=200, segments=30, seed=5)
    from segment_worker.bench import seed as seed_mod

    doc = rules_document(spec)
    seed_mod._compile(doc)
    _, members = build_chunk(spec, "ws", 0, spec.customers, NOW, 4)
    ev = RuleEvaluator(doc)
    raw = [json.dumps(e).encode() for i in range(spec.customers) for e in customer_events(spec, "ws", i, NOW)]
    ev.run(raw, now=NOW)
    assert ev.events == len(raw) and ev.rejected == 0
    for i, segs in enumerate(members):
        bits = ev.members.get(("ws", f"c{i:07d}"), 0)
        assert {k for k in range(len(doc["segments"])) if bits >> k & 1} == set(segs)


def test_percentiles_and_targets() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    s = summarize([0.3, 0.1, 0.2])
    assert (s.count, s.p50, s.max) == (3, 0.2, 0.3)
    assert summarize([]).p99 is None
    r = Results(machine={}, command="x", options={"customers": 10})
    assert {t.met for t in r.targets()} == {None}  # nothing measured, nothing claimed


async def test_faust_baseline_is_skipped_without_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setattr(baselines, "faust_available", lambda: False)
    nowhere = Settings(kafka_bootstrap="127.0.0.1:1")
    b = await baselines.faust(nowhere, "t", 1, 10, rules_document(WorkloadSpec(segments=5)), tmp_path)
    assert b.skipped == "skipped: install .[bench] (faust-streaming)"
    assert not await asyncio.to_thread(lambda: any(tmp_path.iterdir()))  # nothing was started


def test_the_command_is_registered() -> None:
    out = CliRunner().invoke(main, ["bench", "--help"])
    assert out.exit_code == 0, out.output
    for option in ("--customers", "--segments", "--events", "--rate", "--profile", "--no-faust"):
        assert option in out.output


@pytest.mark.slow
@pytest.mark.skipif(not baselines.faust_available(), reason="needs the bench extra (faust-streaming)")
async def test_faust_baseline_runs_the_agent(kafka_bootstrap: str, unique_name: Any, tmp_path: Path) -> None:
    from segment_worker.bench.kafkaio import EventFile, produce_all
    from segment_worker.kafka import ensure_topics, producer

    spec = WorkloadSpec(customers=200, segments=10, events=1500, seed=1)
    topic = unique_name("bench-faust")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_events=topic, input_partitions=2,
                        topic_membership=unique_name("m"), topic_dlq=unique_name("d"))
    await ensure_topics(settings)
    events = await asyncio.to_thread(EventFile.write, tmp_path / "e.bin",
                                     stream_events(spec, "ws", tag="f", start=NOW))
    async with producer(settings) as prod:
        await produce_all(prod, topic, events.records())
    b = await baselines.faust(settings, topic, 2, events.count, rules_document(spec), tmp_path / "f")
    assert b.skipped is None, b.skipped
    assert b.events == 1500 and b.per_second > 0 and b.extra["transitions"] > 0


# -- the seed, against the SQL evaluator ---------------------------------------------------------


async def test_bulk_seed_equals_what_sql_computes(pg_server_dsn: str, redis_url: str) -> None:
    servers = Servers.given(pg_server_dsn, redis_url, "unused:9092")
    spec = WorkloadSpec(customers=300, segments=25, seed=9)
    ws = f"bench-seedcheck-{time.time_ns()}"
    try:
        dsn = await servers.create_database(f"sw_bench_seedcheck_{time.time_ns() % 10**9}")
        ctx = await ServiceContext.open(Settings(database_url=dsn, redis_url=redis_url, input_partitions=4))
        try:
            seed = await seed_workspace(ctx, spec, ws, datetime.now(UTC), 4)
            catalog = await load_catalog(ctx.pool, ws)
            tctx = TimeContext.at(seed.seeded_at, catalog.timezone)
            async with ctx.pool.acquire() as conn:
                segments = await dynamic_segments(conn, ws, catalog)
            assert len(segments) == spec.segments
            for seg in segments:
                where, params = seg.compiled.sql_where(tctx, 2)
                want = {r[0] for r in await ctx.pool.fetch(
                    "SELECT customer_id FROM customers c WHERE c.workspace_id = $1 AND NOT c.deleted"
                    f" AND ({where})", ws, *params)}
                got = {r[0] for r in await ctx.pool.fetch(
                    "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", seg.id)}
                assert got == want, seg.name
                raw = await ctx.redis.smembers(f"sw:{{{ws}}}:seg:{seg.id}")
                redis_members = {m.decode() if isinstance(m, bytes) else m for m in raw}
                assert redis_members == want, seg.name
            assert seed.memberships == await ctx.pool.fetchval("SELECT count(*) FROM segment_memberships")
            # The same customers seeded with the workers' other versions format store the same
            # versions, grouped (the bench's customers start as the workers would store them).
            grouped_settings = ctx.settings.model_copy(update={"versions_format": "grouped"})
            grouped = await ServiceContext.open(grouped_settings)
            try:
                await seed_workspace(grouped, spec, ws + "-g", seed.seeded_at, 4)
            finally:
                await grouped.close()
            stored = {
                (r[0], r[1]): r[2]
                for r in await ctx.pool.fetch(
                    "SELECT workspace_id, customer_id, versions FROM customers"
                    " WHERE workspace_id IN ($1, $2)",
                    ws,
                    ws + "-g",
                )
            }
            mine = {cid: v for (w, cid), v in stored.items() if w == ws}
            assert len(mine) == spec.customers and all(isinstance(v, dict) and v for v in mine.values())
            for cid, v in mine.items():
                assert isinstance(stored[(ws + "-g", cid)], list)
                assert read_versions(stored[(ws + "-g", cid)]) == read_versions(v)
        finally:
            for w in (ws, ws + "-g"):
                keys = [k async for k in ctx.redis.scan_iter(match=f"sw:{{{w}}}:*")]
                if keys:
                    await ctx.redis.delete(*keys)
            await ctx.close()
    finally:
        await servers.drop_databases()


# -- the whole bench, tiny ------------------------------------------------------------------------


async def test_bench_smoke(
    pg_server_dsn: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    spec = WorkloadSpec(customers=300, segments=25, events=2000, seed=7)
    options = BenchOptions(
        spec=spec, rate=150, latency_seconds=2, partitions=4, tick_seconds=0.5, flips=20, flip_lead=2.0,
        scale_workers=2, upsert_events=2000, faust=False, worker_args=("--session-timeout-ms", "2000"),
        profile_output=tmp_path / "profile.txt",
    )
    started = time.monotonic()
    r = await run_bench(options, Ui(), "segment-worker bench (test)",
                        Servers.given(pg_server_dsn, redis_url, kafka_bootstrap))
    elapsed = time.monotonic() - started

    assert [t.workers for t in r.throughput] == [1, 2]
    for t in r.throughput:
        assert t.events == 2000 and t.events_per_second > 0 and t.transitions > 0
        assert t.timeline[-1][1] == 2000  # every record committed by the end
        assert t.peak_rss and min(t.peak_rss) > 10 * 2**20
        assert t.cpu_seconds["workers"] > 0
    assert r.latency and r.latency[0].samples > 0
    lat = r.latency[0].summary
    assert lat.p50 is not None and lat.max is not None and 0 < lat.p50 <= lat.max
    rc = r.rule_change
    assert rc is not None
    assert 0.03 * spec.customers < rc.create.entered < 0.2 * spec.customers and rc.create.exited == 0
    assert rc.edit.entered > 0 and rc.edit.exited > 0
    assert rc.create.api_seconds <= rc.create.emitted_seconds
    tk = r.ticks
    assert tk is not None and tk.flips_seen == tk.flips == 20 and tk.ticks > 0
    assert tk.delay.max is not None and tk.delay.max < 3 * options.tick_seconds + 2
    assert r.audience is not None and 0 < r.audience.count <= r.audience.members_in
    by_name = {b.name: b for b in r.baselines}
    assert by_name["kafka-consume"].events == 2000
    assert by_name["pg-upsert"].extra["rows"] > 0
    assert by_name["batch-sql"].extra["memberships"] > 0
    assert by_name["faust"].skipped == "skipped: --no-faust"

    # The report: JSON, tables, chart.
    doc = json.loads(json.dumps(r.to_json()))
    names = {t["name"] for t in doc["targets"]}
    assert names >= {
        "1 worker vs faust agent", "1 worker vs batched upsert ceiling", "PostgreSQL CPU per event, 1 worker",
        "worker CPU per event, 1 worker", "latency p99", "rule change", "time flips visible", "worker RSS",
    }
    measured = {t["name"]: t for t in doc["targets"]}
    assert measured["1 worker vs batched upsert ceiling"]["met"] is not None  # both measured here
    assert measured["worker CPU per event, 1 worker"]["measured"].endswith(" µs")
    console = Console(file=io.StringIO(), width=140)
    console.print(results_table(r))
    console.print(targets_table(r))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "end-to-end, 2 workers" in text and "baseline: batch-sql" in text
    if chart_available():
        assert write_chart(r, tmp_path / "chart.png")
        assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"

    # Nothing left behind: the workspace's Redis keys and the bench's databases are gone.
    ws = r.seed["workspace_id"]
    redis = Redis.from_url(redis_url)
    try:
        assert [k async for k in redis.scan_iter(match=f"sw:{{{ws}}}:*")] == []
    finally:
        await redis.aclose()
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname LIKE $1",
                                    f"sw_bench_{ws.removeprefix('bench-')}_%")
    finally:
        await admin.close()
    assert left == 0
    assert elapsed < 60, r.phase_seconds  # the smoke run stays small (target: under 30 s)


async def test_bench_skip_leaves_phases_out(
    pg_server_dsn: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    from segment_worker.bench.results import SKIPPABLE

    options = BenchOptions(
        spec=WorkloadSpec(customers=100, segments=10, events=300, seed=3), partitions=2, scale_workers=1,
        faust=False, worker_args=("--session-timeout-ms", "2000"), skip=SKIPPABLE,
        profile_output=tmp_path / "profile.txt",
    )
    r = await run_bench(options, Ui(), "segment-worker bench (test)",
                        Servers.given(pg_server_dsn, redis_url, kafka_bootstrap))
    assert [t.workers for t in r.throughput] == [1] and r.throughput[0].events == 300
    assert r.latency == [] and r.rule_change is None and r.ticks is None and r.audience is None
    assert [b.name for b in r.baselines] == ["faust"]  # skipped, and said so
    console = Console(file=io.StringIO(), width=140)
    console.print(results_table(r))
    console.print(targets_table(r))
    assert "not measured" in console.file.getvalue()  # type: ignore[attr-defined]
