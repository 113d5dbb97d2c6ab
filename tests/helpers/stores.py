"""Builders shared by the store tests (no tests here). Unique workspace ids and partition numbers
keep concurrent test runs on the shared PostgreSQL database and Redis server apart."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from segment_worker.state import CustomerState, Transition
from segment_worker.stores import postgres as pg
from segment_worker.stores.unit import OUTBOX_CHANNEL
from segment_worker.text import fold

T0 = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)


def new_ws() -> str:
    """A workspace id no other test uses."""
    return f"ws-{uuid.uuid4().hex[:16]}"


def new_partitions(n: int) -> list[int]:
    """``n`` consecutive partition numbers no other test is likely to use."""
    base = 10_000 + secrets.randbelow(100_000_000) * 10
    return list(range(base, base + n))


def state(ws: str, cid: str, partition: int, *, tags: set[str] | None = None, **kw: object) -> CustomerState:
    """A plain customer with the given tags (folded)."""
    tags = tags or set()
    s = CustomerState(workspace_id=ws, customer_id=cid, partition=partition, tags={fold(t) for t in tags})
    s.tag_labels = {fold(t): t for t in tags}
    s.versions = {f"t:{fold(t)}": (1_700_000_000_000_000, "e-1") for t in tags}
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def full_state(ws: str, cid: str, partition: int) -> CustomerState:
    """A customer with every column set to something non-default."""
    return CustomerState(
        workspace_id=ws,
        customer_id=cid,
        partition=partition,
        deleted=False,
        phone="+971501234567",
        name="Zoë Ünal",
        email="Zoe@Example.com",
        language="ar",
        country="AE",
        platform="whatsapp",
        phone_f="+971501234567",
        name_f=fold("Zoë Ünal"),
        email_f=fold("Zoe@Example.com"),
        language_f="ar",
        country_f=fold("AE"),
        platform_f="whatsapp",
        created_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        last_interaction_at=T0 - timedelta(days=1),
        last_incoming_at=T0 - timedelta(days=2),
        marketing_opt_out=True,
        tags={"vip", "straße"},
        tag_labels={"vip": "VIP", "straße": "Straße"},
        attrs={
            "tier": "Gold",
            "score": 7.5,
            "count": 3,
            "flag": False,
            "birthday": "1992-02-29",
            "seen": "2026-11-22T01:00:00+04:00",
            "colors": ["Red", "blue"],
        },
        attrs_f={
            "tier": "gold",
            "score": 7.5,
            "count": 3,
            "flag": False,
            "birthday": "1992-02-29",
            "seen": "2026-11-22t01:00:00+04:00",
            "colors": ["red", "blue"],
        },
        versions={"f:name": (1_700_000_000_000_001, "e-1"), "t:vip": (1_700_000_000_000_002, "e-2")},
        first_seen_us=1_600_000_000_000_000,
        deleted_us=1_500_000_000_000_000,
        deleted_event_id="e-0",
    )


def transition(
    ws: str,
    seg: UUID,
    cid: str,
    partition: int,
    seq: int,
    kind: str,
    *,
    at: datetime = T0,
    name: str = "VIPs",
) -> Transition:
    """An enter/exit caused by event ``e-<seq>``."""
    return Transition(
        workspace_id=ws,
        segment_id=seg,
        segment_name=name,
        customer_id=cid,
        partition=partition,
        seq=seq,
        kind=kind,
        cause={"kind": "event", "event_id": f"e-{seq}"},
        at=at,
    )


async def redis_applied(conn: asyncpg.Connection, partitions: Sequence[int]) -> None:
    """Mark every pending Redis op of ``partitions`` applied without applying it (what a unit's
    step 5 records after Redis took them): their outbox rows may then be sent."""
    ops = await pg.fetch_redis_ops(conn, partitions)
    await pg.settle_redis_ops(conn, partitions, pg.max_ids(ops), OUTBOX_CHANNEL)
