"""What every fault scenario asserts at its end (issue 13, "The fault suite"), against the oracle:

1. PostgreSQL ``segment_memberships`` == the oracle's memberships;
2. Redis == PostgreSQL: every segment set, and the opt-out set (== the oracle's too);
3. the output topic: per (segment, customer), distinct events (by CloudEvent ``id``) have
   ``seq`` 1..n in topic order, alternate entered/exited, end in the stored membership, and n is
   the oracle's number of flips (every expected transition, nothing else); a copy with an ``id``
   seen before is byte-identical to the first;
4. the DLQ holds exactly the bad records (by source position, each copy unchanged unless marked
   ``truncated``), each with a non-empty ``error`` header; no good record is there;
5. every worker process is still alive (checked by the cluster, ``Cluster.assert_all_alive``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from redis.asyncio import Redis

from faults.oracle import Expectation, Position, Produced
from helpers.scenario import Workspace
from segment_worker.stores.keys import optout_key, segment_key
from segment_worker.stores.redis import read_set


def _diff(a: set[str], b: set[str], limit: int = 8) -> str:
    left, right = sorted(a - b), sorted(b - a)
    return f"only left {left[:limit]} ({len(left)}), only right {right[:limit]} ({len(right)})"


async def pg_members(conn: asyncpg.Connection, ws: Workspace) -> dict[UUID, set[str]]:
    """``segment_memberships`` of the workspace's segments."""
    out: dict[UUID, set[str]] = {sid: set() for sid in ws.rules}
    for r in await conn.fetch(
        "SELECT segment_id, customer_id FROM segment_memberships WHERE workspace_id = $1", ws.id
    ):
        out.setdefault(r["segment_id"], set()).add(r["customer_id"])
    return out


async def pg_optout(conn: asyncpg.Connection, ws: Workspace) -> set[str]:
    rows = await conn.fetch(
        "SELECT customer_id FROM customers WHERE workspace_id = $1 AND marketing_opt_out AND NOT deleted",
        ws.id,
    )
    return {r["customer_id"] for r in rows}


async def redis_drift(conn: asyncpg.Connection, redis: Redis, ws: Workspace) -> list[str]:
    """Every Redis set that differs from PostgreSQL (empty: they agree)."""
    drift = []
    for sid, stored in (await pg_members(conn, ws)).items():
        in_redis = await read_set(redis, segment_key(ws.id, sid))
        if in_redis != stored:
            drift.append(f"segment {sid}: Redis vs PostgreSQL: {_diff(in_redis, stored)}")
    optout = await pg_optout(conn, ws)
    in_redis = await read_set(redis, optout_key(ws.id))
    if in_redis != optout:
        drift.append(f"opt-out set: Redis vs PostgreSQL: {_diff(in_redis, optout)}")
    return drift


