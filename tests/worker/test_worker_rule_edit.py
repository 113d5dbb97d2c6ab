"""A dynamic segment's rules edited twice through the service layer (widened, then narrowed)
while the worker processes a live stream of mixed events (real Kafka, PostgreSQL, Redis).

Each edit's ``rules_changed`` transitions must be exactly the diff of the membership just before
and just after it (entered = new − old, exited = old − new, seq = previous seq + 1), the membership
after it the NEW rule (Python evaluator) over the stored states at that moment; once the stream
drains, Redis == PostgreSQL == the evaluator and the enter/exit events alternate.

Why the observation is exact while the producer keeps producing: it is made inside the edit's own
unit of work. ``update_segment`` takes every partition lock, opens its transaction, then recomputes;
a pass-through wrapper around that recompute reads the membership rows and the customers' states on
the edit's connection right before and right after the real statement. No worker batch can commit
in between (each batch locks its partitions; the edit holds all of them, checked in ``pg_locks``),
so these are exactly the states the edit worked from and the membership it left. A snapshot from
outside — even under ``locked_partitions`` — leaves a gap between releasing our locks and the edit
taking them in which a batch can commit; pausing the stream closes it but takes the load away. The
wrapper also holds the edit until a worker batch queues behind its locks, so the edit really
contends with the stream. The observation is cross-checked with the durable history (the edit's
committed rows; the membership replayed from the transitions committed before it, whose ids follow
commit order under the partition locks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from helpers.harness import WorkerHarness
from helpers.kafka_io import read_topic
from helpers.scenario import (
    MIXED_ATTRIBUTES,
    MIXED_SEGMENTS,
    Workspace,
    check_consistency,
    create_workspace,
    encode,
    expected_members,
    final_states,
    mixed_events,
    wait_caught_up,
)
from segment_worker.config import Settings
from segment_worker.kafka import producer
from segment_worker.rules.compiled import CompiledRule, compile_rule
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule
from segment_worker.service import recompute as recompute_module
from segment_worker.service import segments as segments_service
from segment_worker.service.context import ServiceContext
from segment_worker.service.workspaces import all_partitions
from segment_worker.state import CustomerState
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import segment_key
from segment_worker.stores.redis import read_set
from segment_worker.stores.unit import SW_LOCK_CLASS, locked_partitions

pytestmark = pytest.mark.timeout(120)

CUSTOMERS = 300
CHUNK = 40  # events per send; with PAUSE about 1,600 events/s: the worker keeps up, never idles long
PAUSE = 0.025
STREAM_LIMIT = 12_000  # not reached: the stream runs until the test stops it
APPLIED_BEFORE_EACH_EDIT = 1200  # events the worker applies between stream start, edit 1, edit 2, end

EDITED = "Edited under load"
INITIAL_RULE: dict[str, Any] = {"field": "attributes.score", "op": "gte", "value": 50}
# (label, rule, kinds the diff must contain). The widened rule is a superset of the initial one, so
# it can only add members; the narrowed one keeps fewer customers but admits some the widened rule
# did not (gold/silver customers without a score), so its diff has both kinds.
SCORE_20 = {"field": "attributes.score", "op": "gte", "value": 20}
LEAD = {"field": "tags", "op": "has", "value": "lead"}
GOLD_OR_SILVER = {"field": "attributes.tier", "op": "in", "value": ["gold", "silver"]}
NOT_UNDER_40 = {"not": {"field": "attributes.score", "op": "lt", "value": 40}}
EDITS: tuple[tuple[str, dict[str, Any], frozenset[str]], ...] = (
    ("widen", {"any": [SCORE_20, LEAD]}, frozenset({"entered"})),
    ("narrow", {"all": [GOLD_OR_SILVER, NOT_UNDER_40]}, frozenset({"entered", "exited"})),
)


class Stream:
    """A producer task sending mixed events in small paced chunks until stopped."""

    def __init__(self, bootstrap: str, topic: str, ws: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._records = [encode(e) for e in mixed_events(ws, CUSTOMERS, STREAM_LIMIT, seed=11)]
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.produced = 0
        self.ends: dict[int, int] = {}

    def start(self) -> Stream:
        self._task = asyncio.create_task(self._run())
        return self

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        async with producer(Settings(kafka_bootstrap=self._bootstrap), linger_ms=5) as prod:
            while not self._stop.is_set() and self.produced < len(self._records):
                chunk = self._records[self.produced : self.produced + CHUNK]
                futures = [await prod.send(self._topic, value=v, key=k) for k, v in chunk]
                for meta in await asyncio.gather(*futures):
                    self.ends[meta.partition] = max(self.ends.get(meta.partition, 0), meta.offset + 1)
                self.produced += len(chunk)
                await asyncio.sleep(PAUSE)

    async def stop(self) -> dict[int, int]:
        """Stop producing (surfacing any error of the task); answers the log end per partition."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)
        return dict(self.ends)


