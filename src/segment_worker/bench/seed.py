"""Loading the benchmark workspace: settings, attributes and segments through the service layer
(the API's code path), then the customers in bulk.

Segments are created first, on the empty workspace; customers follow: each one's state is built
by the worker's own pure code (``parse_event`` → ``apply_event``) and its memberships by the same
compiled predicates the worker evaluates, in worker processes (pure CPU work), then written in
bulk — states with ``stores.postgres.save_states``, memberships and counts with COPY, Redis sets
with grouped SADDs. (Creating 200 segments over existing customers through the API writes every
initial membership as a transition, a Redis op and an outbox row: ten times slower, and history
of no interest here; the rule-change phase measures that path.) Every partition is then marked
ticked at the seed instant, as on a system that has been running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from ..apply import apply_event
from ..config import VersionsFormat
from ..events import parse_event
from ..partitioning import customer_partition
from ..rules.compiled import CompiledRule
from ..rules.model import Catalog, FieldDef
from ..rules.timectx import TimeContext
from ..service import segments as segments_svc
from ..service.attributes import AttributeSpec, put_attributes
from ..service.context import ServiceContext
from ..service.ruleset import compile_json
from ..service.workspaces import field_def, update_workspace
from ..state import CustomerState
from ..stores import OptOutChange
from ..stores import postgres as pg
from ..stores.keys import marker_key, segment_key
from ..stores.pg_customers import grouped_versions
from ..stores.pgtimeouts import set_local_statement_timeout
from ..stores.redis import KeyWrites, apply_writes
from ..stores.redisheal import MARKER_OK
from ..stores.unit import partition_unit
from ..timeutil import utc_ms
from .segments import segment_specs
from .workload import ATTRIBUTES, WorkloadSpec, customer_events

TIMEZONE = "Asia/Muscat"
REGION = "OM"
_CHUNK = 5000

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SeededSegment:
    """A segment of the workload as created."""

    id: UUID
    name: str
    kind: str
    members: int


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What the initial load made and how long each part took."""

    customers: int
    opted_out: int
    segments: tuple[SeededSegment, ...]
    memberships: int
    customers_seconds: float
    segments_seconds: float
    seeded_at: datetime

    def segment(self, kind: str) -> list[SeededSegment]:
        """The segments of one kind, in creation order."""
        return [s for s in self.segments if s.kind == kind]


def declared_attributes() -> dict[str, FieldDef]:
    """The workload's attributes as the engine sees them (name → definition)."""
    return {a["name"]: field_def(a["name"], a["type"], a.get("options")) for a in ATTRIBUTES}


_RULES: list[CompiledRule] = []


def _compile(document: dict[str, Any]) -> None:
    """Worker-process initialiser: compile the workload's rules once."""
    catalog = Catalog.for_workspace(declared_attributes(), timezone=document["timezone"])
    _RULES[:] = [compile_json(s["rules"], catalog) for s in document["segments"]]


def build_chunk(
    spec: WorkloadSpec, workspace_id: str, start: int, stop: int, now: datetime, partitions: int,
) -> tuple[list[CustomerState], list[list[int]]]:
    """States of seeded customers ``start``..``stop - 1`` and, for each, the indexes of the segments
    it belongs to at ``now`` (pure; runs in a worker process after ``_compile``)."""
    attrs = declared_attributes()
    ctx = TimeContext.at(now, TIMEZONE)
    bound = [(r.matches, r.bind(ctx)) for r in _RULES]
    states = []
    members = []
    for i in range(start, stop):
        state: CustomerState | None = None
        for ev in customer_events(spec, workspace_id, i, now):
            parsed = parse_event(orjson.dumps(ev))
            part = customer_partition(workspace_id, parsed.customer_id, partitions)
            res = apply_event(state, parsed, attrs, REGION, part)
            if res.rejected is not None:  # pragma: no cover - the generator makes valid events only
                raise ValueError(f"seed event rejected: {res.rejected}")
            state = res.state
        assert state is not None
        states.append(state)
        members.append([k for k, (matches, b) in enumerate(bound) if matches(state, b)])
    return states, members


