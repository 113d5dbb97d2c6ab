"""In-process CPU and memory harness of the worker's pure stages, without servers.

The bench workload (seeded customers, 200 segments, the event stream) → raw Kafka values →
``batch.sort_records`` (parse + key check) → ``engine.process`` per batch; and the record form the
cache keeps: customer rows decoded by ``stores.pg_customers.records_from_rows`` from the values the
jsonb codec hands it, measured with tracemalloc. Run ``python -m segment_worker.bench.cpu`` (or
``--profile`` for a cProfile listing); compare two code versions by running it back to back.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from ..engine import SegmentDef, WorkspaceView, build_view, process
from ..partitioning import partition_for
from ..rules.model import Catalog
from ..state import CustomerKey, CustomerRecord, CustomerState, membership_code
from ..stores import pg_customers
from ..stores.postgres import _decode_jsonb, _encode_jsonb
from ..worker.batch import sort_records
from . import seed
from .workload import MIXES, WorkloadSpec, stream_events

WORKSPACE = "cpu-bench"
PARTITIONS = 12
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_JSONB = {name for name, t in pg_customers.COLUMN_TYPES.items() if t == "jsonb"}
_COLUMNS = [f.name for f in fields(CustomerState)]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """The parts of an aiokafka ``ConsumerRecord`` that ``sort_records`` reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = -1


@dataclass(slots=True)
class Fixture:
    """Everything one harness run reuses: seeded states, memberships, views and raw records."""

    states: list[CustomerState]
    members: list[list[int]]
    segment_ids: list[UUID]
    views: dict[str, WorkspaceView]
    raw: list[KafkaRecord]


def build(
    customers: int, events: int, segments: int = 200, seed_value: int = 42, mix: str = "churn"
) -> Fixture:
    """Seed ``customers`` customers and ``events`` stream events of the bench workload (pure)."""
    spec = WorkloadSpec(customers=customers, segments=segments, events=events, seed=seed_value, mix=mix)
    document = seed.rules_document(spec)
    seed._compile(document)
    states, members = seed.build_chunk(spec, WORKSPACE, 0, customers, NOW, PARTITIONS)
    catalog = Catalog.for_workspace(seed.declared_attributes(), timezone=document["timezone"])
    ids = [UUID(int=k + 1) for k in range(len(seed._RULES))]
    defs = [
        SegmentDef(sid, WORKSPACE, s["name"], "dynamic", rule)
        for sid, s, rule in zip(ids, document["segments"], seed._RULES, strict=True)
    ]
    views = {WORKSPACE: build_view(WORKSPACE, catalog, defs, seed.REGION)}
    raw = []
    for n, ev in enumerate(stream_events(spec, WORKSPACE, tag="cpu", start=NOW)):
        key = f"{ev['workspace_id']}:{ev['customer_id']}".encode()
        raw.append(KafkaRecord("in", partition_for(key, PARTITIONS), n, key, orjson.dumps(ev)))
    return Fixture(states, members, ids, views, raw)


def state_rows(fx: Fixture) -> list[tuple[Any, ...]]:
    """Each state as a ``customers`` row in field order, jsonb columns still encoded (``load``
    decodes them, as asyncpg runs the codec while it reads the rows)."""
    rows = []
    for s in fx.states:
        row = []
        for c in _COLUMNS:
            v = getattr(s, c)
            if c in _JSONB:
                v = _encode_jsonb(v)
            elif isinstance(v, set):
                v = sorted(v)
            row.append(v)
        rows.append(tuple(row))
    return rows


def membership_rows(fx: Fixture) -> list[tuple[Any, ...]]:
    """Membership rows (workspace, customer, segment ids, membership codes) of the customers with
    memberships: a new UUID object per segment, as asyncpg decodes them."""
    return [
        (WORKSPACE, s.customer_id, [UUID(bytes=fx.segment_ids[k].bytes) for k in segs],
         [membership_code(True, 1)] * len(segs))
        for s, segs in zip(fx.states, fx.members, strict=True)
        if segs
    ]