Rows = dict[str, tuple[bool, int]]  # customer → (is_member, seq): every membership row of a segment


async def membership_rows(conn: asyncpg.Connection, segment_id: UUID) -> Rows:
    rows = await conn.fetch(
        "SELECT customer_id, is_member, seq FROM memberships WHERE segment_id = $1", segment_id
    )
    return {r["customer_id"]: (r["is_member"], r["seq"]) for r in rows}


def members(rows: Rows) -> set[str]:
    return {c for c, (is_member, _) in rows.items() if is_member}


@dataclass(repr=False)
class EditSeen:
    """What one edit saw inside its own transaction, and around the call."""

    label: str
    rule: CompiledRule
    wanted_kinds: frozenset[str]
    locks_held: set[int] = field(default_factory=set)
    partitions: set[int] = field(default_factory=set)
    in_transaction: bool = False
    before: Rows = field(default_factory=dict)
    after: Rows = field(default_factory=dict)
    states: list[CustomerState] = field(default_factory=list)
    now: datetime | None = None
    returned: int = -1  # what the recompute answered: how many customers entered or exited
    worker_waited: bool = False  # a worker unit queued behind the edit's locks
    held_s: float = 0.0  # how long the edit waited for it
    produced_at_call: int = 0
    produced_at_return: int = 0
    stream_running_at_return: bool = False
    member_count: int = -1
    updated_at: datetime | None = None


async def _until_a_unit_waits(conn: asyncpg.Connection, limit_s: float = 3.0) -> bool:
    """Hold the edit (its locks taken) until another session of this database waits for a
    partition lock — a worker batch with records in hand — so the edit really contends with the
    stream instead of slipping in while the worker idles. Answers whether one did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = $1 AND objsubid = 2 AND pid <> pg_backend_pid()"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            SW_LOCK_CLASS,
        )
        if waiting or loop.time() > deadline:
            return bool(waiting)
        await asyncio.sleep(0.01)


class EditObserver:
    """Wraps ``service.segments.recompute`` (the real statement still runs) to read the edited
    segment's rows and the customers' states on the edit's connection right before and after it."""

    def __init__(self, segment_id: UUID, settings: Settings) -> None:
        self._sid = segment_id
        self._settings = settings
        self._real = recompute_module.recompute
        self.current: EditSeen | None = None

    async def __call__(
        self,
        conn: asyncpg.Connection,
        workspace_id: str,
        segment_id: UUID,
        segment_name: str,
        compiled: CompiledRule,
        tctx: TimeContext,
        at: datetime,
        **kwargs: Any,
    ) -> int:
        seen = self.current
        if seen is None or segment_id != self._sid:
            return await self._real(
                conn, workspace_id, segment_id, segment_name, compiled, tctx, at, **kwargs
            )
        seen.in_transaction = conn.is_in_transaction()
        seen.locks_held = {
            r["objid"]
            for r in await conn.fetch(
                "SELECT objid::int FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
                " AND classid = $1 AND objsubid = 2 AND granted",
                SW_LOCK_CLASS,
            )
        }
        seen.partitions = set(await all_partitions(conn, self._settings))
        seen.before = await membership_rows(conn, segment_id)
        seen.states = await final_states(conn, workspace_id)
        seen.now = tctx.now
        t0 = time.perf_counter()
        seen.worker_waited = await _until_a_unit_waits(conn)
        seen.held_s = time.perf_counter() - t0
        seen.returned = await self._real(
            conn, workspace_id, segment_id, segment_name, compiled, tctx, at, **kwargs
        )
        seen.after = await membership_rows(conn, segment_id)
        return seen.returned