_COLUMNS = [f.name for f in dataclasses.fields(CustomerState)]
_VERSIONS = _COLUMNS.index("versions")
_MEMBERSHIP_COLUMNS = ["segment_id", "customer_id", "workspace_id", "partition", "is_member", "seq",
                       "joined_at"]


def _row(state: CustomerState, versions_format: VersionsFormat) -> tuple[Any, ...]:
    """A state as a ``customers`` row (columns are the dataclass fields, in order), ``versions``
    in the format the workers write: the bench's customers start as they would be stored."""
    row = [sorted(v) if isinstance(v, set) else v for v in (getattr(state, c) for c in _COLUMNS)]
    if versions_format == "grouped":
        row[_VERSIONS] = grouped_versions(state.versions)
    return tuple(row)


async def _save(
    ctx: ServiceContext, states: list[CustomerState], members: list[list[int]], segment_ids: list[UUID],
    counts: dict[tuple[int, int], int], now: datetime,
) -> int:
    ws = states[0].workspace_id if states else ""
    joined = utc_ms(now)
    rows = []
    adds: dict[str, KeyWrites] = {}
    for state, segs in zip(states, members, strict=True):
        for k in segs:
            rows.append((segment_ids[k], state.customer_id, ws, state.partition, True, 1, joined))
            adds.setdefault(segment_key(ws, segment_ids[k]), KeyWrites()).add.append(state.customer_id)
            counts[(k, state.partition)] = counts.get((k, state.partition), 0) + 1
    optouts = [OptOutChange(s.workspace_id, s.customer_id, s.partition, True)
               for s in states if s.marketing_opt_out]
    parts = sorted({s.partition for s in states})
    async with partition_unit(ctx.pool, ctx.redis, parts) as u:
        await set_local_statement_timeout(u.conn, 0)  # bulk loads: no statement limit (pgtimeouts)
        # COPY, not save_states (an upsert that also maintains customer_times): the rows are new,
        # and customer_times is rebuilt once at the end with refresh_customer_times.
        fmt = ctx.settings.versions_format
        customers = [_row(s, fmt) for s in states]
        await u.conn.copy_records_to_table("customers", records=customers, columns=_COLUMNS)
        await u.conn.copy_records_to_table(
            "memberships", records=rows,
            columns=_MEMBERSHIP_COLUMNS)
        await pg.write_optout(u.conn, optouts)
    await apply_writes(ctx.redis, adds)
    return len(optouts)


async def _built_chunks(
    spec: WorkloadSpec, workspace_id: str, now: datetime, partitions: int
) -> AsyncIterator[tuple[list[CustomerState], list[list[int]]]]:
    """Chunks of built customers, in order: in worker processes (a few chunks ahead), or here for
    a workload of one chunk (not worth starting processes)."""
    chunks = [(a, min(a + _CHUNK, spec.customers)) for a in range(0, spec.customers, _CHUNK)]
    if len(chunks) == 1:
        _compile(rules_document(spec))
        yield build_chunk(spec, workspace_id, 0, spec.customers, now, partitions)
        return
    loop = asyncio.get_running_loop()
    workers = max(1, min(os.cpu_count() or 1, len(chunks)))
    # "spawn": a fork of this process (event loop, client threads) could inherit held locks.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_compile,
                             initargs=(rules_document(spec),)) as pool:
        pending = [loop.run_in_executor(pool, build_chunk, spec, workspace_id, a, b, now, partitions)
                   for a, b in chunks[: workers + 1]]
        for a, b in chunks[workers + 1:]:
            yield await pending.pop(0)
            pending.append(loop.run_in_executor(pool, build_chunk, spec, workspace_id, a, b, now, partitions))
        for fut in pending:
            yield await fut


