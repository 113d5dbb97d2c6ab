"""Campaign audiences (CONTRACT §7): the union of segments minus opted-out customers, copied into
``sw:{<ws>}:aud:<audience_id>`` with a TTL. A snapshot: later segment changes do not touch it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from redis.exceptions import RedisError

from ..errors import StoreUnavailable, ValidationFailed
from ..stores.keys import audience_key, optout_key, segment_key
from .context import ServiceContext


@dataclass(frozen=True, slots=True)
class Audience:
    """A materialised audience: where it is and how many customers it holds."""

    audience_id: UUID
    redis_key: str
    count: int


def _unknown(ids: Sequence[str], reason: str) -> ValidationFailed:
    listed = ", ".join(ids)
    return ValidationFailed(
        f"{reason}: {listed}",
        details=[{"path": "$.segment_ids", "message": f"{reason}: {listed}", "segment_ids": list(ids)}],
    )


async def create_audience(
    ctx: ServiceContext, workspace_id: str, segment_ids: Sequence[str], *, exclude_opted_out: bool = True
) -> Audience:
    """Materialise the deduplicated union of ``segment_ids`` (minus opted-out customers)."""
    if not segment_ids:
        raise ValidationFailed(
            "segment_ids must name at least one segment",
            details=[{"path": "$.segment_ids", "message": "is empty"}],
        )
    wanted: dict[str, UUID | None] = {}
    for raw in segment_ids:
        try:
            wanted[raw] = UUID(raw)
        except ValueError:
            wanted[raw] = None
    rows = await ctx.pool.fetch(
        "SELECT id FROM segments WHERE workspace_id = $1 AND id = ANY($2::uuid[])",
        workspace_id,
        [u for u in wanted.values() if u is not None],
    )
    known = {r["id"] for r in rows}
    unknown = [raw for raw, u in wanted.items() if u not in known]
    if unknown:
        raise _unknown(unknown, "unknown segment id(s)")
    audience_id = uuid.uuid4()
    key = audience_key(workspace_id, audience_id)
    ttl = ctx.settings.audience_ttl_seconds
    sources = [segment_key(workspace_id, u) for u in dict.fromkeys(u for u in wanted.values() if u)]
    try:
        # One MULTI/EXEC: every key shares the workspace's hash slot, so this is legal on a cluster.
        # (redis-py's cluster pipeline refuses its sunionstore/sdiffstore methods whatever the
        # slots; the raw commands go through, and MULTI/EXEC checks they share one slot.)
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.execute_command("SUNIONSTORE", key, *sources)
            if exclude_opted_out:
                pipe.execute_command("SDIFFSTORE", key, key, optout_key(workspace_id))
            pipe.expire(key, ttl)
            pipe.scard(key)
            results = await pipe.execute()
    except (RedisError, OSError) as exc:
        message = f"Redis failed while building the audience: {exc}"
        raise StoreUnavailable(message, context={"key": key}) from exc
    count = int(results[-1])
    await ctx.pool.execute(
        "INSERT INTO audiences (id, workspace_id, segment_ids, exclude_opted_out, count, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        audience_id,
        workspace_id,
        list(known),
        exclude_opted_out,
        count,
        datetime.now(UTC) + timedelta(seconds=ttl),
    )
    return Audience(audience_id, key, count)