@dataclass
class Snapshot:
    """Segment → (PostgreSQL members, Redis members, evaluator's members), read under every lock."""

    segments: dict[UUID, tuple[set[str], set[str], set[str]]]
    pending_ops: int


async def locked_snapshot(ctx: ServiceContext, ws: Workspace) -> Snapshot:
    """Every segment of ``ws`` as stored, in Redis, and as the evaluator computes it over the stored
    states — read while holding every partition lock, so no unit is half-way (Redis is applied
    before a unit unlocks)."""
    async with ctx.pool.acquire() as c:
        parts = await all_partitions(c, ctx.settings)
    async with locked_partitions(ctx.pool, parts) as conn:
        states = await final_states(conn, ws.id)
        expected = expected_members(ws, states, datetime.now(UTC))
        out: dict[UUID, tuple[set[str], set[str], set[str]]] = {}
        for sid, want in expected.items():
            stored = members(await membership_rows(conn, sid))
            out[sid] = (stored, await read_set(ctx.redis, segment_key(ws.id, sid)), want)
        # Committed Redis ops not applied: redis_ops rows, transitions past their Redis cursor.
        pending = await conn.fetchval(
            "SELECT (SELECT count(*) FROM redis_ops WHERE key = ANY($1::text[]))"
            " + (SELECT count(*) FROM transitions t LEFT JOIN redis_cursors c ON c.partition = t.partition"
            "    WHERE t.segment_id = ANY($2::uuid[]) AND t.id > COALESCE(c.applied_id, 0))",
            [segment_key(ws.id, sid) for sid in ws.rules],
            list(ws.rules),
        )
    return Snapshot(out, pending)


async def edit(
    ctx: ServiceContext,
    ws: Workspace,
    observer: EditObserver,
    stream: Stream,
    label: str,
    doc: dict[str, Any],
    kinds: frozenset[str],
) -> EditSeen:
    """``update_segment`` with new rules, observed; the evaluator follows the segment afterwards."""
    sid = ws.segments[EDITED]
    seen = observer.current = EditSeen(label, compile_rule(parse_rule(doc, ws.catalog), ws.catalog), kinds)
    seen.produced_at_call = stream.produced
    seg = await segments_service.update_segment(ctx, ws.id, sid, rules=doc)
    seen.produced_at_return, seen.stream_running_at_return = stream.produced, stream.running
    seen.member_count, seen.updated_at = seg.member_count, seg.updated_at
    observer.current = None
    ws.rules[sid] = seen.rule
    return seen


@dataclass(repr=False)  # a failed assertion must not print thousands of records
class Run:
    ws: Workspace
    settings: Settings
    segment_id: UUID
    edits: list[EditSeen]
    after_edit: list[Snapshot]
    history: list[dict[str, Any]]  # every transition of the workspace, in id order
    output: list[Any]
    produced: int
    applied: float
    failures: float
    seconds: float