async def load_customers(
    ctx: ServiceContext, spec: WorkloadSpec, workspace_id: str, now: datetime, partitions: int,
    segment_ids: list[UUID], progress: Progress | None = None,
) -> int:
    """Build and save every seeded customer with its memberships; answers how many opted out."""
    opted = done = 0
    counts: dict[tuple[int, int], int] = {}
    async for states, members in _built_chunks(spec, workspace_id, now, partitions):
        opted += await _save(ctx, states, members, segment_ids, counts, now)
        done += len(states)
        if progress is not None:
            progress(done, spec.customers)
    async with ctx.pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 0")  # a bulk load (reset on release to the pool)
        await pg.refresh_customer_times(conn, workspace_id)
        await conn.copy_records_to_table(
            "segment_counts", records=[(segment_ids[k], p, n) for (k, p), n in counts.items()],
            columns=["segment_id", "partition", "count"])
    # Every set was written from the rows loaded, as a rebuild writes them: say so. Without the
    # marker the workers' first Redis check (10 s in) rebuilt the workspace, comparing each of its
    # sets under every partition lock, during the throughput measurement (pg_stat_statements:
    # 16.5 s of sw_lock_partitions waits in a 21 s run of 100k events).
    await ctx.redis.set(marker_key(workspace_id), MARKER_OK)
    return opted


async def create_segments(
    ctx: ServiceContext, spec: WorkloadSpec, workspace_id: str, progress: Progress | None = None
) -> list[tuple[UUID, str, str]]:
    """Create the workload's segments through the service layer (``POST /segments``): (id, name, kind)."""
    specs = segment_specs(spec.segments, spec.seed)
    out = []
    for n, s in enumerate(specs, 1):
        seg = await segments_svc.create_segment(ctx, workspace_id, name=s["name"], type="dynamic",
                                                rules=s["rules"])
        out.append((seg.id, seg.name, s["kind"]))
        if progress is not None:
            progress(n, len(specs))
    return out


async def seed_workspace(
    ctx: ServiceContext, spec: WorkloadSpec, workspace_id: str, now: datetime, partitions: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> SeedResult:
    """The whole initial load of ``workspace_id`` into ``ctx``'s (fresh) database."""
    await update_workspace(ctx, workspace_id, timezone=TIMEZONE, default_region=REGION)
    await put_attributes(ctx, workspace_id, [
        AttributeSpec(a["name"], a["type"], tuple(a["options"]) if "options" in a else None)
        for a in ATTRIBUTES
    ])

    def step(name: str) -> Progress | None:
        if progress is None:
            return None
        return lambda done, total: progress(name, done, total)

    t0 = time.perf_counter()
    created = await create_segments(ctx, spec, workspace_id, step("segments"))
    t1 = time.perf_counter()
    opted = await load_customers(ctx, spec, workspace_id, now, partitions, [c[0] for c in created],
                                 step("customers"))
    t2 = time.perf_counter()
    async with ctx.pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 0")  # VACUUM and CHECKPOINT after a 1M load
        await pg.set_ticked_at(conn, list(range(partitions)), now)
        await conn.execute("VACUUM ANALYZE customers")
        await conn.execute("VACUUM ANALYZE memberships")
        rows = await conn.fetch("SELECT segment_id, sum(count)::bigint AS n FROM segment_counts GROUP BY 1")
        await _settle_writes(conn)
    sizes = {r["segment_id"]: r["n"] for r in rows}
    segs = tuple(SeededSegment(sid, name, kind, sizes.get(sid, 0)) for sid, name, kind in created)
    return SeedResult(spec.customers, opted, segs, sum(sizes.values()), t2 - t1, t1 - t0, now)


async def _settle_writes(conn: asyncpg.Connection) -> None:
    """Write the load out before anything is measured: at 1M customers it leaves ~8 GB of dirty
    pages, and the kernel's writeback of them (and the checkpoints it forces) would otherwise land
    in the phases that follow (a rule edit's writing statement, ~3 s at rest, took 24 s right
    after a 1M load). A server that refuses CHECKPOINT (not a superuser) is left to its pace."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)  # a local server's files (harmless for a remote one)


def rules_document(spec: WorkloadSpec) -> dict[str, Any]:
    """The workload's catalogue and rules as JSON (for the faust baseline, another process)."""
    return {"attributes": list(ATTRIBUTES), "timezone": TIMEZONE, "region": REGION,
            "segments": segment_specs(spec.segments, spec.seed)}