def load(fx: Fixture, srows: Sequence[tuple[Any, ...]], mrows: Sequence[tuple[Any, ...]]) -> dict[
    CustomerKey, CustomerRecord
]:
    """The records of every seeded customer, decoded as ``load_records`` does."""
    keys = [(WORKSPACE, s.customer_id) for s in fx.states]
    jsonb = [n for n, c in enumerate(_COLUMNS) if c in _JSONB]
    decoded = []
    for r in srows:
        row = list(r)
        for n in jsonb:
            row[n] = _decode_jsonb(row[n])
        decoded.append(row)
    return pg_customers.records_from_rows(keys, decoded, mrows)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for a in range(0, len(items), size):
        yield items[a : a + size]


def run_once(fx: Fixture, batch: int, records: dict[CustomerKey, CustomerRecord]) -> dict[str, float]:
    """Seconds spent parsing and evaluating the whole stream, in batches of ``batch``."""
    parse = engine = 0.0
    transitions = 0
    for chunk in _batches(fx.raw, batch):
        t0 = time.process_time()
        s = sort_records(chunk, PARTITIONS)
        t1 = time.process_time()
        res = process(s.events, records, fx.views, NOW, partitions=PARTITIONS)
        t2 = time.process_time()
        parse += t1 - t0
        engine += t2 - t1
        transitions += len(res.transitions)
    return {"parse": parse, "engine": engine, "transitions": transitions}


def memory_per_record(
    fx: Fixture, srows: Sequence[tuple[Any, ...]], mrows: Sequence[tuple[Any, ...]]
) -> float:
    """Bytes allocated per loaded (cacheable) customer record, input rows excluded."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    recs = load(fx, srows, mrows)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del recs
    return (after - before) / len(fx.states)


def timed(label: str, fn: Callable[[], Any], reps: int) -> float:
    """Minimum CPU time of ``reps`` calls of ``fn``."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t0)
        del result  # freeing it is not the stage's time
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """Print µs/event per stage (best of ``--reps``) and bytes per cached record."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workload", choices=sorted(MIXES), default="churn", help="the event mix")
    ap.add_argument("--profile", action="store_true", help="cProfile one pass, print the top functions")
    args = ap.parse_args(argv)
    fx = build(args.customers, args.events, mix=args.workload)
    srows, mrows = state_rows(fx), membership_rows(fx)
    n = len(fx.raw)
    # As in the worker, whose collector is paced (worker/gcpacing.py: ~20 young collections in a
    # 100,000-event run) — here every collection would walk the fixture and the records built so
    # far: "load" read 101 µs per customer with them, 32 without (2026-12-05).
    gc.collect()
    gc.freeze()
    gc.disable()
    if args.profile:
        recs = load(fx, srows, mrows)
        prof = cProfile.Profile()
        prof.enable()
        run_once(fx, args.batch, recs)
        load(fx, srows, mrows)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    best: dict[str, float] = {}
    for _ in range(args.reps):
        recs = load(fx, srows, mrows)
        out = run_once(fx, args.batch, recs)
        for k in ("parse", "engine"):
            best[k] = min(best.get(k, float("inf")), out[k])
    load_s = timed("load", lambda: load(fx, srows, mrows), args.reps)
    print(f"events {n}, customers {len(fx.states)}, transitions/pass {int(out['transitions'])}")
    print(f"parse   {best['parse'] / n * 1e6:8.1f} µs/event")
    print(f"engine  {best['engine'] / n * 1e6:8.1f} µs/event")
    print(f"load    {load_s / len(fx.states) * 1e6:8.1f} µs/customer (rows → records)")
    print(f"memory  {memory_per_record(fx, srows, mrows):8.0f} bytes/cached customer")


if __name__ == "__main__":
    main()
