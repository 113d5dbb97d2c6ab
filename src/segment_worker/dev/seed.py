"""Loading the demo workspace of ``segment-worker dev`` through the same paths production uses:
the service layer for settings, attributes, segments and the CSV import; Kafka input events,
processed by the worker, for customers.

Every step can be repeated (a kept ``--data-dir``): attributes are redeclared as they are,
segments that exist by name are kept, events are only produced when the workspace has fewer
customers than asked for, and a re-import of the same CSV adds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from ..config import Settings
from ..kafka import kafka_errors
from ..service import segments as segments_svc
from ..service.attributes import AttributeSpec, put_attributes
from ..service.context import ServiceContext
from ..service.members import ImportResult, import_csv
from ..service.workspaces import update_workspace
from ..text import fold
from . import demo
from .processes import DevError

# Records in flight at once while producing (then we wait for their acknowledgements).
_CHUNK = 1000
# How long the worker may make no progress on the demo events before we give up.
STALL_SECONDS = 120.0

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True, slots=True)
class Produced:
    """Where produced records landed: first and last offset per partition, and how many."""

    first: Mapping[int, int]
    last: Mapping[int, int]
    count: int

    @property
    def span(self) -> int:
        """Offsets from each partition's first record to its last (``count`` unless another
        producer wrote in between)."""
        return sum(self.last[p] - self.first[p] + 1 for p in self.last)


def record_of(event: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """An input event as a Kafka record: key ``"<workspace_id>:<customer_id>"``, JSON value."""
    return f"{event['workspace_id']}:{event['customer_id']}".encode(), orjson.dumps(event)


async def prepare_workspace(ctx: ServiceContext, workspace_id: str = demo.DEMO_WORKSPACE) -> dict[str, UUID]:
    """Timezone, phone region, attributes and the demo's segments (those missing by name);
    answers every demo segment's id by name."""
    await update_workspace(ctx, workspace_id, timezone=demo.DEMO_TIMEZONE, default_region=demo.DEMO_REGION)
    specs = [
        AttributeSpec(a["name"], a["type"], tuple(a["options"]) if "options" in a else None)
        for a in demo.ATTRIBUTES
    ]
    await put_attributes(ctx, workspace_id, specs)
    rows = await ctx.pool.fetch("SELECT name_folded, id FROM segments WHERE workspace_id = $1", workspace_id)
    existing = {r["name_folded"]: r["id"] for r in rows}
    ids: dict[str, UUID] = {}
    wanted: list[dict[str, Any]] = [
        *({**s, "type": "dynamic"} for s in demo.SEGMENTS), {**demo.STATIC_SEGMENT, "type": "static"},
    ]
    for spec in wanted:
        found = existing.get(fold(spec["name"]))
        if found is None:
            seg = await segments_svc.create_segment(
                ctx, workspace_id, name=spec["name"], type=spec["type"],
                description=spec.get("description"), rules=spec.get("rules"),
            )
            found = seg.id
        ids[spec["name"]] = found
    return ids


async def customer_count(pool: asyncpg.Pool, workspace_id: str = demo.DEMO_WORKSPACE) -> int:
    """Customers (not deleted) the workspace has now."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM customers WHERE workspace_id = $1 AND NOT deleted", workspace_id
    )
    return n


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    events: Iterable[Mapping[str, Any]],
    *,
    progress: Progress | None = None,
) -> Produced:
    """Send ``events`` (acks=all) in chunks; answers where they landed. ``progress(sent, total)``
    after each chunk (``events`` a sized collection gives the total)."""
    total = len(events) if isinstance(events, Sized) else 0
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    count = 0

    async def flush(pending: list[asyncio.Future[Any]]) -> None:
        nonlocal count
        with kafka_errors("produce demo events", topic=topic):
            for meta in await asyncio.gather(*pending):
                first[meta.partition] = min(first.get(meta.partition, meta.offset), meta.offset)
                last[meta.partition] = max(last.get(meta.partition, meta.offset), meta.offset)
        count += len(pending)
        pending.clear()
        if progress is not None:
            progress(count, max(total, count))

    pending: list[asyncio.Future[Any]] = []
    for event in events:
        key, value = record_of(event)
        with kafka_errors("produce demo events", topic=topic):
            pending.append(await producer.send(topic, value=value, key=key))
        if len(pending) >= _CHUNK:
            await flush(pending)
    await flush(pending)
    return Produced(first, last, count)


async def stored_positions(pool: asyncpg.Pool, settings: Settings) -> dict[int, int]:
    """The worker's committed next offset per input partition (kept in PostgreSQL)."""
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        settings.consumer_group, settings.topic_events,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def forget_positions(pool: asyncpg.Pool, settings: Settings) -> None:
    """Drop stored positions of the input topic: ``dev``'s broker starts empty (memory only), so
    positions kept from an earlier run point into a log that no longer exists."""
    await pool.execute(
        "DELETE FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        settings.consumer_group, settings.topic_events,
    )


async def wait_processed(
    pool: asyncpg.Pool,
    settings: Settings,
    produced: Produced,
    *,
    progress: Progress | None = None,
    check: Callable[[], None] = lambda: None,
    stall_seconds: float = STALL_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Wait until the worker's stored positions are past every produced record. ``check`` runs
    each round (e.g. raising when the worker died); ``DevError`` after ``stall_seconds`` without
    progress."""
    loop = asyncio.get_running_loop()
    best, since = -1, loop.time()
    while True:
        check()
        positions = await stored_positions(pool, settings)
        done = sum(
            min(max(positions.get(p, 0) - produced.first[p], 0), produced.last[p] - produced.first[p] + 1)
            for p in produced.last
        )
        if progress is not None:
            progress(done, produced.span)
        if done >= produced.span:
            return
        if done > best:
            best, since = done, loop.time()
        elif loop.time() - since > stall_seconds:
            raise DevError(
                f"the worker processed no demo event for {stall_seconds:.0f}s"
                f" ({done} of {produced.span} done)",
                retriable=True, context={"done": done, "total": produced.span},
            )
        await sleep(0.25)


async def import_newsletter(
    ctx: ServiceContext, segment_id: UUID, customers: int, workspace_id: str = demo.DEMO_WORKSPACE
) -> ImportResult:
    """Fill the static segment from the demo CSV (known customers' phones, a few new ones)."""
    data = demo.newsletter_csv(max(5, customers // 5), customers=max(customers, 1)).encode()
    return await import_csv(ctx, workspace_id, segment_id, data)


async def trickle(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    rate: float,
    seed: int,
    customers: int,
    on_sent: Callable[[int], None] | None = None,
) -> None:
    """Produce ``rate`` live events per second until cancelled (a few: Tansu keeps every record
    in memory). ``on_sent(total)`` after each send."""
    sent = 0
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for event in demo.trickle_events(seed=seed, customers=max(customers, 1)):
        key, value = record_of(event)
        with kafka_errors("produce live demo events", topic=topic):
            await producer.send_and_wait(topic, value=value, key=key)
        sent += 1
        if on_sent is not None:
            on_sent(sent)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))
