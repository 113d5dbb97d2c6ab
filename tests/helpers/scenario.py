"""Workspaces, segments and customer events for worker tests, and the checks every run must pass:
Redis sets == ``segment_memberships`` == the Python evaluator over the final states, and the
CloudEvents of each (segment, customer) alternate entered/exited in seq order."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from redis.asyncio import Redis

from segment_worker.apply import exists
from segment_worker.rules.compiled import CompiledRule, compile_rule
from segment_worker.rules.model import Catalog, FieldDef, FieldType
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule
from segment_worker.stores import postgres as pg
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.text import fold

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Workspace:
    """A workspace set up directly in PostgreSQL (as the API would leave it)."""

    id: str
    timezone: str
    catalog: Catalog
    segments: dict[str, UUID] = field(default_factory=dict)  # name → id
    rules: dict[UUID, CompiledRule] = field(default_factory=dict)


async def create_workspace(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    timezone: str = "UTC",
    attributes: Mapping[str, tuple[str, Sequence[str] | None]] | None = None,
    segments: Mapping[str, Any] | None = None,
) -> Workspace:
    """Insert the workspace, its attribute definitions and dynamic segments (rules validated).

    JSON goes in as ``text`` cast to jsonb, so it is stored the same on a plain connection and on
    one with our jsonb codec (which would store pre-encoded text as a JSON string)."""
    attributes = attributes or {}
    await conn.execute("INSERT INTO workspaces (id, timezone) VALUES ($1, $2)", workspace_id, timezone)
    defs: dict[str, FieldDef] = {}
    for name, (ftype, options) in attributes.items():
        await conn.execute(
            "INSERT INTO attribute_defs (workspace_id, name, type, options)"
            " VALUES ($1, $2, $3, $4::text::jsonb)",
            workspace_id,
            name,
            ftype,
            orjson.dumps(list(options)).decode() if options is not None else None,
        )
        defs[name] = FieldDef(f"attributes.{name}", FieldType(ftype), tuple(options) if options else None)
    ws = Workspace(workspace_id, timezone, Catalog.for_workspace(defs, timezone))
    now = datetime.now(UTC)
    for name, doc in (segments or {}).items():
        rule = parse_rule(doc, ws.catalog)
        sid = uuid.uuid4()
        await conn.execute(
            "INSERT INTO segments (id, workspace_id, name, name_folded, type, rules, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, 'dynamic', $5::text::jsonb, $6, $6)",
            sid,
            workspace_id,
            name,
            fold(name),
            orjson.dumps(doc).decode(),
            now,
        )
        ws.segments[name] = sid
        ws.rules[sid] = compile_rule(rule, ws.catalog)
    await conn.execute(
        "UPDATE workspaces SET catalog_version = catalog_version + 1 WHERE id = $1", workspace_id
    )
    return ws


def event(
    ws: str, cid: str, etype: str, data: Mapping[str, Any], at: datetime, event_id: str | None = None
) -> dict[str, Any]:
    """One input event (CONTRACT §2)."""
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "type": etype,
        "workspace_id": ws,
        "customer_id": cid,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "data": dict(data),
    }


def encode(ev: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of an event as a well-behaved producer sends it."""
    return f"{ev['workspace_id']}:{ev['customer_id']}".encode(), orjson.dumps(ev)


# The mixed workload: attributes and segments covering text, number, date, select, multi-select,
# tags, opt-out and a nested any/all.
MIXED_ATTRIBUTES: dict[str, tuple[str, Sequence[str] | None]] = {
    "tier": ("select", ("gold", "silver", "bronze")),
    "score": ("number", None),
    "birthday": ("date", None),
    "interests": ("multi_select", ("sports", "music", "travel", "food")),
}
MIXED_SEGMENTS: dict[str, Any] = {
    "Names with an": {"field": "name", "op": "contains", "value": "an"},
    "High score": {"field": "attributes.score", "op": "gte", "value": 50},
    "Born before 2000": {"field": "attributes.birthday", "op": "before", "value": "2000-01-01"},
    "Gold or silver": {"field": "attributes.tier", "op": "in", "value": ["gold", "silver"]},
    "Sports or music": {"field": "attributes.interests", "op": "contains_any", "value": ["sports", "music"]},
    "VIP": {"field": "tags", "op": "has", "value": "vip"},
    "Reachable tagged": {
        "all": [{"field": "marketing_opt_out", "op": "is_false"}, {"field": "tags", "op": "has_any_tag"}]
    },
    "Nested": {
        "any": [
            {
                "all": [
                    {"field": "tags", "op": "has", "value": "VIP"},
                    {"field": "language", "op": "eq", "value": "ar"},
                ]
            },
            {"field": "attributes.tier", "op": "in", "value": ["gold"]},
            {
                "not": {
                    "any": [
                        {"field": "country", "op": "is_empty"},
                        {"field": "attributes.score", "op": "lt", "value": 10},
                    ]
                }
            },
        ]
    },
}
_NAMES = ["Dana", "Omar", "Lina", "Sam", "Hana", "Joan", "Ivy", "Ray", "Anton", "Mia"]
_TAGS = ["vip", "VIP", "lead", "Lead", "churn-risk", "beta"]