async def wait_redis_equal(conn: asyncpg.Connection, redis: Redis, ws: Workspace, limit_s: float) -> float:
    """Poll until Redis equals PostgreSQL; answers the seconds it took (fails after ``limit_s``).
    A wrong-type key makes SMEMBERS raise: that counts as drift, not as an error of the test."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    drift: list[str] = []
    while True:
        try:
            drift = await redis_drift(conn, redis, ws)
        except Exception as exc:
            drift = [f"reading Redis failed: {exc!r}"]
        if not drift:
            return loop.time() - start
        if loop.time() - start > limit_s:
            raise AssertionError(f"Redis still differs from PostgreSQL after {limit_s:.0f} s: {drift[:4]}")
        await asyncio.sleep(0.5)


@dataclass
class Verified:
    """What a passing check saw (for the scenario's report line)."""

    members: int
    events: int  # distinct output events of the workspace
    duplicates: int  # redelivered copies (same id)
    dead: int  # distinct dead-lettered positions


def dlq_positions(dlq: Sequence[Any], produced: Sequence[Produced]) -> dict[Position, list[Any]]:
    """DLQ copies by the source position they name (records of other inputs are skipped)."""
    ours = {r.position for r in produced}
    out: dict[Position, list[Any]] = defaultdict(list)
    for rec in dlq:
        h = {k: v for k, v in rec.headers or ()}
        try:
            pos = (int(h["source-partition"]), int(h["source-offset"]))
        except (KeyError, ValueError):
            raise AssertionError(f"a DLQ record without source headers: {h}") from None
        if pos in ours:
            out[pos].append(rec)
    return out


def check_dlq(exp: Expectation, dead: dict[Position, list[Any]], produced: Sequence[Produced]) -> None:
    """The DLQ holds exactly the bad records (uncertain ones may be in it or not)."""
    by_pos = {r.position: r for r in produced}
    missing = sorted(set(exp.bad) - set(dead))
    assert not missing, f"bad records not dead-lettered: {[(p, exp.bad[p]) for p in missing[:8]]}"
    wrong = sorted(set(dead) - set(exp.bad) - exp.uncertain)
    assert not wrong, "good records dead-lettered: " + "; ".join(
        f"{p}: {dict(dead[p][0].headers).get('error', b'')!r}" for p in wrong[:8]
    )
    for pos, copies in dead.items():
        for rec in copies:
            h = dict(rec.headers or ())
            assert h.get("error"), f"DLQ copy of {pos} has no error header"
            if h.get("truncated") != b"true":
                assert rec.value == by_pos[pos].value, f"DLQ copy of {pos} differs from the record"


async def check_exact(
    conn: asyncpg.Connection,
    redis: Redis,
    ws: Workspace,
    exp: Expectation,
    output: Sequence[Any],
    dead: dict[Position, list[Any]],
    produced: Sequence[Produced],
    *,
    seq_base: Mapping[tuple[UUID, str], int] | None = None,
) -> Verified:
    """Assert 1–4 of the module docstring; answers what it saw. ``seq_base``: the output topic
    lost its first transitions (a broker restarted empty), so each pair's events on it start
    after these many (the oracle's count over the input before the loss)."""
    stored = await pg_members(conn, ws)
    names = {sid: name for name, sid in ws.segments.items()}
    for sid, want in exp.members.items():
        got = stored.get(sid, set())
        assert got == want, f"{names[sid]}: PostgreSQL vs oracle: {_diff(got, want)}"
    drift = await redis_drift(conn, redis, ws)
    assert not drift, f"Redis differs from PostgreSQL: {drift}"
    optout = await pg_optout(conn, ws)
    assert optout == exp.optout, f"opt-out: PostgreSQL vs oracle: {_diff(optout, exp.optout)}"
    seen: dict[str, bytes] = {}
    pairs: dict[tuple[UUID, str], list[dict[str, Any]]] = defaultdict(list)
    duplicates = 0
    for rec in output:
        ev = orjson.loads(rec.value)
        data = ev["data"]
        if data.get("workspace_id") != ws.id:
            continue
        if ev["id"] in seen:
            assert seen[ev["id"]] == rec.value, f"event {ev['id']} re-sent with other bytes"
            duplicates += 1
            continue
        seen[ev["id"]] = rec.value
        pairs[(UUID(data["segment_id"]), data["customer_id"])].append(ev)
    for pair in set(pairs) | set(exp.flips):
        evs = pairs.get(pair, [])
        sid, cid = pair
        base = (seq_base or {}).get(pair, 0)
        seqs = [e["data"]["seq"] for e in evs]
        kinds = [e["type"].removeprefix("segment.") for e in evs]
        where = f"{names.get(sid, sid)}/{cid}"
        assert seqs == list(range(base + 1, base + len(evs) + 1)), (
            f"{where}: seq {seqs} not {base + 1}..n in topic order"
        )
        assert all(k == ("entered", "exited")[(base + i) % 2] for i, k in enumerate(kinds)), (
            f"{where}: {kinds}"
        )
        assert base + len(evs) == exp.flips.get(pair, 0), (
            f"{where}: {base} + {len(evs)} transitions on the topic,"
            f" the input makes {exp.flips.get(pair, 0)}:"
            f" topic {[(e['data']['seq'], kinds[i], e['data']['cause']) for i, e in enumerate(evs)]}"
            f" oracle {exp.trace.get(pair, [])}"
        )
        assert ((base + len(evs)) % 2 == 1) == (cid in stored.get(sid, set())), f"{where}: last vs membership"
    check_dlq(exp, dead, produced)
    return Verified(sum(len(m) for m in stored.values()), len(seen), duplicates, len(dead))