@pytest.fixture(scope="module")
async def run(kafka_bootstrap: str, pg_dsn: str, redis_url: str) -> AsyncIterator[Run]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=pg_dsn,
        redis_url=redis_url,
        topic_events=f"edit-in-{tag}",
        topic_membership=f"edit-out-{tag}",
        topic_dlq=f"edit-dlq-{tag}",
        consumer_group=f"edit-{tag}",
        input_partitions=4,
        tick_seconds=1,
    )
    ctx = await ServiceContext.open(settings)
    try:
        raw = await asyncpg.connect(pg_dsn)
        try:
            ws = await create_workspace(
                raw,
                f"ws-edit-{tag}",
                attributes=MIXED_ATTRIBUTES,
                segments={**MIXED_SEGMENTS, EDITED: INITIAL_RULE},
            )
        finally:
            await raw.close()
        sid = ws.segments[EDITED]
        observer = EditObserver(sid, settings)
        t0 = time.perf_counter()
        async with WorkerHarness(settings) as h:
            stream = Stream(kafka_bootstrap, settings.topic_events, ws.id).start()

            async def applied_at_least(n: float) -> None:
                def reached() -> bool:
                    if not stream.running:
                        raise AssertionError("the stream stopped early")  # surfaces below via stop()
                    return h.metric("segment_worker_events_processed_total", {"outcome": "applied"}) >= n

                await h.wait_for(reached, 30, f"{n} events not applied")

            edits: list[EditSeen] = []
            snapshots: list[Snapshot] = []
            try:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(segments_service, "recompute", observer)
                    for i, (label, doc, kinds) in enumerate(EDITS, start=1):
                        await applied_at_least(i * APPLIED_BEFORE_EACH_EDIT)
                        edits.append(await edit(ctx, ws, observer, stream, label, doc, kinds))
                        snapshots.append(await locked_snapshot(ctx, ws))
                    await applied_at_least((len(EDITS) + 1) * APPLIED_BEFORE_EACH_EDIT)
            finally:
                ends = await stream.stop()
            async with ctx.pool.acquire() as conn:
                await wait_caught_up(
                    conn, settings.consumer_group, settings.topic_events, ends, workspace_id=ws.id
                )
            applied = h.metric("segment_worker_events_processed_total", {"outcome": "applied"})
            # Any failed batch, tick or send: an edit under load must not make the worker stumble
            # (a stale cache would show up here as refused transitions and re-read batches).
            failures = sum(
                s.value
                for m in h.registry.collect()
                for s in m.samples
                if s.name in ("segment_worker_errors_total", "segment_worker_fenced_total")
            )
        seconds = time.perf_counter() - t0
        history = [
            dict(r)
            for r in await ctx.pool.fetch(
                "SELECT id, segment_id, customer_id, seq, kind, cause, at FROM transitions"
                " WHERE workspace_id = $1 ORDER BY id",
                ws.id,
            )
        ]
        output = await read_topic(kafka_bootstrap, settings.topic_membership)
        yield Run(
            ws, settings, sid, edits, snapshots, history, output, stream.produced, applied, failures, seconds
        )
    finally:
        await ctx.close()


def edit_rows(run: Run, seen: EditSeen) -> list[dict[str, Any]]:
    """The committed ``transitions`` rows of one edit (its cause and its unit's time)."""
    return [
        t
        for t in run.history
        if t["segment_id"] == run.segment_id
        and t["cause"] == {"kind": "rules_changed"}
        and t["at"] == seen.updated_at
    ]


def edit_ids(run: Run, seen: EditSeen) -> tuple[int, int]:
    ids = [t["id"] for t in edit_rows(run, seen)]
    assert ids, f"{seen.label}: no committed rules_changed transition"
    return min(ids), max(ids)


async def test_each_edit_runs_under_every_partition_lock_while_the_stream_flows(run: Run) -> None:
    assert len(run.edits) == len(EDITS)
    for seen in run.edits:
        assert seen.in_transaction, f"{seen.label}: the recompute ran outside a transaction"
        assert set(range(run.settings.input_partitions)) <= seen.partitions
        assert seen.locks_held == seen.partitions, (
            f"{seen.label}: locks {seen.locks_held} != {seen.partitions}"
        )
        assert seen.worker_waited, f"{seen.label}: no worker unit queued behind the edit"
        # The stream was live around the edit: producing when it was called, still running when
        # it returned, and producing after.
        assert 0 < seen.produced_at_call and seen.stream_running_at_return
        assert run.produced > seen.produced_at_return
        # The worker committed events on both sides of the edit, and nothing of the workspace
        # committed inside it (ids follow commit order under the partition locks).
        lo, hi = edit_ids(run, seen)
        own = {t["id"] for t in edit_rows(run, seen)}
        kinds = [t["cause"]["kind"] for t in run.history]
        assert any(k == "event" and t["id"] < lo for k, t in zip(kinds, run.history, strict=True))
        assert any(k == "event" and t["id"] > hi for k, t in zip(kinds, run.history, strict=True))
        inside = [t for t in run.history if lo <= t["id"] <= hi and t["id"] not in own]
        assert not inside, f"{seen.label}: {inside[:3]} committed inside the edit"