def mixed_events(ws: str, customers: int, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` random events over ``customers`` customers: every type, occurred_at jumbled within a
    few hours (so arrival order is not version order), about 3% exact duplicates, a few deletions."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(count):
        if out and rnd.random() < 0.03:
            out.append(dict(rnd.choice(out)))  # a duplicate delivery: same event_id
            continue
        cid = f"c{rnd.randrange(customers)}"
        at = T0 + timedelta(seconds=rnd.randrange(4 * 3600), microseconds=rnd.randrange(1000) * 1000)
        kind = rnd.random()
        if kind < 0.2:
            data: dict[str, Any] = {
                "name": rnd.choice([*_NAMES, None]),
                "language": rnd.choice(["ar", "en", "fr", None]),
                "country": rnd.choice(["AE", "FR", "US", None]),
            }
            out.append(event(ws, cid, "customer.upserted", data, at))
        elif kind < 0.45:
            attrs: dict[str, Any] = {}
            for _ in range(rnd.randint(1, 3)):
                name = rnd.choice(list(MIXED_ATTRIBUTES))
                attrs[name] = {
                    "tier": lambda: rnd.choice(["gold", "Silver", "bronze", None]),
                    "score": lambda: rnd.choice([rnd.randint(0, 100), rnd.random() * 100, None]),
                    "birthday": lambda: rnd.choice(
                        [f"{rnd.randint(1960, 2010)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}", None]
                    ),
                    "interests": lambda: rnd.sample(["sports", "music", "travel", "food"], rnd.randint(0, 3)),
                }[name]()
            out.append(event(ws, cid, "customer.attributes_set", {"attributes": attrs}, at))
        elif kind < 0.62:
            out.append(
                event(ws, cid, "customer.tags_added", {"tags": rnd.sample(_TAGS, rnd.randint(1, 2))}, at)
            )
        elif kind < 0.75:
            out.append(event(ws, cid, "customer.tags_removed", {"tags": rnd.sample(_TAGS, 1)}, at))
        elif kind < 0.85:
            out.append(event(ws, cid, "customer.opt_out_set", {"marketing_opt_out": rnd.random() < 0.5}, at))
        elif kind < 0.97:
            out.append(
                event(
                    ws, cid, "customer.interaction", {"direction": rnd.choice(["incoming", "outgoing"])}, at
                )
            )
        else:
            out.append(event(ws, cid, "customer.deleted", {}, at))
    return out


async def wait_caught_up(
    conn: asyncpg.Connection,
    group: str,
    topic: str,
    ends: Mapping[int, int],
    *,
    limit_s: float = 60.0,
    workspace_id: str | None = None,
) -> None:
    """Wait until the stored offsets of ``group`` reach ``ends`` and the work of the workspace is
    out: no pending Redis op and no unsent transition of the partitions."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    want = {p: e for p, e in ends.items() if e > 0}
    while True:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
            group,
            topic,
        )
        have = {r["partition"]: r["next_offset"] for r in rows}
        done = all(have.get(p, 0) >= e for p, e in want.items())
        if done:
            pending = await conn.fetchval(
                "SELECT (SELECT count(*) FROM redis_ops WHERE partition = ANY($1::int[]))"
                " + (SELECT count(*) FROM transitions t"
                "    LEFT JOIN outbox_cursors c ON c.partition = t.partition"
                "    WHERE t.id > COALESCE(c.sent_id, 0) AND ($2::text IS NULL OR t.workspace_id = $2))",
                list(ends),
                workspace_id,
            )
            if pending == 0:
                return
        if loop.time() > deadline:
            raise AssertionError(f"not caught up after {limit_s} s: offsets {have} want {want}")
        await asyncio.sleep(0.1)


def expected_members(ws: Workspace, states: Iterable[Any], now: datetime) -> dict[UUID, set[str]]:
    """The Python evaluator applied to the final states."""
    ctx = TimeContext.at(now, ws.timezone)
    out: dict[UUID, set[str]] = {sid: set() for sid in ws.rules}
    for st in states:
        if not exists(st):
            continue
        for sid, rule in ws.rules.items():
            if rule.matches(st, rule.bind(ctx)):
                out[sid].add(st.customer_id)
    return out


async def final_states(conn: asyncpg.Connection, ws: str) -> list[Any]:
    """Every customer row of the workspace, as ``CustomerState``s."""
    ids = [
        r["customer_id"]
        for r in await conn.fetch("SELECT customer_id FROM customers WHERE workspace_id = $1", ws)
    ]
    records = await pg.load_records(conn, [(ws, c) for c in ids])
    return [r.state for r in records.values() if r.state is not None]


@dataclass
class Consistency:
    members: dict[UUID, set[str]]
    events: int  # distinct CloudEvents of the workspace
    duplicates: int  # redelivered copies (same id)


async def check_consistency(
    conn: asyncpg.Connection, redis: Redis, ws: Workspace, output: Sequence[Any], now: datetime
) -> Consistency:
    """Assert Redis == PostgreSQL == evaluator, and the event stream's alternation; answer a summary."""
    states = await final_states(conn, ws.id)
    expected = expected_members(ws, states, now)
    for sid, want in expected.items():
        stored = {
            r["customer_id"]
            for r in await conn.fetch(
                "SELECT customer_id FROM segment_memberships WHERE segment_id = $1", sid
            )
        }
        in_redis = {m.decode() for m in await redis.smembers(segment_key(ws.id, sid))}
        name = next(n for n, i in ws.segments.items() if i == sid)
        assert stored == want, f"{name}: PostgreSQL {sorted(stored ^ want)} differ from the evaluator"
        assert in_redis == want, f"{name}: Redis {sorted(in_redis ^ want)} differ from the evaluator"
        count = await conn.fetchval(
            "SELECT COALESCE(sum(count), 0) FROM segment_counts WHERE segment_id = $1", sid
        )
        assert count == len(want), f"{name}: segment_counts says {count}, members are {len(want)}"
    opted = {s.customer_id for s in states if exists(s) and s.marketing_opt_out}
    assert {m.decode() for m in await redis.smembers(optout_key(ws.id))} == opted
    seen: dict[str, bytes] = {}
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    duplicates = 0
    for rec in output:
        ev = orjson.loads(rec.value)
        data = ev["data"]
        if data.get("workspace_id") != ws.id:
            continue
        if ev["id"] in seen:
            assert seen[ev["id"]] == rec.value, "a redelivered event differs from the first copy"
            duplicates += 1
            continue
        seen[ev["id"]] = rec.value
        assert rec.key == f"{ws.id}:{data['customer_id']}".encode()
        pairs[(data["segment_id"], data["customer_id"])].append(ev)
    for (sid, cid), evs in pairs.items():
        seqs = [e["data"]["seq"] for e in evs]
        assert seqs == list(range(1, len(evs) + 1)), f"{sid}/{cid}: seq {seqs} not 1..n in topic order"
        kinds = [e["type"] for e in evs]
        assert kinds == ["segment.entered", "segment.exited"] * (len(kinds) // 2) + ["segment.entered"] * (
            len(kinds) % 2
        ), f"{sid}/{cid}: {kinds} do not alternate"
        if (kinds[-1] == "segment.entered") != (cid in expected[UUID(sid)]):
            rows = await conn.fetch(
                "SELECT id, partition, seq, kind, cause, at FROM transitions"
                " WHERE segment_id = $1 AND customer_id = $2 ORDER BY id",
                UUID(sid),
                cid,
            )
            raise AssertionError(
                f"{sid}/{cid}: last event disagrees: topic"
                f" {[(e['data']['seq'], e['type'], e['data']['cause']) for e in evs]}"
                f" db {[dict(r) for r in rows]}"
            )
    for sid, want in expected.items():
        for cid in want:
            assert (str(sid), cid) in pairs, f"member {cid} of {sid} never got an entered event"
    return Consistency(expected, len(seen), duplicates)
