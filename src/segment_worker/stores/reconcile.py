"""``segment-worker reconcile``: compare every Redis set with PostgreSQL, report drift, repair.

Each key is compared while holding every partition lock, so no writer changes it meanwhile; a
repairing run applies pending Redis ops first, so what remains is real drift (a checking run
changes nothing and so reports pending ops as drift too). Writers wait for one key's comparison
at a time, never for the whole run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from . import postgres as pg
from .keys import glob_escape, optout_key, segment_key
from .redis import KeyWrites, _text, apply_writes, read_set, scan_keys
from .redis_client import RedisClient
from .unit import apply_pending_ops, locked_partitions

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^sw:\{(?P<ws>[^{}]*)\}:(?:seg:(?P<seg>.+)|optout)$")


@dataclass(frozen=True, slots=True)
class KeyDrift:
    """How one Redis set differs from PostgreSQL (``missing``: in PostgreSQL only)."""

    key: str
    missing: int
    extra: int
    sample_missing: tuple[str, ...]
    sample_extra: tuple[str, ...]
    # The Redis type found when the key was not a set (written by something else): repairing
    # deletes it and writes the set afresh.
    wrong_type: str | None = None


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The outcome of a reconcile run: keys compared, the ones that differed, whether repaired."""

    keys_checked: int
    drift: tuple[KeyDrift, ...]
    repaired: bool

    @property
    def has_drift(self) -> bool:
        """True when some key differed from PostgreSQL."""
        return bool(self.drift)

    def lines(self) -> list[str]:
        """Human-readable summary, one line per drifting key."""
        verb = "repaired" if self.repaired else "found"
        out = [f"checked {self.keys_checked} keys; drift {verb} in {len(self.drift)}"]
        for d in self.drift:
            missing = f"{d.missing} missing {list(d.sample_missing)}"
            wrong = f" (held a {d.wrong_type}, not a set)" if d.wrong_type else ""
            out.append(f"  {d.key}{wrong}: {missing}, {d.extra} extra {list(d.sample_extra)}")
        return out


async def _expected_members(conn: asyncpg.Connection, key: str) -> set[str]:
    m = _KEY_RE.match(key)
    if m is None:  # pragma: no cover - keys come from our own patterns
        return set()
    seg = m.group("seg")
    if seg is None:
        rows = await conn.fetch(
            "SELECT customer_id FROM customers WHERE workspace_id = $1 AND marketing_opt_out AND NOT deleted",
            m.group("ws"),
        )
    else:
        try:
            segment_id = UUID(seg)
        except ValueError:
            return set()  # not one of ours: a stray key, expected empty
        rows = await conn.fetch(
            "SELECT customer_id FROM memberships WHERE segment_id = $1 AND workspace_id = $2 AND is_member",
            segment_id,
            m.group("ws"),
        )
    return {r[0] for r in rows}


async def _keys_to_check(conn: asyncpg.Connection, redis: RedisClient, ws: str | None) -> list[str]:
    if ws is None:
        segs = await conn.fetch("SELECT workspace_id, id FROM segments")
        workspaces = {
            r[0]
            for r in await conn.fetch(
                "SELECT id FROM workspaces UNION SELECT workspace_id FROM segments"
                " UNION SELECT DISTINCT workspace_id FROM customers WHERE marketing_opt_out"
            )
        }
        pattern_ws = "*"
    else:
        segs = await conn.fetch("SELECT workspace_id, id FROM segments WHERE workspace_id = $1", ws)
        workspaces = {ws}
        pattern_ws = glob_escape(ws)
    keys = {segment_key(r[0], r[1]) for r in segs} | {optout_key(w) for w in workspaces}
    keys |= await scan_keys(redis, f"sw:{{{pattern_ws}}}:seg:*")
    keys |= await scan_keys(redis, f"sw:{{{pattern_ws}}}:optout")
    return sorted(k for k in keys if _KEY_RE.match(k))


async def rebuild_and_diff(
    pool: asyncpg.Pool,
    redis: RedisClient,
    ws: str | None = None,
    *,
    repair: bool,
    partitions: Sequence[int] | None = None,
    sample: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> DriftReport:
    """Compare each segment set and opt-out set (of workspace ``ws``, or of all) with PostgreSQL.

    With ``repair``, missing members are SADDed and extra ones SREMed (chunked); sets of deleted
    segments found in Redis count as all-extra. ``partitions`` are the partitions to lock (default:
    every known one). ``repair=False`` changes nothing in Redis. ``progress(done, total)`` is
    called before the first key and after each one (for a progress bar).
    """
    async with pool.acquire() as conn:
        keys = await _keys_to_check(conn, redis, ws)
        parts = list(partitions) if partitions is not None else await pg.known_partitions(conn)
    drift: list[KeyDrift] = []
    if progress is not None:
        progress(0, len(keys))
    for done, key in enumerate(keys, 1):
        async with locked_partitions(pool, parts) as conn:
            if repair:
                await apply_pending_ops(conn, redis, parts)  # committed writes first; the rest is drift
            expected = await _expected_members(conn, key)
            found = _text(await redis.type(key))
            wrong = found if found not in ("set", "none") else None
            actual = set() if wrong else await read_set(redis, key)
            missing = sorted(expected - actual)
            extra = sorted(actual - expected)
            if missing or extra or wrong:
                drift.append(KeyDrift(
                    key, len(missing), len(extra), tuple(missing[:sample]), tuple(extra[:sample]), wrong
                ))
                if repair:
                    if wrong:
                        log.error("Redis key %s held a %s, not a set; replacing it", key, wrong)
                    await apply_writes(redis, {key: KeyWrites(delete=bool(wrong), add=missing, remove=extra)})
        if progress is not None:
            progress(done, len(keys))
    return DriftReport(keys_checked=len(keys), drift=tuple(drift), repaired=repair)