async def test_each_edit_emits_exactly_the_membership_diff_of_the_new_rule(run: Run) -> None:
    for seen in run.edits:
        rows = edit_rows(run, seen)
        committed = {(t["customer_id"], t["seq"], t["kind"]) for t in rows}
        assert len(committed) == len(rows) == len({t["customer_id"] for t in rows})
        assert len(committed) == seen.returned
        old, new = members(seen.before), members(seen.after)
        entered = {c for c, _, k in committed if k == "entered"}
        exited = {c for c, _, k in committed if k == "exited"}
        assert entered == new - old, f"{seen.label}: entered {sorted(entered ^ (new - old))[:5]} differ"
        assert exited == old - new, f"{seen.label}: exited {sorted(exited ^ (old - new))[:5]} differ"
        assert {k for _, _, k in committed} == seen.wanted_kinds, (
            f"{seen.label}: {len(entered)}/{len(exited)}"
        )
        for cid, seq, kind in committed:
            assert seq == seen.before.get(cid, (False, 0))[1] + 1, f"{seen.label}: {cid} seq {seq}"
            assert seen.after[cid] == (kind == "entered", seq)
        untouched = set(seen.after) - entered - exited
        assert {c: seen.after[c] for c in untouched} == {c: seen.before[c] for c in untouched}
        # The new membership is the NEW rule (Python evaluator) over the states the edit saw.
        assert seen.now is not None
        alone = dataclasses.replace(
            run.ws, segments={EDITED: run.segment_id}, rules={run.segment_id: seen.rule}
        )
        want = expected_members(alone, seen.states, seen.now)[run.segment_id]
        assert new == want, f"{seen.label}: {sorted(new ^ want)[:5]} differ from the evaluator"
        assert seen.member_count == len(want)
        print(
            f"\n{seen.label}: {len(old)} → {len(new)} members, +{len(entered)} −{len(exited)};"
            f" a worker unit queued behind it after {seen.held_s * 1000:.0f} ms",
            end="",
        )


async def test_the_history_committed_before_each_edit_is_what_the_edit_saw(run: Run) -> None:
    """Replaying every transition of the segment committed before an edit gives the rows the edit
    found, and each of its transitions continues the pair's previous one."""
    mine = [t for t in run.history if t["segment_id"] == run.segment_id]
    for seen in run.edits:
        lo, _ = edit_ids(run, seen)
        replayed: Rows = {t["customer_id"]: (t["kind"] == "entered", t["seq"]) for t in mine if t["id"] < lo}
        assert replayed == seen.before, seen.label
        for t in edit_rows(run, seen):
            was_member, seq = replayed.get(t["customer_id"], (False, 0))
            assert (t["seq"], t["kind"]) == (seq + 1, "exited" if was_member else "entered")


async def test_right_after_each_edit_redis_postgres_and_the_rules_agree(run: Run) -> None:
    for seen, snap in zip(run.edits, run.after_edit, strict=True):
        assert snap.pending_ops == 0
        for sid, (stored, in_redis, want) in snap.segments.items():
            name = next(n for n, i in run.ws.segments.items() if i == sid)
            assert stored == want, f"after {seen.label}, {name}: PostgreSQL {sorted(stored ^ want)[:5]}"
            assert in_redis == want, f"after {seen.label}, {name}: Redis {sorted(in_redis ^ want)[:5]}"


async def test_after_the_drain_everything_agrees_and_the_edits_reached_the_topic(
    run: Run, pg_dsn: str, redis_url: str
) -> None:
    conn = await pg.connect(pg_dsn)
    redis = Redis.from_url(redis_url)
    try:
        result = await check_consistency(conn, redis, run.ws, run.output, datetime.now(UTC))
    finally:
        await conn.close()
        await redis.aclose()
    applied, produced, failures = run.applied, run.produced, run.failures
    assert applied == produced  # every produced event was applied (none lost, none dead-lettered)
    assert failures == 0, "the worker had failed batches, ticks or sends during the run"
    assert len(result.members[run.segment_id]) > 0
    published = {
        (d["customer_id"], d["seq"], ev["type"].removeprefix("segment."))
        for ev in (orjson.loads(r.value) for r in run.output)
        if (d := ev["data"])["segment_id"] == str(run.segment_id) and d["cause"]["kind"] == "rules_changed"
    }
    committed = {(t["customer_id"], t["seq"], t["kind"]) for seen in run.edits for t in edit_rows(run, seen)}
    assert published == committed
    print(
        f"\nrule edit under load: {run.produced} events, {len(committed)} rules_changed transitions,"
        f" {result.events} CloudEvents, {run.seconds:.1f} s of streaming"
    )
